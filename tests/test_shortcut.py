"""Shortcut connections: networks whose layers take input from any earlier layers.

Layers are numbered 0 = the input, 1..H hidden, H+1 the output; layer t's
sources S(t) are earlier layers.  Checked here:

* the new loop kernels (``dense_forward_acc``, ``dense_backward_input_acc``,
  ``csr_forward_acc``, ``block_sq_norms``) against their BLAS twins and their
  formulas, in the serial, parallel and plain-Python forms;
* random DAGs (1-4 hidden layers, random source sets, every activation, both
  dtypes, sample weights, L2): the gradient of every backend against central
  differences and against an independent per-sample oracle
  (``reference.dag_loss_and_gradient``), and whole training epochs of the
  'python' backend against the compiled loops;
* the topology's validation, the chain case (bit-for-bit today's), the
  estimators' ``connections``/``skip_coefs_`` through every solver,
  partial_fit, warm starts, early stopping, sparse input and model files.

Tiny shapes, float64 and float32 only, C-contiguous arrays: no compiled variant
the engine does not already use.
"""
import numpy as np
import pytest
import scipy.sparse as sp

import fastbp
import reference
from fastbp import kernels_blas as kb
from fastbp import kernels_loop as kl
from fastbp.api import check_gradients, loss_and_gradient
from fastbp.backends import BACKENDS
from fastbp.codes import ACTIVATION_CODES, HIDDEN_ACTIVATIONS, IP_PAR_MIN
from fastbp.network import Network
from fastbp.optimizers import Optimizer
from fastbp.params import Layout, chain_sources, normalize_connections
from fastbp.trainer import run_epoch
from helpers import assert_close, fit_quietly, targets, tol_for

# The kernel and gradient tests run on tiny shapes: CI also runs them with
# NUMBA_DISABLE_JIT=1 (marked nojit); the estimator tests are compiled only.
nojit = pytest.mark.nojit

DTYPES = [np.float32, np.float64]
FORMS = ["serial", "parallel", "python"]
# (m, n_in, n_out): one sample, leftover samples and units around the tiles (4 x 3 units
# forward; 6 samples x one SIMD vector of 16-64 inputs backward, in blocks of 12 samples)
SHAPES = [(1, 3, 5), (7, 5, 1), (9, 6, 6), (13, 4, 9), (20, 70, 13)]


def plain(func):
    """The plain-Python source of a compiled function (itself under NUMBA_DISABLE_JIT)."""
    return getattr(func, "py_func", func)


def kernel(name, form):
    if form == "python":
        return plain(getattr(kl, name + "_serial"))
    return getattr(kl, f"{name}_{form}")


# ---- kernels vs BLAS twins ------------------------------------------------------------

@nojit
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["identity", "tanh", "relu", "softmax"])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_forward_acc(rng, form, dtype, act, shape):
    m, n_in, n_out = shape
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    a_src = rng.standard_normal((m, n_in)).astype(dtype)
    z = rng.standard_normal((m, n_out)).astype(dtype)
    got, ref = z.copy(), z.copy()
    kernel("dense_forward_acc", form)(w, a_src, ACTIVATION_CODES[act], got)
    kb.dense_forward_acc(w, a_src, ACTIVATION_CODES[act], ref)
    terms = np.abs(z).astype(float) + np.abs(a_src).astype(float) @ np.abs(w).astype(float).T
    assert_close(got, ref, tol_for(dtype), "vs BLAS twin", terms)
    zz = z.astype(float) + a_src.astype(float) @ w.astype(float).T
    formula = np.array([reference.g(act, row) for row in zz])
    assert_close(got, formula, tol_for(dtype), "vs formula", terms)


