"""Gradients: central finite differences, the per-sample reference and the backends.

Through the public low-level API (``fastbp.api.loss_and_gradient`` and
``check_gradients``) on tiny float64 networks: every hidden activation, every
valid (loss, output) pair, with and without sample weights and L2, 1 to 4 hidden
layers (scikit-learn's ``test_gradient``).  The analytic gradient must match

* central differences on the flat parameter vector (``check_gradients``),
* our own per-sample backprop (``tests/reference.py``), to 1e-12 normwise,
* every other backend ('loops', 'loops-serial', 'blas', 'python'), to 1e-12,
* and, given as CSR, the dense input's loss and gradient.

Finite differences are unreliable at kinks (relu at z = 0, huber at |r| = delta),
so the problems are drawn with every hidden pre-activation and every huber
residual at least ``KINK_MARGIN`` away from a kink (a kink closer than the
step would make the difference quotient a mix of two slopes).
"""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from fastbp.codes import HIDDEN_ACTIVATIONS
from fastbp.api import check_gradients, loss_and_gradient
from fastbp.backends import BACKENDS
from helpers import assert_close, targets

# Tiny shapes: CI also runs this module with NUMBA_DISABLE_JIT=1 (kernel bodies as Python).
pytestmark = pytest.mark.nojit

HUBER_DELTA = 0.5
KINK_MARGIN = 1e-4
FD_TOL = 1e-7          # central differences with step 1e-6: error ~1e-10 relative

# (loss, output activation, kind of targets)
PAIRS = [
    ("squared_error", "identity", "real"),
    ("huber", "identity", "real"),
    ("squared_error", "logistic", "unit"),
    ("huber", "logistic", "unit"),
    ("log_loss", "logistic", "binary"),
    ("log_loss", "logistic", "multilabel"),
    ("log_loss", "softmax", "onehot"),
    ("poisson", "exp", "counts"),
]
PAIR_IDS = [f"{l}+{o}-{t}" for l, o, t in PAIRS]
VARIANTS = {"plain": (False, 0.0), "weights": (True, 0.0), "alpha": (False, 0.3),
            "weights+alpha": (True, 0.3)}


def flat(coef_grads, intercept_grads):
    """The flat parameter order of ``params.Layout``: per layer w = coef.T, then b."""
    return np.concatenate([np.concatenate([np.asarray(c).T.ravel(), np.asarray(b)])
                           for c, b in zip(coef_grads, intercept_grads)])


def make_targets(rng, pair, n, n_out):
    """Targets for ``pair``; the 'binary' kind is 1-D (one output)."""
    loss, out_act, kind = pair
    Y = targets(rng, loss, out_act, n, n_out)
    return Y.ravel() if kind == "binary" else Y


def far_from_kinks(coefs, intercepts, X, Y, activation, out_act, loss):
    z = reference.pre_activations(coefs, intercepts, X, activation, "identity")
    n_out = np.shape(coefs[-1])[1]
    hidden_z = z.reshape(X.shape[0], -1)[:, :-n_out]
    if np.abs(hidden_z).min(initial=np.inf) < KINK_MARGIN:
        return False
    if loss == "huber":
        r = reference.outputs(coefs, intercepts, X, activation, out_act) - Y.reshape(len(X), -1)
        if np.abs(np.abs(r) - HUBER_DELTA).min() < KINK_MARGIN:
            return False
    return True


def make_problem(rng, n_in, hidden_sizes, pair, weighted, n=6, activation="tanh"):
    """Random weights and data for a tiny net, away from kinks.

    Returns (coefs, intercepts, X, Y, sample_weight) in scikit-learn shapes.
    """
    loss, out_act, kind = pair
    n_out = {"binary": 1, "onehot": 3}.get(kind, 2)
    sizes = [n_in, *hidden_sizes, n_out]
    for _ in range(50):
        coefs = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
        intercepts = [rng.standard_normal(b) * 0.5 for b in sizes[1:]]
        X = rng.standard_normal((n, n_in))
        Y = make_targets(rng, pair, n, n_out)
        if far_from_kinks(coefs, intercepts, X, Y, activation, out_act, loss):
            break
    else:
        raise AssertionError("could not draw a problem away from the kinks")
    sw = None
    if weighted:
        sw = rng.uniform(0.1, 2.0, n)
        sw[0] = 0.0                      # a zero weight must remove the sample entirely
    return coefs, intercepts, X, Y, sw


