"""Low-level API: loss and gradients for given weights and data, and a
finite-difference gradient check users can run on their own configuration."""
import numpy as np
import scipy.sparse as sp

from .codes import HIDDEN_ACTIVATIONS
from .backends import BACKENDS
from .network import Dropout, Network, engine_array, engine_input
from .params import sources_of_weights

__all__ = ["loss_and_gradient", "check_gradients", "GradientCheck"]


def _network(coefs, intercepts, X, Y, activation, out_activation, loss, backend,
             huber_delta, skip_coefs=None):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if not sp.issparse(X):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    X = engine_input(X, dtype)  # dense C-contiguous, or CSR consumed row by row
    Y = np.asarray(Y, dtype=dtype)
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    Y = engine_array(Y)
    if Y.shape[0] != X.n_rows:
        raise ValueError(f"X has {X.n_rows} rows but Y has {Y.shape[0]}")
    sizes = [X[0].shape[1]] + [np.shape(c)[1] for c in coefs]
    n_hidden = len(coefs) - 1
    hidden = [activation] * n_hidden if isinstance(activation, str) else list(activation)
    if len(hidden) != n_hidden:
        raise ValueError(f"{n_hidden} hidden layers need {n_hidden} activations, got {len(hidden)}")
    for a in hidden:
        if a not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"unknown activation {a!r}; expected one of {HIDDEN_ACTIVATIONS}")
    if Y.shape[1] != sizes[-1]:
        raise ValueError(f"Y has {Y.shape[1]} columns but the network has {sizes[-1]} outputs")
    skip_coefs = skip_coefs or {}
    sources = sources_of_weights(coefs, list(skip_coefs))
    net = Network(sizes, hidden, out_activation, loss, dtype, backend, huber_delta,
                  sources=sources)
    theta = net.layout.pack(coefs, intercepts, dtype, skip_coefs)
    return net, theta, X, Y


def _weights(sample_weight, n, dtype):
    if sample_weight is None:
        return np.empty(0, dtype=dtype)
    sw = engine_array(sample_weight, dtype)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {sw.shape}")
    return sw


def _dropout(dropout, dropout_seed, dropout_step, n_hidden):
    """A ``network.Dropout`` for the API's arguments, or None (all rates 0)."""
    if np.ndim(dropout) == 0:
        rates = [float(dropout)] * n_hidden
    else:
        rates = [float(r) for r in dropout]
        if len(rates) != n_hidden:
            raise ValueError(f"dropout has {len(rates)} rates but there are {n_hidden} "
                             "hidden layers; give one rate or one per hidden layer.")
    for r in rates:
        if not 0.0 <= r < 1.0:
            raise ValueError(f"dropout rates must be in [0, 1), got {dropout!r}")
    if not any(rates):
        return None
    return Dropout(rates, dropout_seed, dropout_step)


