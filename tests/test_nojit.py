"""Tiny-shape checks that CI also runs with NUMBA_DISABLE_JIT=1, so that the kernel
bodies execute as Python and count for coverage (as stumpy's CI does)."""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import fastbp
from fastbp.codes import HIDDEN_ACTIVATIONS

pytestmark = pytest.mark.nojit

PAIRS = [("identity", "squared_error"), ("identity", "huber"), ("logistic", "squared_error"),
         ("logistic", "log_loss"), ("softmax", "log_loss")]


def _problem(rng, out, n=9, sizes=(5, 6, 4, 3)):
    coefs = [rng.standard_normal((a, b)) * 0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    intercepts = [rng.standard_normal(b) * 0.1 for b in sizes[1:]]
    X = rng.standard_normal((n, sizes[0]))
    k = sizes[-1]
    if out == "softmax":
        Y = np.eye(k)[rng.integers(0, k, n)]
    elif out == "logistic":
        Y = (rng.random((n, k)) > 0.5).astype(float)
    else:
        Y = rng.standard_normal((n, k)) * 2
    return coefs, intercepts, X, Y


@pytest.mark.parametrize("act", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("out,loss", PAIRS)
def test_loops_match_blas_tiny(rng, act, out, loss):
    coefs, intercepts, X, Y = _problem(rng, out)
    sw = rng.random(X.shape[0]) + 0.5
    kw = dict(activation=act, out_activation=out, loss=loss, alpha=0.1, sample_weight=sw)
    lo = fastbp.loss_and_gradient(coefs, intercepts, X, Y, backend="loops", **kw)
    bl = fastbp.loss_and_gradient(coefs, intercepts, X, Y, backend="blas", **kw)
    assert lo[0] == pytest.approx(bl[0], rel=1e-12)
    Xs = sp.csr_matrix(X * (rng.random(X.shape) > 0.5))
    lo_s = fastbp.loss_and_gradient(coefs, intercepts, Xs, Y, backend="loops", **kw)
    bl_s = fastbp.loss_and_gradient(coefs, intercepts, Xs.toarray(), Y, backend="blas", **kw)
    for a, b in zip(lo[1] + lo[2] + lo_s[1] + lo_s[2], bl[1] + bl[2] + bl_s[1] + bl_s[2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1.0, np.abs(b).max()))


def test_gradient_check_tiny(rng):
    coefs, intercepts, X, Y = _problem(rng, "softmax", n=5, sizes=(3, 4, 3))
    result = fastbp.check_gradients(coefs, intercepts, X, Y, activation="tanh",
                                    out_activation="softmax", loss="log_loss", alpha=0.2)
    assert result.max_rel_error < 1e-6


@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop", "adagrad"])
def test_estimator_backends_agree_tiny(rng, solver):
    X = rng.standard_normal((23, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    fits = {}
    for backend in ("loops", "blas", "python"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[backend] = fastbp.MLPClassifier((5, 3), solver=solver, batch_size=4, max_iter=3,
                                                 clip_norm=1.0, random_state=0,
                                                 backend=backend).fit(X, y)
    for backend in ("blas", "python"):
        for a, b in zip(fits["loops"].coefs_, fits[backend].coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_sparse_input_matches_dense_tiny(rng):
    X = rng.standard_normal((17, 6)) * (rng.random((17, 6)) > 0.6)
    y = rng.standard_normal(17)
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", batch_size=5, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = fastbp.MLPRegressor(**kw).fit(X, y)
        sparse = fastbp.MLPRegressor(**kw).fit(sp.csr_matrix(X), y)
    for a, b in zip(dense.coefs_, sparse.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dense.predict(X), sparse.predict(sp.csr_matrix(X)), rtol=1e-12)