@nojit
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("act", ["identity", "logistic", "leaky_relu", "softplus"])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_backward_input_acc(rng, form, dtype, add, act, shape):
    m, n_in, n_out = shape
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    z = rng.standard_normal((m, n_in)) * 2.0
    a_src = np.array([reference.g(act, row) for row in z]).astype(dtype)
    start = rng.standard_normal((m, n_in)).astype(dtype)
    got, ref = start.copy(), start.copy()
    kernel("dense_backward_input_acc", form)(w, delta, a_src, ACTIVATION_CODES[act], add, got)
    kb.dense_backward_input_acc(w, delta, a_src, ACTIVATION_CODES[act], add, ref)
    e = delta.astype(float) @ w.astype(float) + (start.astype(float) if add else 0.0)
    terms = np.abs(delta).astype(float) @ np.abs(w).astype(float) + np.abs(start) * add
    assert_close(got, ref, tol_for(dtype), "vs BLAS twin", terms)
    assert_close(got, e * reference.g_prime(act, z), tol_for(dtype) * 10, "vs formula", terms)


@nojit
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shuffled", [False, True])
def test_csr_forward_acc(rng, form, dtype, shuffled):
    n_total, n_in, n_out, m, start = 12, 7, 5, 6, 3
    X = rng.standard_normal((n_total, n_in))
    X[rng.random(X.shape) < 0.6] = 0.0
    X[4] = 0.0
    Xc = sp.csr_matrix(X.astype(dtype))
    Xs = (Xc.data, Xc.indices.astype(np.int64), Xc.indptr.astype(np.int64))
    order = rng.permutation(n_total).astype(np.int64) if shuffled else np.empty(0, np.int64)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    z = rng.standard_normal((m, n_out)).astype(dtype)
    got, ref = z.copy(), z.copy()
    kernel("csr_forward_acc", form)(w, Xs, order, start, ACTIVATION_CODES["tanh"], got)
    kb.csr_forward_acc(w, Xs, order, start, ACTIVATION_CODES["tanh"], ref)
    rows = order[start:start + m] if shuffled else np.arange(start, start + m)
    formula = np.tanh(z.astype(float) + X[rows].astype(dtype).astype(float) @ w.T.astype(float))
    assert_close(got, ref, tol_for(dtype), "vs BLAS twin", 10.0)
    assert_close(got, formula, tol_for(dtype), "vs formula", 10.0)


@nojit
@pytest.mark.parametrize("form", ["compiled", "python"])
def test_block_sq_norms(rng, form):
    layout = Layout([3, 4, 5, 2], [2, 2, 0], normalize_connections("shortcut", 2))
    grad = rng.standard_normal(layout.n_params)
    out = np.full(len(layout.skip_keys), np.nan)
    ref = np.full(len(layout.skip_keys), np.nan)
    func = plain(kl.block_sq_norms) if form == "python" else kl.block_sq_norms
    func(grad, layout.skips, out)
    kb.block_sq_norms(grad, layout.skips, ref)
    expect = [float(np.sum(w ** 2)) for w in layout.skip_weights(grad)]
    assert_close(out, ref, 1e-12, "vs BLAS twin")
    assert_close(out, expect, 1e-12, "vs formula")


# ---- random DAGs ----------------------------------------------------------------------

PAIRS = [("squared_error", "identity"), ("huber", "identity"), ("log_loss", "logistic"),
         ("log_loss", "softmax"), ("squared_error", "logistic")]


def random_sources(rng, n_hidden):
    """Random source sets for layers 1..H+1, valid (every hidden layer reaches the output)."""
    for _ in range(100):
        mapping = {}
        for t in range(2, n_hidden + 2):
            k = int(rng.integers(1, t + 1))
            mapping[t] = sorted(int(s) for s in rng.choice(t, k, replace=False))
        try:
            return normalize_connections(mapping, n_hidden)
        except ValueError:
            continue
    raise AssertionError("no valid DAG drawn")


