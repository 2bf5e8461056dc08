"""The trainer: THE epoch loop, one compiled epoch, stopping rules, checkpoints,
interrupts, history and callbacks.

Python runs once per epoch; everything per mini-batch happens inside one call
of the engine's ``train_epoch`` (``network.Network.train_epoch``).
:class:`EpochLoop` runs the epochs of every stochastic fit, with a pluggable
step: :class:`LocalEpoch` (one compiled epoch over in-memory data) or the
dask round plus averaging of ``fastbp.dask``.  Knows nothing of scikit-learn.
"""
import sys
import time
import warnings

import numpy as np

from .codes import ST_DATA, ST_DIVERGED, ST_GNORM, ST_LOSS, ST_REG, ST_SAMPLES
from .network import engine_input
from .progress import EpochProgress

__all__ = ["EpochLoop", "LocalEpoch", "FullBatchEpoch", "EpochResult", "DivergenceError", "DivergenceWarning",
           "run_epoch", "sample_order"]


class DivergenceError(ValueError, FloatingPointError):
    """Training produced a non-finite loss or gradient; parameters were rolled back."""


class DivergenceWarning(UserWarning):
    """Training stopped because the loss or a parameter became non-finite."""


class EpochResult:
    """Figures of one epoch, as given to callbacks and kept in ``history_``."""

    __slots__ = ("epoch", "loss", "validation_score", "learning_rate", "seconds",
                 "grad_norms", "validation_loss")

    def __init__(self, epoch, loss, validation_score, learning_rate, seconds, grad_norms,
                 validation_loss=None):
        self.epoch = epoch
        self.loss = loss
        self.validation_score = validation_score
        self.learning_rate = learning_rate
        self.seconds = seconds
        self.grad_norms = grad_norms
        self.validation_loss = validation_loss  # None without validation data

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


def empty_history():
    """The per-epoch lists of ``history_`` (keys as in ``EpochResult``)."""
    return {"loss": [], "validation_score": [], "learning_rate": [], "seconds": [],
            "grad_norms": [], "validation_loss": []}


def complete_history(history):
    """``history`` with every key of ``empty_history`` (a model file or fit from an
    older fastbp lacks the newer keys: their past epochs read None)."""
    n = len(history.get("loss", []))
    for key in empty_history():
        if key not in history:
            history[key] = [None] * n
    return history


def record(history, info):
    """Append one epoch's figures to ``history``."""
    for key in history:
        history[key].append(getattr(info, key))


def verbose_line(info):
    """The verbose line of one epoch (scikit-learn's wording, plus validation and time)."""
    parts = ["Iteration %d, loss = %.8f" % (info.epoch, info.loss)]
    if info.validation_score is not None:
        parts.append("validation score = %.6f" % info.validation_score)
    if info.validation_loss is not None:
        parts.append("validation loss = %.8f" % info.validation_loss)
    parts.append("time = %.3fs" % info.seconds)
    return ", ".join(parts)


def verbose_progress(total):
    """``verbose=True``'s report on stdout: a tqdm bar on a terminal or in Jupyter (when
    tqdm is installed), else one ``verbose_line`` per epoch."""
    return EpochProgress(total, verbose_line, stream=sys.stdout, desc="fit")


def as_list(callbacks):
    """``callbacks`` (None, one callable or several) as a list."""
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    return list(callbacks)


def curve_lengths(model):
    """[(list, length)] for every per-epoch list a warm start appends to."""
    lists = [getattr(model, "loss_curve_", None), getattr(model, "validation_scores_", None),
             getattr(model, "validation_loss_curve_", None)]
    history = getattr(model, "history_", None)
    if isinstance(history, dict):
        lists.extend(history.values())
    return [(x, len(x)) for x in lists if isinstance(x, list)]


def cut_curves(lengths):
    """Cut the lists of ``curve_lengths`` back to those lengths."""
    for x, n in lengths:
        del x[n:]


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
              checkpoints=None, dropout=None):
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
    stats = net.train_epoch(theta, grad, opt, X, Y, sw, order, batch_size, alpha, clip,
                            dropout)
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
    """The next epoch's sample order: scikit-learn's ``shuffle(previous, random_state=rng)``.

    scikit-learn's ``utils.shuffle`` (``resample`` without replacement) shuffles
    ``arange(n)`` with the RandomState and indexes by it; the same draws give
    the same order, so the same ``random_state`` gives scikit-learn's shuffles.
    """
    indices = np.arange(previous.shape[0])
    rng.shuffle(indices)
    return previous[indices].astype(np.int64, copy=False)


def warn_not_converged(max_iter, category):
    warnings.warn(
        "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
        "hasn't converged yet." % max_iter, category)


def warn_interrupted():
    warnings.warn("Training interrupted by user: keeping the weights of the last completed "
                  "epoch (the best ones with early_stopping).")


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


