"""The thin Python trainer: buffers, epochs, schedules, stopping, callbacks.

Python runs once per epoch; everything per mini-batch happens inside one call
of the engine's ``train_epoch`` (``network.Network.train_epoch``).
"""
import warnings

import numba
import numpy as np
from sklearn.utils import shuffle as _sk_shuffle

from .codes import ST_DIVERGED, ST_GNORM, ST_LOSS, ST_SAMPLES
from .network import engine_input


class DivergenceError(ValueError, FloatingPointError):
    """Training produced a non-finite loss or gradient; parameters were rolled back."""


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
    if checkpoints is None:
        checkpoints = Checkpoints(keep=1)
    checkpoints.push(theta, opt)
    stats = net.train_epoch(theta, grad, opt, X, Y, sw, order, batch_size, alpha, clip)
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