def random_dag_problem(rng, *, n_hidden=None, pair=None, n=7, n_in=3, activation=None):
    """(coefs, intercepts, skip_coefs, X, Y, sw, hidden activations, pair), away from kinks."""
    n_hidden = int(rng.integers(1, 5)) if n_hidden is None else n_hidden
    sources = random_sources(rng, n_hidden)
    pair = PAIRS[int(rng.integers(len(PAIRS)))] if pair is None else pair
    loss, out_act = pair
    n_out = 3 if out_act == "softmax" else int(rng.integers(1, 3))
    sizes = [n_in] + [int(h) for h in rng.integers(1, 6, n_hidden)] + [n_out]
    if activation is None:
        hidden = [str(a) for a in rng.choice(HIDDEN_ACTIVATIONS, n_hidden)]
    else:
        hidden = [activation] * n_hidden
    layout = Layout(sizes, [0] * (n_hidden + 1), sources)
    for _ in range(50):
        theta = rng.standard_normal(layout.n_params) * 0.7
        coefs = [c.copy() for c in layout.coefs(theta)]
        intercepts = [b.copy() for b in layout.biases(theta)]
        skips = {k: v.copy() for k, v in layout.skip_coefs(theta).items()}
        X = rng.standard_normal((n, n_in))
        Y = targets(rng, loss, out_act, n, n_out)
        zs = _hidden_pre_activations(coefs, intercepts, skips, X, hidden)
        if min((np.abs(z).min() for z in zs), default=1.0) > 1e-4:
            break
    sw = rng.uniform(0.1, 2.0, n)
    sw[0] = 0.0
    return coefs, intercepts, skips, X, Y, sw, hidden, pair


def _hidden_pre_activations(coefs, intercepts, skips, X, hidden):
    """Hidden pre-activations (kinks of relu-like activations are at z = 0)."""
    blocks = {(t, t + 1): c for t, c in enumerate(coefs) if c.shape[0]}
    blocks.update(skips)
    acts, zs = [X], []
    for t in range(1, len(coefs)):
        z = intercepts[t - 1] + sum(acts[s] @ c for (s, tt), c in blocks.items() if tt == t)
        zs.append(z)
        acts.append(np.array([reference.g(hidden[t - 1], row) for row in z]))
    return zs


# The nojit pass runs 3 of these 12 DAGs and 1 of the activations below: under
# NUMBA_DISABLE_JIT every backend is the plain-Python engine the main pass already runs
# as backend 'python' on all of them, and check_gradients' differences repeat it.
@pytest.mark.parametrize("case", [pytest.param(c, marks=(nojit,) if c < 3 else ())
                                  for c in range(12)])
def test_random_dag_gradients(rng, case):
    """Every backend vs central differences and the per-sample oracle (float64, weights, L2)."""
    coefs, intercepts, skips, X, Y, sw, hidden, (loss, out_act) = random_dag_problem(rng)
    alpha = [0.0, 0.3][case % 2]
    kw = dict(activation=hidden, out_activation=out_act, loss=loss, alpha=alpha,
              sample_weight=sw, huber_delta=0.5)
    ref = reference.dag_loss_and_gradient(coefs, intercepts, skips, X, Y, **kw)
    check = check_gradients(coefs, intercepts, X, Y, skip_coefs=skips, **kw)
    assert check.max_rel_error < 1e-6, check
    for backend in BACKENDS:
        val, cg, ig, sg = loss_and_gradient(coefs, intercepts, X, Y, backend=backend,
                                            skip_coefs=skips, **kw)
        assert_close(val, ref[0], 1e-12, f"{backend} loss")
        for l in range(len(coefs)):
            assert cg[l].shape == coefs[l].shape
            assert_close(cg[l], ref[1][l], 1e-12, f"{backend} coef grad {l}", 1.0)
            assert_close(ig[l], ref[2][l], 1e-12, f"{backend} intercept grad {l}", 1.0)
        assert sg.keys() == skips.keys()
        for key in skips:
            assert_close(sg[key], ref[3][key], 1e-12, f"{backend} skip grad {key}", 1.0)


@pytest.mark.parametrize("activation", [pytest.param(a, marks=(nojit,) if k == 0 else ())
                                        for k, a in enumerate(HIDDEN_ACTIVATIONS)])