class LocalEpoch:
    """The step of a local fit: one compiled epoch over in-memory data (shuffled first);
    ``dropout`` a ``network.Dropout`` (its step counter advanced) or None."""

    def __init__(self, net, X, Y, sw, batch_size, alpha, clip, shuffle, rng, dropout=None):
        self.net, self.X, self.Y, self.sw = net, engine_input(X, net.dtype), Y, sw
        self.n_rows = self.X.n_rows
        self.batch_size, self.alpha, self.clip = batch_size, alpha, clip
        self.shuffle, self.rng = shuffle, rng
        self.dropout = dropout
        self.order = (np.arange(self.n_rows, dtype=np.int64) if shuffle
                      else np.empty(0, dtype=np.int64))
        self.grad = None

    def __call__(self, theta, opt, checkpoints):
        """Train one epoch; (mean loss, per-layer gradient norms) or DivergenceError."""
        if self.shuffle:
            self.order = sample_order(self.rng, self.order)
        if self.grad is None:
            self.grad = np.empty_like(theta)
        return run_epoch(self.net, theta, self.grad, opt, self.X, self.Y, self.sw,
                         self.order, self.batch_size, self.alpha, self.clip, checkpoints,
                         self.dropout)


class FullBatchEpoch:
    """The step of a full-batch solver (rprop): one compiled call per epoch, the
    full-batch gradient then the optimizer's step (``engine.rprop_epoch``).

    Returns (objective at the epoch's starting weights, per-layer gradient
    norms); a non-finite objective or gradient raises ``DivergenceError`` with
    nothing changed (the engine checks before it steps).
    """

    def __init__(self, net, X, Y, sw, alpha):
        self.net, self.X, self.Y, self.sw = net, engine_input(X, net.dtype), Y, sw
        self.n_rows = self.X.n_rows
        self.alpha = alpha
        self.grad = None

    def __call__(self, theta, opt, checkpoints):
        if self.grad is None:
            self.grad = np.empty_like(theta)
        checkpoints.push(theta, opt)
        stats = self.net.rprop_epoch(theta, self.grad, opt, self.X, self.Y, self.sw,
                                     self.alpha)
        if stats[ST_DIVERGED] or not np.isfinite(theta).all():
            theta[...], snap = checkpoints.items[-1]
            opt.restore(snap)
            checkpoints.items = checkpoints.items[:-1]
            err = DivergenceError(
                "training diverged: the loss or a parameter became non-finite (NaN or inf); "
                "parameters were restored to the last epoch with a finite loss. Try smaller "
                "rprop step bounds, or scaling the inputs (StandardScaler).")
            err.epochs_lost = 1
            raise err
        return float(stats[ST_DATA] + stats[ST_REG]), stats[ST_GNORM:].copy()


