"""What the test modules share: tolerances per dtype, closeness checks, targets, subprocesses.

Tolerances are normwise: ``max|got - ref| <= tol * max(max|ref|, terms, tiny)``
with ``tol`` from ``TOL`` by the dtype of the result (1e-12 for float64, 1e-5
for float32) unless a test states its own.  ``terms`` is the size of the
summands behind ``ref`` where a sum may cancel (rounding errors are
proportional to it, not to the sum).
"""
import os
import subprocess
import sys
import warnings

import numpy as np

TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def tol_for(dtype):
    """The normwise tolerance for results computed in ``dtype``."""
    return TOL[np.dtype(dtype)]


def assert_close(got, ref, tol=None, what="", terms=0.0):
    """``max|got - ref| <= tol * max(max|ref|, max terms, tiny)``; got finite, shapes equal.

    ``tol`` defaults to the tolerance of got's dtype (float64's for Python numbers).
    """
    if tol is None:
        tol = TOL.get(np.asarray(got).dtype, TOL[np.dtype(np.float64)])
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    scale = max(float(np.abs(ref).max(initial=0.0)), float(np.max(terms)),
                np.finfo(np.float64).tiny)
    err = float(np.abs(got - ref).max(initial=0.0))
    assert err <= tol * scale, f"{what}: max abs err {err:.3g} > {tol:g} * {scale:.3g}"


def params_of(model):
    """A fitted model's ``coefs_`` then ``intercepts_``, as arrays."""
    return [np.asarray(a) for a in model.coefs_ + model.intercepts_]


def assert_same_params(got, ref, tol=0.0, what="parameters"):
    """Two fitted models have the same weights: bitwise (``tol=0``) or normwise per array.

    Normwise at the scale of the array, but at least 1 (the size of the
    starting weights): intercepts that stay near 0 are not held to 1e-12 of
    their own size.
    """
    a, b = params_of(got), params_of(ref)
    assert len(a) == len(b), f"{what}: {len(a)} arrays != {len(b)}"
    for k, (p, q) in enumerate(zip(a, b)):
        assert p.shape == q.shape and p.dtype == q.dtype, f"{what}[{k}]"
        if tol == 0.0:
            assert p.tobytes() == q.tobytes(), f"{what}[{k}] differ"
        else:
            assert_close(p, q, tol, f"{what}[{k}]", terms=1.0)


def fit_quietly(model, X, y, **fit_params):
    """``model.fit(X, y)`` with every warning silenced (convergence, clipped batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y, **fit_params)


def targets(rng, loss, output, n, k, dtype=np.float64, scale=1.5):
    """Targets a (loss, output activation) pair accepts: one-hot rows for softmax,
    0/1 labels for log_loss, values in [0, 1) for a logistic output, else
    normal values times ``scale``.  (n, k), C-contiguous."""
    if output == "softmax":
        Y = np.eye(k)[rng.integers(0, k, n)]
    elif loss == "log_loss":
        Y = (rng.random((n, k)) < 0.5).astype(float)
    elif output == "logistic":
        Y = rng.random((n, k))
    elif loss == "poisson":  # counts, zeros included
        Y = rng.poisson(scale, (n, k)).astype(float)
    else:
        Y = rng.standard_normal((n, k)) * scale
    return np.ascontiguousarray(Y, dtype=dtype)


def run_python(args, *, cwd=None, env=None, timeout=300):
    """``python *args`` in a fresh process (stdin closed, output captured as text).

    ``args`` is a list of arguments, or a string: the code for ``-c``.
    """
    if isinstance(args, str):
        args = ["-c", args]
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env if env is not None else
                          dict(os.environ), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