def test_shortcut_gradients_every_activation(rng, activation):
    """FANN's shortcut net (every layer fed by all earlier ones), 3 hidden layers."""
    loss, out_act = PAIRS[3]
    sizes = [3, 4, 3, 5, 3]
    layout = Layout(sizes, [0] * 4, normalize_connections("shortcut", 3))
    for _ in range(50):
        theta = rng.standard_normal(layout.n_params) * 0.6
        coefs = [c.copy() for c in layout.coefs(theta)]
        intercepts = [b.copy() for b in layout.biases(theta)]
        skips = {k: v.copy() for k, v in layout.skip_coefs(theta).items()}
        X = rng.standard_normal((6, 3))
        zs = _hidden_pre_activations(coefs, intercepts, skips, X, [activation] * 3)
        if min(np.abs(z).min() for z in zs) > 1e-4:
            break
    Y = targets(rng, loss, out_act, 6, 3)
    kw = dict(activation=activation, out_activation=out_act, loss=loss, alpha=0.1,
              sample_weight=rng.uniform(0.5, 1.5, 6))
    check = check_gradients(coefs, intercepts, X, Y, skip_coefs=skips, **kw)
    assert check.max_rel_error < 1e-6, check
    ref = reference.dag_loss_and_gradient(coefs, intercepts, skips, X, Y, **kw)
    _, _, _, sg = loss_and_gradient(coefs, intercepts, X, Y, skip_coefs=skips, **kw)
    for key in skips:
        assert_close(sg[key], ref[3][key], 1e-12, f"skip grad {key}", 1.0)


@nojit
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_dag_float32_and_sparse(rng, dtype):
    """float32 within 1e-5 of the float64 oracle; CSR input (the input also feeding the
    output through a shortcut block) gives the dense gradient."""
    coefs, intercepts, skips, X, Y, sw, hidden, (loss, out_act) = random_dag_problem(
        rng, n_hidden=3, pair=PAIRS[0])
    if (0, 4) not in skips:  # the (sparse) input feeds the output too
        skips[(0, 4)] = rng.standard_normal((3, coefs[-1].shape[1])) * 0.5
    X[rng.random(X.shape) < 0.4] = 0.0
    kw = dict(activation=hidden, out_activation=out_act, loss=loss, alpha=0.2,
              sample_weight=sw)
    ref = reference.dag_loss_and_gradient(coefs, intercepts, skips, X, Y, **kw)
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    args = ([cast(c) for c in coefs], [cast(b) for b in intercepts])
    kw32 = dict(kw, sample_weight=cast(sw))
    skips32 = {k: cast(v) for k, v in skips.items()}
    for backend in ("loops", "blas"):
        # CSR in float64 only: float32 CSR loss_grad would be a compiled variant the
        # rest of the suite never needs (the loop kernels' float32 CSR forms are tested above)
        inputs = (cast(X),) + ((sp.csr_matrix(X),) if dtype == np.float64 else ())
        for Xin in inputs:
            val, cg, ig, sg = loss_and_gradient(*args, Xin, cast(Y), backend=backend,
                                                skip_coefs=skips32, **kw32)
            tol = tol_for(dtype)
            assert_close(val, ref[0], tol * 10, f"{backend} loss")
            for l in range(len(coefs)):
                assert_close(cg[l], ref[1][l], tol * 10, f"{backend} coef grad {l}", 1.0)
                assert_close(ig[l], ref[2][l], tol * 10, f"{backend} intercept grad {l}", 1.0)
            for key in skips:
                assert_close(sg[key], ref[3][key], tol * 10, f"{backend} skip {key}", 1.0)


