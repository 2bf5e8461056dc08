"""The thin Python trainer: buffers, epochs, schedules, stopping, callbacks.

Python runs once per epoch; everything per mini-batch happens inside one call
of the engine's ``train_epoch``.  Knows nothing of scikit-learn.
"""
import warnings

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.utils import shuffle as _sk_shuffle

from .codes import (ACTIVATION_CODES, HP_ALPHA, HP_CLIP, HP_HUBER, HP_PROB_EPS, HP_SIZE,
                    IP_LOSS, IP_MEAN_OUT, IP_PAR_MIN, LOSS_CODES, SOFTMAX, ST_DATA,
                    ST_DIVERGED, ST_GNORM, ST_LOSS, ST_REG, ST_SAMPLES, ST_SWSUM)
from .backends import get_engine
from .losses import check_pair
from .params import Layout

PREDICT_CHUNK = 1024


class DivergenceError(ValueError, FloatingPointError):
    """Training produced a non-finite loss or gradient; parameters were rolled back."""


class EngineInput(tuple):
    """(X, Xs) as the engine takes them: dense rows, or CSR triplet with an empty X."""

    __slots__ = ()

    @property
    def n_rows(self):
        indptr = self[1][2]
        return indptr.shape[0] - 1 if indptr.shape[0] else self[0].shape[0]


def engine_input(X, dtype):
    """Dense C-contiguous X (no copy when it already is) or a CSR matrix, for the engine.

    Sparse input keeps its CSR arrays (indices as int64, sorted); it is never densified.
    """
    if isinstance(X, EngineInput):
        return X
    dtype = np.dtype(dtype)
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype)
        if not X.has_sorted_indices:
            X = X.sorted_indices()
        Xs = (np.ascontiguousarray(X.data, dtype=dtype),
              np.ascontiguousarray(X.indices, dtype=np.int64),
              np.ascontiguousarray(X.indptr, dtype=np.int64))
        return EngineInput((np.empty((0, X.shape[1]), dtype=dtype), Xs))
    empty = np.empty(0, dtype=np.int64)
    return EngineInput((np.ascontiguousarray(X, dtype=dtype),
                        (np.empty(0, dtype=dtype), empty, empty)))


class Network:
    """A network's architecture bound to a backend and dtype.

    ``sizes`` = [n_features, hidden..., n_outputs]; ``hidden`` = activation names
    per hidden layer; ``output`` = output activation name; ``loss`` = loss name.
    """

    def __init__(self, sizes, hidden, output, loss, dtype, backend="loops", huber_delta=1.0,
                 mean_outputs=False):
        codes = [ACTIVATION_CODES[a] for a in hidden] + [ACTIVATION_CODES[output]]
        if SOFTMAX in codes[:-1]:
            raise ValueError("softmax is only available as the output activation")
        self.loss_code = LOSS_CODES[loss]
        check_pair(self.loss_code, codes[-1])
        self.layout = Layout(sizes, codes)
        self.dtype = np.dtype(dtype)
        self.engine = get_engine(backend)
        self.hp = np.zeros(HP_SIZE)
        self.hp[HP_HUBER] = huber_delta
        self.hp[HP_PROB_EPS] = np.finfo(self.dtype).eps
        self.mean_outputs = bool(mean_outputs)
        self._work = {}

    def buffers(self, cap):
        """(work, table, ip) for batches of ``cap`` rows, made once per cap."""
        if cap not in self._work:
            work, table, ip = self.layout.workspace(cap, self.dtype)
            ip[IP_PAR_MIN] = self.engine.par_min
            ip[IP_LOSS] = self.loss_code
            ip[IP_MEAN_OUT] = int(self.mean_outputs)
            self._work = {cap: (work, table, ip)}  # keep one: bounded memory
        return self._work[cap]

    def loss_grad(self, theta, X, Y, sw, alpha, grad=None, chunk=PREDICT_CHUNK):
        """(data term, L2 term, flat gradient) of the objective at ``theta``."""
        if grad is None:
            grad = np.empty_like(theta)
        X = engine_input(X, self.dtype)
        work, table, ip = self.buffers(min(chunk, max(1, X.n_rows)))
        self.hp[HP_ALPHA] = alpha
        stats = self.layout.stats()
        self.engine.loss_grad(X[0], X[1], Y, sw, theta, grad, table, work, self.hp, ip, stats)
        return stats[ST_DATA], stats[ST_REG], grad

    def predict(self, theta, X, chunk=PREDICT_CHUNK):
        """Output activations (n, n_outputs) for X."""
        X = engine_input(X, self.dtype)
        n = X.n_rows
        out = np.empty((n, self.layout.sizes[-1]), dtype=self.dtype)
        if n:
            work, table, ip = self.buffers(min(chunk, n))
            self.engine.predict(X[0], X[1], theta, table, work, ip, out)
        return out