def run_all_checks(coefs, intercepts, X, Y, sw, activation, pair, alpha, backends=BACKENDS):
    loss, out_act, _ = pair
    kw = dict(activation=activation, out_activation=out_act, loss=loss, alpha=alpha,
              sample_weight=sw, huber_delta=HUBER_DELTA)

    # 1. analytic gradient of 'loops' vs central differences
    check = check_gradients(coefs, intercepts, X, Y, **kw)
    assert check.max_rel_error < FD_TOL, check
    assert np.abs(check.numeric).max() > 1e-6, "degenerate problem: zero gradient"

    # 2. vs the per-sample reference
    ref_loss, ref_cg, ref_ig = reference.loss_and_gradient(coefs, intercepts, X, Y, **kw)
    ref_flat = flat(ref_cg, ref_ig)
    assert_close(check.analytic, ref_flat, 1e-12, "loops vs reference")

    # 3. every backend vs the reference and vs each other (shapes preserved)
    results = {}
    for backend in backends:
        val, cg, ig = loss_and_gradient(coefs, intercepts, X, Y, backend=backend, **kw)
        assert [g.shape for g in cg] == [np.shape(c) for c in coefs]
        assert [g.shape for g in ig] == [np.shape(b) for b in intercepts]
        assert_close(val, ref_loss, 1e-12, f"{backend} loss vs reference")
        assert_close(flat(cg, ig), ref_flat, 1e-12, f"{backend} grad vs reference")
        results[backend] = (val, cg, ig)
    base = results["loops"]
    for backend, (val, cg, ig) in results.items():
        assert_close(val, base[0], 1e-12, f"{backend} vs loops loss")
        for l in range(len(coefs)):
            assert_close(cg[l], base[1][l], 1e-12, f"{backend} vs loops coef grad {l}")
            assert_close(ig[l], base[2][l], 1e-12, f"{backend} vs loops intercept grad {l}")
    return check, results


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradients(rng, activation, pair, variant):
    weighted, alpha = VARIANTS[variant]
    n_hidden = int(rng.integers(1, 5))
    hidden_sizes = [int(h) for h in rng.integers(1, 6, n_hidden)]
    coefs, intercepts, X, Y, sw = make_problem(rng, 3, hidden_sizes, pair, weighted,
                                               activation=activation)
    run_all_checks(coefs, intercepts, X, Y, sw, activation, pair, alpha)