@nojit
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_training_epochs_python_matches_loops(rng, solver, sparse):
    """Whole compiled epochs (shuffled mini-batches, clipping, optimizer, per-block
    gradient norms) on a random DAG: the 'python' backend, 'blas' and the loops with
    every kernel on its parallel twin agree with 'loops'."""
    sources = random_sources(rng, 3)
    while all(len(s) == 1 for s in sources):
        sources = random_sources(rng, 3)
    sizes = [4, 5, 3, 4, 2]
    hidden = ["tanh", "relu", "logistic"]
    n = 13
    X = rng.standard_normal((n, 4))
    if sparse:
        X[rng.random(X.shape) < 0.5] = 0.0
        X = sp.csr_matrix(X)
    Y = rng.standard_normal((n, 2))
    sw = rng.uniform(0.2, 2.0, n)
    orders = [rng.permutation(n).astype(np.int64) for _ in range(3)]
    runs = {}
    for backend in ("loops", "python", "blas", "loops-parallel"):
        net = Network(sizes, hidden, "identity", "squared_error", np.float64,
                      backend.replace("-parallel", ""), sources=sources)
        if backend == "loops-parallel":  # every kernel call on its parallel twin
            net.buffers(4)[2][IP_PAR_MIN] = 1
        theta = net.layout.init(np.random.RandomState(3), np.float64)
        opt = Optimizer(solver, theta.size, np.float64, 0.05, "constant", 0.9, True, 0.5,
                        0.9, 0.999, 1e-8)
        grad = np.zeros_like(theta)
        losses, norms = [], []
        for order in orders:
            loss, gn = run_epoch(net, theta, grad, opt, X, Y, sw, order, 4, 1e-3, 0.5)
            losses.append(loss)
            norms.append(gn.copy())
        assert len(norms[0]) == net.layout.n_blocks
        runs[backend] = (theta, np.array(losses), np.array(norms))
    for backend in ("python", "blas", "loops-parallel"):
        for k, what in enumerate(("parameters", "losses", "gradient norms")):
            assert_close(runs[backend][k], runs["loops"][k], 1e-12, f"{backend} {what}")


# ---- topology: validation, layout, the chain -----------------------------------------

@nojit
@pytest.mark.parametrize("connections,match", [
    ("dense", "unknown name 'dense'"),
    ([1, 2], "must be 'chain', 'shortcut' or a mapping"),
    ({4: [0]}, "layer 4 does not exist"),
    ({0: [0]}, "layer 0 does not exist"),
    ({"x": [0]}, "key 'x' is not a layer number"),
    ({2: [2]}, r"connections\[2\]: source 2 is not an earlier layer"),
    ({3: [0, 3]}, r"connections\[3\]: source 3 is not an earlier layer"),
    ({2: [-1]}, r"connections\[2\]: source -1 is not an earlier layer"),
    ({2: []}, r"connections\[2\]: layer 2 needs at least one source"),
    ({2: [0, 0]}, r"connections\[2\]: repeated source"),
    ({2: 1}, r"connections\[2\]: expected a list of source layers"),
    ({2: [0]}, "hidden layer 1 feeds no layer on a path to the output"),
    ({3: [0, 1]}, "hidden layer 2 feeds no layer on a path to the output"),
])
def test_invalid_connections_name_the_entry(connections, match):
    with pytest.raises(ValueError, match=match):
        normalize_connections(connections, 2)


@nojit
def test_connection_forms():
    assert normalize_connections("chain", 2) == ((0,), (1,), (2,)) == chain_sources(2)
    assert normalize_connections("shortcut", 2) == ((0,), (0, 1), (0, 1, 2))
    assert normalize_connections({}, 2) == chain_sources(2)
    assert normalize_connections({3: [2, 0], "2": [1]}, 2) == ((0,), (1,), (0, 2))
    assert normalize_connections({2: [0], 3: [1, 2]}, 2) == ((0,), (0,), (1, 2))


@nojit
def test_layout_chain_blocks_first():
    """A chain is exactly today's layout; shortcut blocks come after every chain block."""
    sizes = [5, 4, 3, 2]
    chain = Layout(sizes, [2, 2, 0])
    short = Layout(sizes, [2, 2, 0], normalize_connections("shortcut", 2))
    assert chain.skips.shape == (0, 6) and chain.n_blocks == 3
    np.testing.assert_array_equal(short.table, chain.table)
    assert short.skip_keys == [(0, 2), (0, 3), (1, 3)]
    assert short.n_params == chain.n_params + 5 * 3 + 5 * 2 + 4 * 2
    assert short.fan_in == [5, 9, 12]
    # no chain block into layer 2: an empty block, the bias stays
    gap = Layout(sizes, [2, 2, 0], normalize_connections({2: [0], 3: [1, 2]}, 2))
    assert gap.coefs(np.zeros(gap.n_params))[1].shape == (0, 3)
    assert gap.skip_keys == [(0, 2), (1, 3)]


