"""Losses C, each beside its output-layer delta.

Per sample n (row), with a = output activations, y = targets, r = a - y:

============== ========================================= ==========================
loss           C_n                                       dC_n/da_k
============== ========================================= ==========================
squared_error  1/2 sum_k r_k^2                           r_k
huber(d)       sum_k (r^2/2 if |r|<=d else d(|r|-d/2))   clip(r_k, -d, d)
log_loss       -sum_k y log p + (1-y) log(1-p)  (logistic output, binary/multilabel)
               -sum_k y_k log p_k                (softmax output, multiclass)
poisson        sum_k y log(y/a) - y + a                  1 - y_k / a_k
               (half the Poisson deviance; y log(y/a) = 0 where y = 0; exp output)
============== ========================================= ==========================

Probabilities are clipped to [eps, 1 - eps] (eps of the dtype) inside the log,
as scikit-learn does.

Output delta.  For the canonical pairs (identity + squared_error, logistic +
log_loss, softmax + log_loss, exp + poisson) dC/dz_k collapses to ``a_k - y_k``
(for poisson: (1 - y/a) * a, as scikit-learn >= 1.7 has it); that shortcut
is used (it is exact, and stable where p saturates).  Any other pair uses the
general form ``delta_k = dC/da_k * g'(z_k)``.  Softmax is only allowed with
log_loss.  Each delta row is multiplied by the sample weight s_n.

Reported loss.  scikit-learn *reports* squared error averaged over the outputs
(``0.5 * mean_k``) while its gradient is that of the sum over outputs.  The
engine differentiates the sum; with ``mean_outputs`` set the value it returns
is divided by the number of outputs, matching scikit-learn's ``loss_``.
"""
import numpy as np

from .codes import (EXP, HUBER, IDENTITY, LOGISTIC, LOG_LOSS, LOSS_CODES, POISSON, SOFTMAX,
                    SQUARED_ERROR)
from .jit import jit
from .activations import derivative, derivative_row

__all__ = ["LOSS_CODES", "is_canonical", "loss_delta_row", "loss_delta"]


def is_canonical(loss, act):
    """True where delta = a - y is the exact output delta."""
    return ((loss == SQUARED_ERROR and act == IDENTITY)
            or (loss == LOG_LOSS and (act == LOGISTIC or act == SOFTMAX))
            or (loss == POISSON and act == EXP))


def check_pair(loss, act):
    """Raise ValueError for an output activation that the loss cannot use."""
    if act == SOFTMAX and loss != LOG_LOSS:
        raise ValueError("softmax output requires loss='log_loss'")
    if loss == LOG_LOSS and act not in (LOGISTIC, SOFTMAX):
        raise ValueError("log_loss requires a logistic or softmax output")
    if (loss == POISSON) != (act == EXP):
        raise ValueError("loss='poisson' and the exp output activation go together")


@jit(inline="always")
def loss_delta_row(a, y, s, loss, act, huber, eps, mean_outputs, delta):
    """Loss of one sample and its output delta.

    a, y, delta: rows (n_outputs,).  s: sample weight.  Writes (overwrites)
    ``delta_k = s * dC/dz_k`` and returns ``s * C_n`` (divided by n_outputs
    when ``mean_outputs``).  Inlined into ``output_delta``'s row loop: a call per
    row cost more than the work on one-output rows (W3's batch of 32: 1.27 against
    0.59 us per call of output_delta).
    """
    k = a.shape[0]
    total = 0.0
    if loss == SQUARED_ERROR:
        for j in range(k):
            r = a[j] - y[j]
            total += 0.5 * r * r
            delta[j] = r
    elif loss == HUBER:
        for j in range(k):
            r = a[j] - y[j]
            if r > huber:
                total += huber * (r - 0.5 * huber)
                delta[j] = huber
            elif r < -huber:
                total += huber * (-r - 0.5 * huber)
                delta[j] = -huber
            else:
                total += 0.5 * r * r
                delta[j] = r
    elif loss == POISSON:  # exp output: a > 0
        for j in range(k):
            yj = y[j]
            if yj > 0:
                total += yj * np.log(yj / a[j])
            total += a[j] - yj
            delta[j] = a[j] - yj
    else:  # LOG_LOSS
        for j in range(k):
            p = a[j]
            if p < eps:
                p = eps
            elif p > 1.0 - eps:
                p = 1.0 - eps
            yj = y[j]
            if yj != 0:
                total -= yj * np.log(p)
            if act == LOGISTIC and yj != 1:
                total -= (1.0 - yj) * np.log1p(-p)
            delta[j] = a[j] - yj
    if not ((loss == SQUARED_ERROR and act == IDENTITY) or loss == LOG_LOSS
            or loss == POISSON):
        derivative_row(a, delta, act)
    if s != 1.0:
        for j in range(k):
            delta[j] = delta[j] * s
    if mean_outputs:
        total /= k
    return s * total


def loss_delta(a, y, sw, loss, act, huber, eps, mean_outputs, delta):
    """Matrix form of :func:`loss_delta_row` over a batch; returns sum_n s_n C_n.

    a, y, delta: (n_samples, n_outputs); sw: (n_samples,) or empty for ones.
    """
    np.subtract(a, y, out=delta)
    if loss == SQUARED_ERROR:
        per = 0.5 * np.einsum("nk,nk->n", delta, delta, dtype=np.float64)
    elif loss == HUBER:
        ab = np.abs(delta)
        per = np.where(ab <= huber, 0.5 * delta * delta,
                       huber * (ab - 0.5 * huber)).sum(axis=1, dtype=np.float64)
        np.clip(delta, -huber, huber, out=delta)
    elif loss == POISSON:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(y > 0, y * np.log(y / a), 0.0)
        per = (t + a - y).sum(axis=1, dtype=np.float64)
    else:
        p = np.clip(a, eps, 1 - eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(y != 0, y * np.log(p), 0.0)
            if act == LOGISTIC:
                t = t + np.where(y != 1, (1 - y) * np.log1p(-p), 0.0)
        per = -t.sum(axis=1, dtype=np.float64)
    if not is_canonical(loss, act):
        derivative(a, delta, act)
    if sw.shape[0]:
        delta *= sw[:, None]
        per = per * sw
    total = float(per.sum())
    if mean_outputs:
        total /= a.shape[1]
    return total