class EpochLoop:
    """The epoch loop of every stochastic fit (scikit-learn's, plus fastbp's safety).

    ``fit`` is the fit record (``theta``, ``_optimizer``, ``n_iter_``, ``t_``,
    ``loss_``, ``loss_curve_``, ``validation_scores_``, ``history_`` and the
    stopping attributes), updated as epochs complete.  ``step(theta, opt,
    checkpoints)`` trains one epoch in place and returns (mean loss, per-layer
    gradient norms), or raises ``DivergenceError`` after rolling back
    (``epochs_lost``).  ``validate(theta)`` gives (validation score, validation
    loss) of the validation data, or is None (no validation data).  The loss
    goes to ``fit.validation_loss_curve_``; the score to ``validation_scores_``
    and the stopping rule with ``early_stopping``.

    * Divergence: the epochs undone are removed from the curves, counters and
      stopping state too, so ``n_iter_``, ``loss_curve_`` and the weights always
      agree.  Divergence with no surviving epoch of this call raises.
    * Ctrl-C: the first one ends training after the current epoch
      (``DeferredInterrupt``); a second one, or a ``KeyboardInterrupt`` from a
      callback, stops at once with the last completed epoch's weights.
    """

    def __init__(self, fit, step, *, n_samples, max_iter, tol, n_iter_no_change,
                 early_stopping=False, validate=None, verbose=False, callbacks=None,
                 convergence_warning=UserWarning):
        self.fit, self.step, self.validate = fit, step, validate
        self.n = n_samples
        self.max_iter, self.tol, self.n_iter_no_change = max_iter, tol, n_iter_no_change
        self.early_stopping, self.verbose = early_stopping, verbose
        self.callbacks = as_list(callbacks)
        self.convergence_warning = convergence_warning
        self.best = fit.theta.copy()
        self.stopping = StoppingState(
            tol, early_stopping,
            fit.best_loss_ if fit.best_loss_ is not None else np.inf,
            fit.best_validation_score_ if fit.best_validation_score_ is not None else -np.inf)
        self.stopping.count = fit._no_improvement_count
        self.checkpoints = Checkpoints()
        self.marks = []  # stopping state at each checkpoint, for undoing epochs
        self.report = verbose_progress(max_iter) if verbose else None

    def run(self, incremental=False):
        """Epochs until max_iter or a stop (one with ``incremental``); then the
        stopping attributes (best weights restored with early stopping)."""
        fit = self.fit
        fit.n_iter_ = 0  # scikit-learn counts this call's epochs only (1 for partial_fit)
        start = None  # how to abandon the epoch under way
        with DeferredInterrupt() as interrupt:
            try:
                for _ in range(self.max_iter):
                    t0 = time.perf_counter()
                    start = self._start_epoch()
                    info = self._epoch(t0)
                    start = None
                    if info is None:  # diverged; rolled back
                        break
                    stop = any([bool(cb(info)) for cb in self.callbacks])  # call them all
                    if interrupt.requested:
                        warn_interrupted()
                        break
                    if self.stopping.count > self.n_iter_no_change and self._stalled():
                        break
                    if stop or incremental:
                        break
                    if fit.n_iter_ == self.max_iter:
                        warn_not_converged(self.max_iter, self.convergence_warning)
            except KeyboardInterrupt:
                if start is not None:  # interrupted inside an epoch: as if it never ran
                    self._abandon(start)
                warn_interrupted()
            finally:
                if self.report is not None:
                    self.report.close()
        fit._no_improvement_count = self.stopping.count
        if self.early_stopping:
            fit.best_validation_score_ = self.stopping.best_score
            if fit.validation_scores_:
                fit.theta[...] = self.best
        else:
            fit.best_loss_ = self.stopping.best_loss

    def _epoch(self, t0):
        """Train, record and report one epoch; None when it diverged (rolled back)."""
        fit, opt = self.fit, self.fit._optimizer
        lr = opt.learning_rate
        try:
            loss, gnorms = self.step(fit.theta, opt, self.checkpoints)
        except DivergenceError as exc:
            undone = (exc.epochs_lost or 1) - 1  # recorded epochs the rollback undid
            if undone >= fit.n_iter_:  # nothing of this call survives
                raise
            self._undo(undone)
            # a step may word the warning itself (dask: which partition, what is kept)
            warnings.warn(getattr(exc, "warning", None) or str(exc), DivergenceWarning)
            return None
        fit.n_iter_ += 1
        fit.t_ += self.n
        fit.loss_ = loss
        fit.loss_curve_.append(loss)
        score = val_loss = None
        if self.validate is not None:
            score, val_loss = self.validate(fit.theta)
            fit.validation_loss_curve_.append(val_loss)
            if self.early_stopping:
                fit.validation_scores_.append(score)
        if self.stopping.update(loss, score):
            self.best[...] = fit.theta
        opt.iteration_ends(fit.t_)
        info = EpochResult(fit.n_iter_, loss, score, lr, time.perf_counter() - t0,
                           [float(g) for g in gnorms], val_loss)
        record(fit.history_, info)
        if self.report is not None:
            self.report(info)
        return info

    def _stalled(self):
        """n_iter_no_change epochs without progress: True to stop (else lr was cut)."""
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = ("%s did not improve more than tol=%f for %d consecutive epochs."
               % (what, self.tol, self.n_iter_no_change))
        if self.fit._optimizer.trigger_stopping(msg, self.verbose):
            return True
        self.stopping.count = 0
        return False

    # -- undoing epochs -----------------------------------------------------------
    def _start_epoch(self):
        """Note the stopping state (for undoing) and what abandoning this epoch needs."""
        fit = self.fit
        self.marks = (self.marks + [self._mark()])[-self.checkpoints.keep:]
        newest = self.checkpoints.items[-1] if self.checkpoints.items else None
        return fit.n_iter_, fit.t_, getattr(fit, "loss_", None), curve_lengths(fit), newest

    def _abandon(self, start):
        fit = self.fit
        fit.n_iter_, fit.t_, loss, lengths, newest = start
        cut_curves(lengths)
        if loss is None:
            fit.__dict__.pop("loss_", None)
        else:
            fit.loss_ = loss
        if self.checkpoints.items and self.checkpoints.items[-1] is not newest:
            theta, snap = self.checkpoints.items[-1]  # this epoch's start
            fit.theta[...] = theta
            fit._optimizer.restore(snap)
        self._restore_mark(self.marks[-1])

    def _mark(self):
        s = self.stopping
        best = self.best.copy() if self.validate is not None else None
        return (s.count, s.best_loss, s.best_score, best)

    def _undo(self, k):
        """Forget the last k recorded epochs (their weights were rolled back)."""
        if k <= 0:
            return
        fit = self.fit
        fit.n_iter_ -= k
        fit.t_ -= k * self.n
        lists = [fit.loss_curve_] + list(fit.history_.values())
        if self.validate is not None:
            lists.append(fit.validation_loss_curve_)
            if self.early_stopping:
                lists.append(fit.validation_scores_)
        for x in lists:
            del x[len(x) - k:]
        fit.loss_ = fit.loss_curve_[-1]
        self._restore_mark(self.marks[-1 - k])

    def _restore_mark(self, mark):
        count, best_loss, best_score, best = mark
        self.stopping.count = count
        self.stopping.best_loss, self.stopping.best_score = best_loss, best_score
        if best is not None:
            self.best[...] = best