@nojit
def test_init_draws_scikit_learns_chain_then_the_shortcut_blocks():
    """Glorot over the total fan-in; a chain draws exactly what it always did."""
    sizes = [6, 4, 3]
    chain = Layout(sizes, [2, 0])
    short = Layout(sizes, [2, 0], normalize_connections("shortcut", 1))
    a = chain.init(np.random.RandomState(7), np.float64)
    b = short.init(np.random.RandomState(7), np.float64)
    rs = np.random.RandomState(7)
    expect = []
    for l, fan_in in enumerate([6, 4]):
        bound = np.sqrt(6.0 / (fan_in + sizes[l + 1]))
        expect.append((rs.uniform(-bound, bound, (sizes[l], sizes[l + 1])),
                       rs.uniform(-bound, bound, sizes[l + 1])))
    for l, (c, i) in enumerate(expect):
        np.testing.assert_array_equal(chain.coefs(a)[l], c)
        np.testing.assert_array_equal(chain.biases(a)[l], i)
    # the shortcut net: output fan-in 4 + 6, so its bound differs; drawn in the same order
    rs = np.random.RandomState(7)
    bound1 = np.sqrt(6.0 / (6 + 4))
    np.testing.assert_array_equal(short.coefs(b)[0], rs.uniform(-bound1, bound1, (6, 4)))
    rs.uniform(-bound1, bound1, 4)
    bound2 = np.sqrt(6.0 / (10 + 3))
    np.testing.assert_array_equal(short.coefs(b)[1], rs.uniform(-bound2, bound2, (4, 3)))
    np.testing.assert_array_equal(short.biases(b)[1], rs.uniform(-bound2, bound2, 3))
    np.testing.assert_array_equal(short.skip_coefs(b)[(0, 2)],
                                  rs.uniform(-bound2, bound2, (6, 3)))
    he = short.init(np.random.RandomState(0), np.float64, "he")
    assert np.all(short.biases(he)[1] == 0)


# ---- estimators --------------------------------------------------------------------------

@pytest.fixture
def small(blobs):
    X, y = blobs
    return X[:60], y[:60]


def test_chain_is_the_default_bit_for_bit(small):
    X, y = small
    base = fit_quietly(fastbp.MLPClassifier((5, 4), max_iter=4, random_state=0), X, y)
    for conn in ("chain", {}, {2: [1]}):
        m = fit_quietly(fastbp.MLPClassifier((5, 4), max_iter=4, random_state=0,
                                             connections=conn), X, y)
        assert m.skip_coefs_ == {}
        for a, b in zip(m.coefs_ + m.intercepts_, base.coefs_ + base.intercepts_):
            assert a.tobytes() == b.tobytes()
        assert len(m.history_["grad_norms"][0]) == 3


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs", "rmsprop", "adagrad"])
def test_every_solver_trains_a_shortcut_net(small, solver):
    """loops and blas give the same weights; skip_coefs_ views the parameters; the
    history has a gradient norm per layer and per shortcut block."""
    X, y = small
    kw = dict(hidden_layer_sizes=(5, 4), activation="tanh", solver=solver, max_iter=6,
              random_state=0, connections="shortcut", learning_rate_init=0.05)
    m = fit_quietly(fastbp.MLPClassifier(**kw), X, y)
    ref = fit_quietly(fastbp.MLPClassifier(backend="blas", **kw), X, y)
    assert sorted(m.skip_coefs_) == [(0, 2), (0, 3), (1, 3)]
    assert m.skip_coefs_[(0, 3)].shape == (4, 3)
    for key in m.skip_coefs_:
        assert_close(m.skip_coefs_[key], ref.skip_coefs_[key], 1e-9, f"skip {key}", 1.0)
    for a, b in zip(m.coefs_, ref.coefs_):
        assert_close(a, b, 1e-9, "coefs", 1.0)
    assert all(len(g) == 6 for g in m.history_["grad_norms"])
    assert np.all(np.isfinite(m.history_["grad_norms"]))
    assert m.score(X, y) > 0.5