def loss_and_gradient(coefs, intercepts, X, Y, *, activation="relu",
                      out_activation="identity", loss="squared_error", alpha=0.0,
                      sample_weight=None, huber_delta=1.0, backend="loops", skip_coefs=None,
                      dropout=0.0, dropout_seed=0, dropout_step=0):
    """Objective and its gradient for scikit-learn-shaped weights.

    ``coefs[l]`` is (n_in, n_out), ``intercepts[l]`` (n_out,); X (n, n_features),
    dense or scipy.sparse (CSR rows go straight to the first layer's kernels);
    Y (n, n_outputs) targets (one-hot for softmax).  The objective is
    ``sum_n s_n C_n / sum_n s_n + alpha / 2 * sum ||W||^2 / sum_n s_n`` with C_n
    the per-sample loss summed over outputs (``fastbp.losses``).

    Shortcut connections (an estimator's ``skip_coefs_``): ``skip_coefs`` maps
    (source, layer) to an (n_source, n_layer) array, layers numbered 0 = the
    input, 1..H hidden, H+1 the output; ``coefs[l]`` of shape (0, n_out) means
    layer l+1 does not take layer l as a source.

    Dropout (as an estimator trains with it): ``dropout`` a rate or one per
    hidden layer; the hidden outputs are multiplied by ``m / (1 - rate)`` with
    the masks m that ``dropout_seed`` and ``dropout_step`` pick for each row of
    X (row r of X is sample r; ``kernels_loop.dropout_key``).  The masks do not
    depend on the weights, so the result is a smooth function of them that
    :func:`check_gradients` compares with finite differences.

    Returns ``(loss, coef_grads, intercept_grads)`` in the shapes of the inputs,
    and a fourth item, the gradients of ``skip_coefs`` (a dict with its keys),
    when ``skip_coefs`` is given.
    """
    net, theta, X, Y = _network(coefs, intercepts, X, Y, activation, out_activation, loss,
                                backend, huber_delta, skip_coefs)
    drop = _dropout(dropout, dropout_seed, dropout_step, len(coefs) - 1)
    sw = _weights(sample_weight, X.n_rows, net.dtype)
    data, reg, grad = net.loss_grad(theta, X, Y, sw, float(alpha), dropout=drop)
    out = (data + reg, [g.copy() for g in net.layout.coefs(grad)],
           [b.copy() for b in net.layout.biases(grad)])
    if skip_coefs is not None:
        out += ({k: g.copy() for k, g in net.layout.skip_coefs(grad).items()},)
    return out


class GradientCheck:
    """Result of :func:`check_gradients`."""

    def __init__(self, analytic, numeric):
        self.analytic = analytic
        self.numeric = numeric
        diff = np.abs(analytic - numeric)
        self.max_abs_error = float(diff.max()) if diff.size else 0.0
        scale = max(float(np.abs(numeric).max()) if diff.size else 0.0, 1e-12)
        self.max_rel_error = self.max_abs_error / scale

    def __repr__(self):
        return (f"GradientCheck(max_abs_error={self.max_abs_error:.3g}, "
                f"max_rel_error={self.max_rel_error:.3g}, n_params={self.analytic.size})")


def check_gradients(coefs, intercepts, X, Y, *, activation="relu", out_activation="identity",
                    loss="squared_error", alpha=0.0, sample_weight=None, huber_delta=1.0,
                    backend="loops", eps=1e-6, skip_coefs=None, dropout=0.0, dropout_seed=0,
                    dropout_step=0):
    """Compare the backend's gradient with central finite differences (float64).

    Arguments as :func:`loss_and_gradient` (``skip_coefs`` for shortcut blocks;
    ``dropout``, ``dropout_seed``, ``dropout_step``: the same masks at every
    evaluation).

    Perturbs every parameter by +-eps and returns a :class:`GradientCheck` with
    the flat analytic and numeric gradients and the max absolute and
    (max-norm relative) errors.  Cost: 2 * n_params loss evaluations.
    """
    X = X.astype(np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    coefs = [np.asarray(c, dtype=np.float64) for c in coefs]
    intercepts = [np.asarray(b, dtype=np.float64) for b in intercepts]
    if skip_coefs is not None:
        skip_coefs = {k: np.asarray(v, dtype=np.float64) for k, v in skip_coefs.items()}
    net, theta, X, Y = _network(coefs, intercepts, X, Y, activation, out_activation, loss,
                                backend, huber_delta, skip_coefs)
    drop = _dropout(dropout, dropout_seed, dropout_step, len(coefs) - 1)
    sw = _weights(sample_weight, X.n_rows, np.float64)
    _, _, grad = net.loss_grad(theta, X, Y, sw, float(alpha), dropout=drop)
    analytic = grad.copy()
    numeric = np.empty_like(theta)
    scratch = np.empty_like(theta)
    for k in range(theta.size):
        old = theta[k]
        theta[k] = old + eps
        up = sum(net.loss_grad(theta, X, Y, sw, float(alpha), scratch, dropout=drop)[:2])
        theta[k] = old - eps
        down = sum(net.loss_grad(theta, X, Y, sw, float(alpha), scratch, dropout=drop)[:2])
        theta[k] = old
        numeric[k] = (up - down) / (2 * eps)
    return GradientCheck(analytic, numeric)
