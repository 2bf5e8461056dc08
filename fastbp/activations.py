"""Activation functions g and their derivatives g', side by side.

Each g is applied in place to one row of pre-activations ``z`` (turning it into
``a = g(z)``); each g' is expressed through the *output* ``a`` (as
scikit-learn does), so the forward pass need not keep ``z``:

=========== ================================ ==============================
name        g(z)                             g'(z) written with a = g(z)
=========== ================================ ==============================
identity    z                                1
logistic    1 / (1 + exp(-z))                a (1 - a)
tanh        tanh z                           1 - a^2
relu        max(z, 0)                        [a > 0]
leaky_relu  z if z > 0 else 0.01 z           1 if a > 0 else 0.01
softplus    log(1 + exp(z))                  1 - exp(-a)  (= sigmoid(z))
softmax     exp(z_j - max z) / sum(...)      (output layer only, canonical pair)
exp         exp(z)                           a  (output layer only, with poisson)
=========== ================================ ==============================

All forms are overflow free for any finite z (|z| up to 1e308): logistic is
``1 / (1 + e^-z)`` (inf in the denominator gives 0), softplus is
``max(z, 0) + log1p(e^-|z|)``, softmax shifts by the row maximum.  exp, expm1,
tanh, logistic and log1p come from ``vecmath`` (arithmetic only, so the
loops over units vectorise; within 3 ulp of NumPy's), in the row's own
precision: a float32 row takes the float32 forms (``vecmath.*_any``).

The code integers and the name table live in ``codes``; the branch on the
code is taken once per row, outside the loop over units.
"""
import numpy as np

from .codes import (ACTIVATION_CODES, EXP, HIDDEN_ACTIVATIONS, IDENTITY, LEAKY_RELU,
                    LEAKY_SLOPE, LOGISTIC, OUTPUT_ACTIVATIONS, RELU, SOFTMAX, SOFTPLUS, TANH)
from .jit import jit
from .vecmath import exp_any, expm1_any, log1p_any, logistic_any, tanh_any

__all__ = ["ACTIVATION_CODES", "HIDDEN_ACTIVATIONS", "OUTPUT_ACTIVATIONS",
           "activate_row", "derivative_row", "activate", "derivative"]


@jit
def activate_row(a, code):
    """In place ``a_j <- g(a_j)`` for one row ``a`` (n_units,), C-contiguous."""
    m = a.shape[0]
    if code == IDENTITY:
        return
    elif code == LOGISTIC:
        for j in range(m):
            a[j] = logistic_any(a[j])
    elif code == TANH:
        for j in range(m):
            a[j] = tanh_any(a[j])
    elif code == RELU:
        for j in range(m):
            if a[j] < 0:
                a[j] = 0.0
    elif code == LEAKY_RELU:
        for j in range(m):
            if a[j] < 0:
                a[j] = a[j] * LEAKY_SLOPE
    elif code == SOFTPLUS:
        for j in range(m):
            z = a[j]
            # max(z, 0) + log1p(e^-|z|): e^-|z| in (0, 1], nothing overflows; NaN stays NaN
            a[j] = (z if z > 0.0 else 0.0) + log1p_any(exp_any(-abs(z)))
    elif code == SOFTMAX:
        zmax = a[0]
        for j in range(1, m):
            if a[j] > zmax:
                zmax = a[j]
        total = 0.0
        for j in range(m):
            a[j] = exp_any(a[j] - zmax)
            total += a[j]
        inv = 1.0 / total
        for j in range(m):
            a[j] = a[j] * inv
    elif code == EXP:
        for j in range(m):
            a[j] = exp_any(a[j])


@jit
def derivative_row(a, delta, code):
    """In place ``delta_j <- delta_j * g'(z_j)``, g' written through a = g(z).

    ``a`` and ``delta`` are rows (n_units,) of the same layer.  Softmax has no
    element-wise derivative; it is only used in the canonical output pair.
    """
    m = a.shape[0]
    if code == IDENTITY:
        return
    elif code == LOGISTIC:
        for j in range(m):
            delta[j] = delta[j] * (a[j] * (1.0 - a[j]))
    elif code == TANH:
        for j in range(m):
            delta[j] = delta[j] * (1.0 - a[j] * a[j])
    elif code == RELU:
        for j in range(m):
            if a[j] <= 0:
                delta[j] = 0.0
    elif code == LEAKY_RELU:
        for j in range(m):
            if a[j] <= 0:
                delta[j] = delta[j] * LEAKY_SLOPE
    elif code == SOFTPLUS:
        for j in range(m):
            delta[j] = delta[j] * -expm1_any(-a[j])
    elif code == EXP:
        for j in range(m):
            delta[j] = delta[j] * a[j]


# ---- matrix forms (NumPy), used by the BLAS twin -------------------------------

def activate(a, code):
    """In place ``a <- g(a)`` on a (n_samples, n_units) array (NumPy form)."""
    if code == IDENTITY:
        return
    if code == LOGISTIC:
        pos = a >= 0
        e = np.exp(np.where(pos, -a, a))
        np.copyto(a, np.where(pos, 1.0 / (1.0 + e), e / (1.0 + e)))
    elif code == TANH:
        np.tanh(a, out=a)
    elif code == RELU:
        np.maximum(a, 0, out=a)
    elif code == LEAKY_RELU:
        np.copyto(a, np.where(a < 0, a * a.dtype.type(LEAKY_SLOPE), a))
    elif code == SOFTPLUS:
        np.copyto(a, np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a))))
    elif code == SOFTMAX:
        a -= a.max(axis=1, keepdims=True)
        np.exp(a, out=a)
        a /= a.sum(axis=1, keepdims=True)
    elif code == EXP:
        np.exp(a, out=a)
    else:
        raise ValueError(f"unknown activation code {code}")


def derivative(a, delta, code):
    """In place ``delta <- delta * g'(z)`` written through ``a`` (NumPy form)."""
    if code == IDENTITY:
        return
    if code == LOGISTIC:
        delta *= a * (1 - a)
    elif code == TANH:
        delta *= 1 - a * a
    elif code == RELU:
        delta[a <= 0] = 0
    elif code == LEAKY_RELU:
        delta[a <= 0] *= delta.dtype.type(LEAKY_SLOPE)
    elif code == SOFTPLUS:
        delta *= -np.expm1(-a)
    elif code == EXP:
        delta *= a
    else:
        raise ValueError(f"activation code {code} has no element-wise derivative")