def test_skip_coefs_set_the_starting_point_and_predict(small):
    """Zeroed shortcut blocks make the net its chain; assigned arrays are used by
    predict and by a warm start."""
    X, y = small
    m = fit_quietly(fastbp.MLPClassifier((5,), max_iter=5, random_state=0,
                                         connections="shortcut"), X, y)
    chain = fit_quietly(fastbp.MLPClassifier((5,), max_iter=1, random_state=0), X, y)
    chain.coefs_ = [c.copy() for c in m.coefs_]
    chain.intercepts_ = [b.copy() for b in m.intercepts_]
    assert not np.allclose(m.predict_proba(X), chain.predict_proba(X))
    m.skip_coefs_ = {k: np.zeros_like(v) for k, v in m.skip_coefs_.items()}
    np.testing.assert_allclose(m.predict_proba(X), chain.predict_proba(X), rtol=1e-12)
    m.set_params(warm_start=True, max_iter=2)
    fit_quietly(m, X, y)
    assert np.abs(m.skip_coefs_[(0, 2)]).max() > 0  # trained on from zero
    with pytest.raises(ValueError, match="connections changed"):
        m.set_params(connections="chain").fit(X, y)
    with pytest.raises(ValueError, match=r"skip_coefs\[\(0, 2\)\]: expected shape"):
        m.set_params(connections="shortcut")
        m.skip_coefs_ = {(0, 2): np.zeros((2, 2))}
        m.predict(X)


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_grow_a_trained_chain_into_a_shortcut_net(small, how):
    """Assign zero shortcut blocks and the matching connections: training goes on from the
    chain's function (same predictions at the start), with optimizer moments of the new size."""
    X, y = small
    m = fastbp.MLPClassifier((5, 4), random_state=0, max_iter=3)
    if how == "warm_start":
        fit_quietly(m, X, y)
    else:
        m.partial_fit(X, y, classes=np.unique(y))
    before = m.predict_proba(X)
    m.skip_coefs_ = {(0, 2): np.zeros((4, 4)), (0, 3): np.zeros((4, 3)),
                     (1, 3): np.zeros((5, 3))}
    with pytest.raises(ValueError, match="connections changed"):
        m.partial_fit(X, y) if how == "partial_fit" else m.set_params(warm_start=True).fit(X, y)
    m.set_params(connections="shortcut")
    np.testing.assert_allclose(m.predict_proba(X), before, rtol=1e-12)
    if how == "partial_fit":
        m.partial_fit(X, y)
        n_params = (4 * 5 + 5) + (5 * 4 + 4) + (4 * 3 + 3) + (4 * 4 + 4 * 3 + 5 * 3)
        assert m._optimizer.m1.shape[0] == n_params == 107
    else:
        fit_quietly(m.set_params(warm_start=True), X, y)
    assert np.abs(m.skip_coefs_[(0, 3)]).max() > 0


def test_partial_fit_sparse_and_early_stopping(small):
    X, y = small
    conn = {2: [0], 3: [1, 2]}  # layer 1 reaches the output past layer 2
    m = fastbp.MLPClassifier((5, 4), random_state=0, connections=conn)
    m.partial_fit(X, y, classes=np.unique(y))
    before = m.skip_coefs_[(1, 3)].copy()
    m.partial_fit(sp.csr_matrix(X), y)
    assert m.coefs_[1].shape == (0, 4) and sorted(m.skip_coefs_) == [(0, 2), (1, 3)]
    assert not np.array_equal(before, m.skip_coefs_[(1, 3)])
    r = fit_quietly(fastbp.MLPRegressor(hidden_layer_sizes=(6, 6), random_state=0,
                                        connections="shortcut", early_stopping=True,
                                        max_iter=8), sp.csr_matrix(X), X[:, 0] - X[:, 1])
    assert len(r.validation_scores_) == r.n_iter_ and np.isfinite(r.best_validation_score_)
    dense = fit_quietly(fastbp.MLPRegressor(hidden_layer_sizes=(6, 6), random_state=0,
                                            connections="shortcut", early_stopping=True,
                                            max_iter=8), X, X[:, 0] - X[:, 1])
    assert_close(r.predict(X), dense.predict(X), 1e-9, "sparse vs dense fit", 1.0)