@pytest.mark.parametrize("n_hidden", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradients_depth(rng, activation, n_hidden):
    """Every depth from 1 to 4 for every activation (weights and L2 on)."""
    pair = PAIRS[0] if n_hidden % 2 else PAIRS[-1]
    coefs, intercepts, X, Y, sw = make_problem(rng, 4, [3] * n_hidden, pair, True,
                                               activation=activation)
    run_all_checks(coefs, intercepts, X, Y, sw, activation, pair, 0.1)


def test_gradients_mixed_activations(rng):
    """One activation per hidden layer, given as a list."""
    acts = list(HIDDEN_ACTIVATIONS)
    pair = PAIRS[5]
    coefs, intercepts, X, Y, sw = make_problem(rng, 3, [4] * len(acts), pair, True,
                                               activation=acts)
    run_all_checks(coefs, intercepts, X, Y, sw, acts, pair, 0.05)


def test_sample_weights_equal_repetition(rng):
    """Integer weights are the same objective as repeating the samples."""
    pair = PAIRS[1]
    coefs, intercepts, X, Y, _ = make_problem(rng, 3, [5, 4], pair, False, activation="relu")
    sw = np.array([1.0, 2.0, 0.0, 3.0, 1.0, 1.0])
    kw = dict(activation="relu", loss="huber", huber_delta=HUBER_DELTA, alpha=0.2)
    weighted = loss_and_gradient(coefs, intercepts, X, Y, sample_weight=sw, **kw)
    rep = np.repeat(np.arange(6), sw.astype(int))
    repeated = loss_and_gradient(coefs, intercepts, X[rep], Y[rep], **kw)
    assert_close(weighted[0], repeated[0], 1e-12, "loss")
    assert_close(flat(weighted[1], weighted[2]), flat(repeated[1], repeated[2]), 1e-12, "grad")


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_sparse_input_gives_the_dense_gradient(rng, pair):
    """CSR input (the first layer reads its rows, never densified) gives the dense loss
    and gradient, on every backend; with an empty row and sample weights."""
    loss, out_act, _ = pair
    coefs, intercepts, X, Y, sw = make_problem(rng, 6, [5, 4], pair, True, n=9)
    X[rng.random(X.shape) < 0.5] = 0.0
    X[3] = 0.0
    kw = dict(activation="tanh", out_activation=out_act, loss=loss, alpha=0.1,
              sample_weight=sw, huber_delta=HUBER_DELTA)
    dense = loss_and_gradient(coefs, intercepts, X, Y, backend="blas", **kw)
    for backend in BACKENDS:
        got = loss_and_gradient(coefs, intercepts, sp.csr_matrix(X), Y, backend=backend, **kw)
        assert_close(got[0], dense[0], 1e-12, f"{backend} loss")
        for l in range(len(coefs)):
            assert_close(got[1][l], dense[1][l], 1e-12, f"{backend} coef grad {l}")
            assert_close(got[2][l], dense[2][l], 1e-12, f"{backend} intercept grad {l}")


# ---- random shapes: loops vs blas --------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data())
def test_loops_vs_blas_random_shapes(data):
    n_hidden = data.draw(st.integers(1, 4), label="n_hidden")
    widths = data.draw(st.lists(st.integers(1, 40), min_size=n_hidden + 1,
                                max_size=n_hidden + 1), label="n_in and hidden widths")
    n = data.draw(st.integers(1, 64), label="batch")
    activation = data.draw(st.sampled_from(HIDDEN_ACTIVATIONS), label="activation")
    loss, out_act, kind = data.draw(st.sampled_from(PAIRS), label="pair")
    n_out = data.draw(st.integers(1 if kind not in ("binary", "onehot") else 2, 5),
                      label="n_out")
    if kind == "binary":
        n_out = 1
    weighted = data.draw(st.booleans(), label="weighted")
    alpha = data.draw(st.sampled_from([0.0, 1e-4, 0.5]), label="alpha")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))

    sizes = [widths[0], *widths[1:], n_out]
    coefs = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    intercepts = [rng.standard_normal(b) * 0.5 for b in sizes[1:]]
    X = rng.standard_normal((n, sizes[0]))
    Y = make_targets(rng, (loss, out_act, kind), n, n_out)
    sw = rng.uniform(0.1, 2.0, n) if weighted else None
    kw = dict(activation=activation, out_activation=out_act, loss=loss, alpha=alpha,
              sample_weight=sw, huber_delta=HUBER_DELTA)
    lo = loss_and_gradient(coefs, intercepts, X, Y, backend="loops", **kw)
    bl = loss_and_gradient(coefs, intercepts, X, Y, backend="blas", **kw)
    assert np.isfinite(lo[0])
    assert_close(lo[0], bl[0], 1e-12, "loss")
    # Normwise over each layer's gradient; both forms use g' = [a > 0] for relu, so
    # the kink at 0 only matters if a pre-activation rounds to opposite signs.
    for l in range(len(coefs)):
        assert_close(lo[1][l], bl[1][l], 1e-12, f"coef grad {l}")
        assert_close(lo[2][l], bl[2][l], 1e-12, f"intercept grad {l}")


# ---- float32 -----------------------------------------------------------------------

@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", ["logistic", "relu", "softplus"])
def test_float32_loops_vs_blas(rng, activation, pair):
    """float32 end to end: loops and blas agree to 1e-5 and stay close to float64."""
    loss, out_act, kind = pair
    n_out = {"binary": 1, "onehot": 3}.get(kind, 4)
    sizes = [7, 13, 9, n_out]
    n = 37
    coefs = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
             for a, b in zip(sizes, sizes[1:])]
    intercepts = [(rng.standard_normal(b) * 0.5).astype(np.float32) for b in sizes[1:]]
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    Y = make_targets(rng, pair, n, n_out).astype(np.float32)
    sw = rng.uniform(0.1, 2.0, n).astype(np.float32)
    kw = dict(activation=activation, out_activation=out_act, loss=loss, alpha=0.1,
              sample_weight=sw, huber_delta=HUBER_DELTA)
    lo = loss_and_gradient(coefs, intercepts, X, Y, backend="loops", **kw)
    bl = loss_and_gradient(coefs, intercepts, X, Y, backend="blas", **kw)
    assert all(g.dtype == np.float32 for g in lo[1] + lo[2])
    assert_close(lo[0], bl[0], 1e-5, "float32 loss")
    for l in range(len(coefs)):
        assert_close(lo[1][l], bl[1][l], 1e-5, f"float32 coef grad {l}")
        assert_close(lo[2][l], bl[2][l], 1e-5, f"float32 intercept grad {l}")
    # The float64 computation from the same (float32) numbers: a loose sanity bound.
    c64 = [c.astype(np.float64) for c in coefs]
    i64 = [b.astype(np.float64) for b in intercepts]
    d = loss_and_gradient(c64, i64, X.astype(np.float64), Y.astype(np.float64), **dict(
        kw, sample_weight=sw.astype(np.float64)))
    assert_close(lo[0], d[0], 1e-4, "float32 vs float64 loss")
    assert_close(flat(lo[1], lo[2]), flat(d[1], d[2]), 1e-3, "float32 vs float64 grad")