class EpochResult:
    """Figures of one epoch, as given to callbacks and kept in ``history_``."""

    __slots__ = ("epoch", "loss", "validation_score", "learning_rate", "seconds",
                 "grad_norms")

    def __init__(self, epoch, loss, validation_score, learning_rate, seconds, grad_norms):
        self.epoch = epoch
        self.loss = loss
        self.validation_score = validation_score
        self.learning_rate = learning_rate
        self.seconds = seconds
        self.grad_norms = grad_norms

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class Checkpoints:
    """Parameters and optimizer state at the start of the last ``keep`` epochs."""

    def __init__(self, keep=3):
        self.keep = keep
        self.items = []

    def push(self, theta, opt):
        self.items = (self.items + [(theta.copy(), opt.snapshot())])[-self.keep:]


def _finite_objective(net, theta, X, Y, sw, alpha):
    data, reg, _ = net.loss_grad(theta, X, Y, sw, alpha)
    return bool(np.isfinite(data + reg))


def run_epoch(net, theta, grad, opt, X, Y, sw, order, batch_size, alpha, clip,
              checkpoints=None):
    """One compiled epoch; returns (mean loss, per-layer mean gradient norms).

    On divergence (a non-finite batch loss, gradient or parameter) the
    parameters and optimizer state are rolled back and ``DivergenceError`` is
    raised.  They go back to the start of this epoch if the training loss is
    finite there, else to the newest earlier checkpoint where it is
    (``error.epochs_lost`` = how many epochs were undone, counting this one;
    None when no checkpoint had a finite loss: then the start of this epoch).
    """
    X = engine_input(X, net.dtype)
    work, table, ip = net.buffers(batch_size)
    hp = net.hp
    hp[HP_ALPHA] = alpha
    hp[HP_CLIP] = clip
    opt.fill(hp, ip)
    stats = net.layout.stats()
    if checkpoints is None:
        checkpoints = Checkpoints(keep=1)
    checkpoints.push(theta, opt)
    net.engine.train_epoch(X[0], X[1], Y, sw, order, theta, grad, opt.m1, opt.m2, table,
                           work, hp, ip, stats)
    opt.read_back(ip)
    if stats[ST_DIVERGED] or not np.isfinite(theta).all():
        lost = None
        for k, (saved, snap) in enumerate(reversed(checkpoints.items)):
            theta[...] = saved
            opt.restore(snap)
            if _finite_objective(net, theta, X, Y, sw, alpha):
                lost = k + 1
                break
        if lost is None:
            theta[...], snap = checkpoints.items[-1]
            opt.restore(snap)
        checkpoints.items = checkpoints.items[:len(checkpoints.items) - (lost or 1)]
        err = DivergenceError(
            "training diverged: the loss or a parameter became non-finite (NaN or inf); "
            "parameters were restored to the last epoch with a finite loss. Try a lower "
            "learning_rate_init, gradient clipping (clip_norm=...), or scaling the inputs "
            "(StandardScaler).")
        err.epochs_lost = lost
        raise err
    n_batches = max(1, int(np.ceil(X.n_rows / batch_size)))
    loss = stats[ST_LOSS] / max(stats[ST_SAMPLES], 1)
    return loss, stats[ST_GNORM:] / n_batches


def with_threads(n_jobs, func, *args, **kwargs):
    """Run ``func`` with the kernels limited to ``n_jobs`` threads (None = all)."""
    if n_jobs is None:
        return func(*args, **kwargs)
    n = int(n_jobs)
    if n < 0:
        n = max(1, numba.config.NUMBA_NUM_THREADS + 1 + n)
    n = min(max(n, 1), numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return func(*args, **kwargs)
    finally:
        numba.set_num_threads(previous)


class StoppingState:
    """scikit-learn's no-improvement bookkeeping (``_update_no_improvement_count``)."""

    def __init__(self, tol, early_stopping, best_loss=np.inf, best_score=-np.inf):
        self.tol = tol
        self.early_stopping = early_stopping
        self.count = 0
        self.best_loss = best_loss
        self.best_score = best_score

    def update(self, loss, score):
        """Record an epoch; returns True when these are the best weights so far."""
        if self.early_stopping:
            self.count = self.count + 1 if score < self.best_score + self.tol else 0
            if score > self.best_score:
                self.best_score = score
                return True
            return False
        self.count = self.count + 1 if loss > self.best_loss - self.tol else 0
        if loss < self.best_loss:
            self.best_loss = loss
        return False


def sample_order(rng, previous):
    """The next epoch's sample order (scikit-learn's shuffle of the previous one)."""
    return _sk_shuffle(previous, random_state=rng).astype(np.int64, copy=False)


def warn_not_converged(max_iter, category):
    warnings.warn(
        "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
        "hasn't converged yet." % max_iter, category)


class DeferredInterrupt:
    """Context manager: the first Ctrl-C (SIGINT) during training is noted, not raised.

    The epoch loop checks ``requested`` after each completed epoch and stops
    there, so parameters, ``n_iter_`` and ``loss_curve_`` stay consistent.  A
    second Ctrl-C raises ``KeyboardInterrupt`` at once.  Outside the main thread
    (where signal handlers cannot be set) it does nothing.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):
                self._previous = None
        return self

    def __exit__(self, *exc):
        import signal
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