def test_bad_connections_fail_before_any_work(small):
    X, y = small
    m = fastbp.MLPClassifier((4, 4), connections={2: [0], 3: [0, 2]})
    with pytest.raises(ValueError, match="hidden layer 1 feeds no layer"):
        m.fit(X, y)
    assert not hasattr(m, "coefs_")
    with pytest.raises(ValueError, match="connections"):
        fastbp.MLPClassifier((4,), connections="dense").fit(X, y)


def test_model_file_records_the_connections(tmp_path, small):
    X, y = small
    conn = {2: [0, 1], 3: [0, 2]}
    m = fit_quietly(fastbp.MLPClassifier((5, 4), max_iter=3, random_state=0,
                                         connections=conn), X, y)
    path = m.save(tmp_path / "s.fbp")
    loaded = fastbp.load(path)
    assert loaded.connections == conn
    assert sorted(loaded.skip_coefs_) == sorted(m.skip_coefs_)
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    from fastbp import io
    meta, data = io.read(path)
    assert meta["format_version"] == 2 and meta["connections"]["3"] == [0, 2]
    chain = fit_quietly(fastbp.MLPClassifier((3,), max_iter=2, random_state=0), X, y)
    meta, data = io.read(chain.save(tmp_path / "c.fbp"))
    assert meta["format_version"] == 1  # older fastbp still reads chain models
    loaded.set_params(warm_start=True, max_iter=2)
    fit_quietly(loaded, X, y)
    assert loaded.n_iter_ == 2


@pytest.mark.filterwarnings("ignore::fastbp.InputRangeWarning")  # border pixels of digits
def test_shortcuts_beat_vanishing_gradients_on_digits():
    """A deep, narrow logistic net (6 hidden layers of 8 units) on scikit-learn's digits.

    Chain: the error shrinks by g' <= 1/4 per layer on its way down, so the first
    layer's gradient norm is about 1e-5 in the first epoch (measured: 1.2e-5) and
    sgd stays at chance (test accuracy 0.10).  Shortcut (same widths, every layer
    also fed by the input and all earlier layers): the input's blocks get the
    output's error directly, the first layer's gradient norm is about 0.04 and the
    net learns (test accuracy 0.97).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0, stratify=y)
    kw = dict(hidden_layer_sizes=(8,) * 6, activation="logistic", solver="sgd",
              learning_rate_init=0.1, momentum=0.9, max_iter=30, n_iter_no_change=1000,
              random_state=0)
    chain = fit_quietly(fastbp.MLPClassifier(**kw), X_tr, y_tr)
    short = fit_quietly(fastbp.MLPClassifier(connections="shortcut", **kw), X_tr, y_tr)
    g_chain = np.array(chain.history_["grad_norms"])
    g_short = np.array(short.history_["grad_norms"])
    assert g_chain.shape == (30, 7) and g_short.shape == (30, 7 + 21)
    # first layer's mean gradient norm in the first epoch: vanished in the chain only
    assert g_chain[0, 0] < 1e-4 < 1e-2 < g_short[0, 0]
    assert g_chain[:, 0].max() < 1e-2 * g_short[:, 0].mean()  # every epoch: 1.2e-5 vs 0.007
    assert chain.score(X_te, y_te) < 0.2          # chance is 0.1 (measured 0.10)
    assert short.score(X_te, y_te) > 0.9          # measured 0.97
