"""The training engine across backends and failure.

Driven through the trainer's own path (``network.Network``, ``trainer.run_epoch``,
``optimizers.Optimizer``) on tiny networks:

(a) the 'python' backend (the engine run as plain Python over the plain-Python
    loop kernels) agrees with the compiled 'loops' backend to 1e-12;
(b) 'loops', 'loops-serial', 'blas' -- and 'loops' with its parallel twins forced
    on for every call -- agree with each other;
(c) divergence raises ``DivergenceError`` and restores the parameters and the
    optimizer state from before the failing epoch.
"""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from fastbp.codes import IP_PAR_MIN
from fastbp.optimizers import Optimizer
from fastbp.network import Network, engine_input
from fastbp.trainer import DivergenceError, run_epoch

from helpers import assert_close, targets

TOL = 1e-12

# Tiny nets: CI also runs this module with NUMBA_DISABLE_JIT=1 (engine and kernels as
# Python).  Bitwise determinism across thread counts is in test_threads.py.
pytestmark = pytest.mark.nojit

SOLVERS = {
    "sgd-nesterov": dict(solver="sgd", learning_rate_init=0.1, momentum=0.9,
                         nesterovs_momentum=True),
    "sgd-momentum": dict(solver="sgd", learning_rate_init=0.1, momentum=0.9,
                         nesterovs_momentum=False),
    "adam": dict(solver="adam", learning_rate_init=0.01),
}


def make_data(rng, n, n_in, n_out, loss, output, weighted):
    X = rng.standard_normal((n, n_in))
    Y = targets(rng, loss, output, n, n_out, scale=1.0)
    sw = np.empty(0)
    if weighted:
        sw = rng.uniform(0.2, 2.0, n)
        sw[1] = 0.0
    return X, Y, sw


def train(backend, problem, *, epochs=3, batch_size=4, alpha=1e-3, clip=0.0,
          solver="sgd-nesterov", force_parallel=False):
    """Train a fresh network for a few epochs; returns everything worth comparing.

    ``problem`` holds the data, the architecture, the starting parameters and one
    sample order per epoch (or None for the natural order), so every backend
    sees exactly the same run.
    """
    p = problem
    dtype = p["X"].dtype
    net = Network(p["sizes"], p["hidden"], p["output"], p["loss"], dtype, backend,
                  huber_delta=0.5)
    if force_parallel:
        # Test hook: a parallel threshold of 1 sends every kernel call with more than
        # one sample / unit to its parallel twin, even on these tiny shapes.
        net.buffers(batch_size)[2][IP_PAR_MIN] = 1
    theta = p["theta0"].astype(dtype)
    grad = np.zeros_like(theta)
    opt = Optimizer(n_params=theta.size, dtype=dtype, **SOLVERS[solver])
    losses, norms = [], []
    for epoch in range(epochs):
        order = p["orders"][epoch] if p["orders"] is not None else np.empty(0, np.int64)
        loss, gn = run_epoch(net, theta, grad, opt, p["X"], p["Y"], p["sw"].astype(dtype),
                             order, batch_size, alpha, clip)
        losses.append(loss)
        norms.append(gn.copy())
    return dict(theta=theta, losses=np.array(losses), norms=np.array(norms),
                m1=opt.m1.copy(), m2=opt.m2.copy(), t=opt.t)


def make_problem(rng, *, n=11, sizes=(3, 5, 4, 2), hidden=("tanh", "relu"),
                 output="identity", loss="squared_error", weighted=False, shuffle=True,
                 epochs=3, dtype=np.float64):
    sizes = list(sizes)
    if output == "softmax" and sizes[-1] < 2:
        sizes[-1] = 3
    X, Y, sw = make_data(rng, n, sizes[0], sizes[-1], loss, output, weighted)
    net = Network(sizes, list(hidden), output, loss, np.float64, "blas")
    seed = int(rng.integers(2**31))
    theta0 = net.layout.init(np.random.RandomState(seed), np.float64)
    orders = [rng.permutation(n).astype(np.int64) for _ in range(epochs)] if shuffle else None
    return dict(X=np.ascontiguousarray(X, dtype), Y=np.ascontiguousarray(Y, dtype), sw=sw,
                sizes=sizes, hidden=list(hidden), output=output, loss=loss, theta0=theta0,
                orders=orders)


def assert_same_run(got, ref, tol, what):
    assert_close(got["theta"], ref["theta"], tol, f"{what}: parameters")
    assert_close(got["losses"], ref["losses"], tol, f"{what}: epoch losses")
    assert_close(got["norms"], ref["norms"], tol, f"{what}: gradient norms")
    assert_close(got["m1"], ref["m1"], tol, f"{what}: first moment")
    assert_close(got["m2"], ref["m2"], tol, f"{what}: second moment")
    assert got["t"] == ref["t"]


# ---- (a) python vs loops -------------------------------------------------------------

@pytest.mark.parametrize("clip", [0.0, 0.05], ids=["noclip", "clip"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["natural", "shuffled"])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_python_backend_matches_loops(rng, solver, shuffle, weighted, clip):
    # n = 11, batch 4: batches of 4, 4 and a partial 3.
    problem = make_problem(rng, weighted=weighted, shuffle=shuffle)
    loops = train("loops", problem, solver=solver, clip=clip)
    python = train("python", problem, solver=solver, clip=clip)
    assert_same_run(python, loops, TOL, "python vs loops")
    assert not np.allclose(loops["theta"], problem["theta0"]), "training did not move"
    assert np.all(np.diff(loops["losses"]) != 0)
    if solver == "adam":
        assert loops["t"] == 3 * 3       # 3 epochs x 3 batches
    else:
        assert loops["t"] == 0


PAIRS = [("squared_error", "identity"), ("huber", "identity"), ("squared_error", "logistic"),
         ("huber", "logistic"), ("log_loss", "logistic"), ("log_loss", "softmax")]


@pytest.mark.parametrize("loss,output", PAIRS)
def test_python_backend_matches_loops_every_loss(rng, loss, output):
    problem = make_problem(rng, output=output, loss=loss, weighted=True,
                           hidden=("softplus", "leaky_relu"))
    loops = train("loops", problem, solver="adam", clip=0.5)
    python = train("python", problem, solver="adam", clip=0.5)
    assert_same_run(python, loops, TOL, f"{loss}+{output}")


# ---- (b) loops, loops-serial, forced-parallel loops, blas ------------------------------

@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("loss,output", [("squared_error", "identity"), ("log_loss", "softmax"),
                                         ("log_loss", "logistic")])
def test_backends_agree(rng, loss, output, solver):
    problem = make_problem(rng, n=29, sizes=(5, 7, 3, 4), hidden=("logistic", "relu"),
                           output=output, loss=loss, weighted=True)
    ref = train("loops", problem, solver=solver, batch_size=8, clip=1.0)
    for backend in ("loops-serial", "blas"):
        got = train(backend, problem, solver=solver, batch_size=8, clip=1.0)
        assert_same_run(got, ref, TOL, backend)
    got = train("loops", problem, solver=solver, batch_size=8, clip=1.0, force_parallel=True)
    assert_same_run(got, ref, TOL, "loops with the parallel twins")
    preds = {}
    for backend in ("loops", "loops-serial", "blas", "python"):
        net = Network(problem["sizes"], problem["hidden"], output, loss, np.float64, backend)
        preds[backend] = net.predict(ref["theta"], problem["X"])
        assert_close(preds[backend], preds["loops"], TOL, f"{backend} predict")


@pytest.mark.parametrize("backend", ["loops", "blas", "python"])
def test_sparse_input_matches_dense(rng, backend):
    """CSR input (first layer read row by row, never densified) trains like dense input."""
    problem = make_problem(rng, n=23, sizes=(9, 6, 3), hidden=("relu",), weighted=True)
    X = problem["X"].copy()
    X[rng.random(X.shape) < 0.6] = 0.0
    X[4] = 0.0                                   # an empty row
    dense = train(backend, dict(problem, X=X), solver="adam", batch_size=5)
    sparse = train(backend, dict(problem, X=sp.csr_matrix(X)), solver="adam", batch_size=5)
    assert_same_run(sparse, dense, TOL, "sparse vs dense")
    net = Network(problem["sizes"], problem["hidden"], "identity", "squared_error",
                  np.float64, backend)
    assert_close(net.predict(dense["theta"], sp.csr_matrix(X)),
                 net.predict(dense["theta"], X), TOL, "predict sparse vs dense")


@pytest.mark.parametrize("backend", ["loops", "blas"])
def test_loss_grad_and_predict_in_chunks(rng, backend):
    """Full-data loss, gradient and predictions do not depend on the chunk size."""
    problem = make_problem(rng, n=2500, sizes=(6, 8, 3), hidden=("softplus",), weighted=True)
    net = Network(problem["sizes"], problem["hidden"], "identity", "squared_error",
                  np.float64, backend)
    theta, X, Y, sw = problem["theta0"], problem["X"], problem["Y"], problem["sw"]
    whole = net.loss_grad(theta, X, Y, sw, 0.2, chunk=4096)
    whole = (whole[0], whole[1], whole[2].copy())
    for chunk in (1024, 333):
        parts = net.loss_grad(theta, X, Y, sw, 0.2, chunk=chunk)
        assert_close(parts[0], whole[0], TOL, f"data term, chunk {chunk}")
        assert_close(parts[1], whole[1], TOL, f"L2 term, chunk {chunk}")
        assert_close(parts[2], whole[2], TOL, f"gradient, chunk {chunk}")
        assert_close(net.predict(theta, X, chunk=chunk), net.predict(theta, X, chunk=4096),
                     TOL, f"predict, chunk {chunk}")


@pytest.mark.parametrize("backend", ["loops", "blas", "python"])
@pytest.mark.parametrize("batch", [1, 6])
def test_gradient_norms_are_those_of_each_layers_gradient(rng, backend, batch):
    """``train_epoch``'s per-layer gradient norms, summed from the params kernels'
    per-row sums, are the norms of each layer's weight-and-bias gradient."""
    from fastbp.codes import L_BOFF, L_NOUT, L_WOFF, ST_GNORM
    problem = make_problem(rng, n=6, sizes=(6, 9, 5, 3), weighted=True)
    net = Network(problem["sizes"], problem["hidden"], "identity", "squared_error",
                  np.float64, backend)
    theta = problem["theta0"].copy()
    grad = np.empty_like(theta)
    opt = Optimizer("sgd", theta.shape[0], np.float64, 1e-3)
    order = np.arange(batch, dtype=np.int64)  # one batch: the norms are of its gradient
    X, Y, sw = problem["X"][:batch], problem["Y"][:batch], problem["sw"][:batch]
    stats = net.train_epoch(theta, grad, opt, X, Y, sw, order, batch, 0.1, 0.0)
    t = net.layout.table
    expect = [np.linalg.norm(grad[t[l, L_WOFF]:t[l, L_BOFF] + t[l, L_NOUT]])
              for l in range(net.layout.n_layers)]
    assert_close(stats[ST_GNORM:ST_GNORM + len(expect)], np.array(expect), 1e-12,
                 "gradient norms")

def test_predict_plans_are_read_only_shared_by_threads_and_bounded(rng):
    """``Network.predict`` keeps its controls per block size (``_predict_plan``) and
    shares them between calls: Python threads predicting at once with one network
    get the results of calls made one at a time, the controls are never written,
    and a stream of block sizes keeps a bounded number of plans."""
    import threading

    problem = make_problem(rng, n=300, sizes=(7, 9, 4), hidden=("tanh",))
    net = Network(problem["sizes"], problem["hidden"], "identity", "squared_error",
                  np.float64, "loops")
    theta, X = problem["theta0"], problem["X"]
    counts = (1, 2, 5, 17, 64, 300)
    expected = {n: net.predict(theta, X[:n]) for n in counts}
    plans = {k: (v[0].copy(), v[1].copy(), v[3].copy()) for k, v in net._plans.items()}
    failures = []

    def run(seed):
        order = np.random.default_rng(seed).permutation(np.repeat(counts, 20))
        for n in order:
            if not np.array_equal(net.predict(theta, X[:n], n_jobs=1), expected[n]):
                failures.append(n)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert failures == []
    for key, (table, ip, stats) in plans.items():
        plan = net._plans[key]
        assert np.array_equal(plan[0], table) and np.array_equal(plan[1], ip)
        assert np.array_equal(plan[3], stats)
    for n in range(1, 30):
        net.predict(theta, X[:n])
    assert 1 <= len(net._plans) <= 8
    assert np.array_equal(net.predict(theta, X[:5]), expected[5])

@pytest.mark.parametrize("backend", ["loops", "blas", "python"])
def test_clip_norm_bounds_the_step(rng, backend):
    """Plain SGD, one full batch: the step is lr * clip when the gradient norm exceeds clip."""
    problem = make_problem(rng, n=9, shuffle=False)
    theta0 = problem["theta0"]
    net = Network(problem["sizes"], problem["hidden"], "identity", "squared_error",
                  np.float64, backend)
    lr, clip = 0.5, 1e-3
    opt = Optimizer("sgd", theta0.size, np.float64, lr, momentum=0.0,
                    nesterovs_momentum=False)
    theta = theta0.copy()
    grad = np.zeros_like(theta)
    run_epoch(net, theta, grad, opt, problem["X"], problem["Y"], problem["sw"],
              np.empty(0, np.int64), 9, 0.0, clip)
    # the unclipped gradient at theta0 is much longer than clip
    _, _, g0 = net.loss_grad(theta0.copy(), problem["X"], problem["Y"], problem["sw"], 0.0)
    assert np.linalg.norm(g0) > 10 * clip
    step = theta - theta0
    np.testing.assert_allclose(np.linalg.norm(step), lr * clip, rtol=1e-12)
    np.testing.assert_allclose(step, -lr * clip * g0 / np.linalg.norm(g0), rtol=0,
                               atol=1e-14)


# ---- (c) divergence -----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["loops", "blas"])
@pytest.mark.parametrize("solver", ["sgd-nesterov", "adam"])
def test_divergence_restores_parameters(rng, backend, solver):
    problem = make_problem(rng, n=64, sizes=(4, 16, 16, 2), hidden=("relu", "relu"))
    X, Y = problem["X"] * 10, problem["Y"]
    net = Network(problem["sizes"], problem["hidden"], "identity", "squared_error",
                  np.float64, backend)
    theta = problem["theta0"].copy()
    grad = np.zeros_like(theta)
    opt = Optimizer(n_params=theta.size, dtype=np.float64, **SOLVERS[solver])
    opt.learning_rate = 1e-4
    order = np.empty(0, np.int64)
    sw = np.empty(0)
    run_epoch(net, theta, grad, opt, X, Y, sw, order, 8, 0.0, 0.0)   # one sane epoch
    opt.learning_rate = 1e30 if solver == "sgd-nesterov" else 1e150
    with np.errstate(all="ignore"):
        for _ in range(5):
            before = theta.copy(), opt.m1.copy(), opt.m2.copy(), opt.t
            try:
                run_epoch(net, theta, grad, opt, X, Y, sw, order, 8, 0.0, 0.0)
            except DivergenceError:
                break
        else:
            pytest.fail("a learning rate of 1e30 did not diverge in 5 epochs")
    assert theta.tobytes() == before[0].tobytes()
    assert opt.m1.tobytes() == before[1].tobytes()
    assert opt.m2.tobytes() == before[2].tobytes()
    assert opt.t == before[3]
    assert np.isfinite(theta).all()
    assert not np.array_equal(theta, problem["theta0"])    # the sane epoch was kept


# ---- (d) the serial engine: no parallel region for networks that never reach one -----

def _linked(func, seen):
    """Every compiled function ``func`` can call (its globals, recursively)."""
    from numba.core.registry import CPUDispatcher
    for name in func.__code__.co_names:
        obj = func.__globals__.get(name)
        if isinstance(obj, CPUDispatcher) and id(obj) not in seen:
            seen[id(obj)] = obj
            _linked(obj.py_func, seen)
    return seen.values()


def test_engine_variants_link_only_what_they_can_reach():
    from numba.core.registry import CPUDispatcher

    from fastbp import engine
    from fastbp.backends import ENTRY_POINTS, get_engine
    loops = get_engine("loops")
    assert loops.variant(True, True) is loops
    assert get_engine("loops-serial") is loops.variant(False, True)
    assert get_engine("loops-serial").variant(True, False) is loops.variant(False, False)
    assert loops.variant(True, True, sparse=True) is loops
    for parallel, shortcuts, sparse in itertools.product((False, True), repeat=3):
        variant = loops.variant(parallel, shortcuts, sparse=sparse)
        for name in ENTRY_POINTS:
            func = getattr(variant, name).dispatcher
            if not isinstance(func, CPUDispatcher):  # NUMBA_DISABLE_JIT: plain functions
                continue
            linked = _linked(func.py_func, {})
            assert any(d.targetoptions.get("parallel") for d in linked) is parallel, name
            # the switches that prune the shortcut and CSR code at compile time (what is
            # then compiled, in a fresh cache: test_cache_lifecycle.py, the issue sequence)
            assert func.py_func.__globals__["SHORTCUTS"] is shortcuts, name
            assert func.py_func.__globals__["SPARSE"] is sparse, name
            if (parallel, shortcuts, sparse) == (True, True, True):
                assert func is getattr(engine, name)
            else:  # a copy: its own cache files
                assert func.py_func.__qualname__ != getattr(engine, name).py_func.__qualname__


@pytest.mark.parametrize("sizes,expect_parallel", [([100, 50, 1], False), ([300, 250, 1], True)])
def test_element_wise_passes_reach_the_parallel_variant_sooner(sizes, expect_parallel):
    """The optimizer step (n_params elements) goes parallel from
    ``PARALLEL_MIN_WORK >> ELEMENTWISE_PAR_SHIFT`` elements: at batch 1 a 300-250-1
    net's layers are far below the multiply-add threshold, its 75,501 parameters
    are not."""
    from fastbp.config import ELEMENTWISE_PAR_SHIFT, PARALLEL_MIN_WORK
    net = Network(sizes, ["relu"], "identity", "squared_error", np.float64, "loops")
    assert all(a * b < PARALLEL_MIN_WORK for a, b in zip(sizes, sizes[1:]))
    assert (net.layout.n_params >= PARALLEL_MIN_WORK >> ELEMENTWISE_PAR_SHIFT) is expect_parallel
    ip = net.buffers(1)[2]
    dense = engine_input(np.zeros((3, sizes[0])), np.float64)
    assert net.engine_for(1, ip, dense) is net.engine.variant(expect_parallel, False,
                                                              sparse=False)


@pytest.mark.parametrize("batch,expect_parallel", [(8, False), (4096, True)])
@pytest.mark.parametrize("connections", ["chain", "shortcut"])
def test_network_takes_the_variant_its_calls_can_reach(batch, expect_parallel, connections):
    from fastbp.params import normalize_connections
    # 64-100-10: 4096 * 64 * 100 multiply-adds reach the threshold, 8 * 64 * 100 do not
    net = Network([64, 100, 10], ["relu"], "softmax", "log_loss", np.float64, "loops",
                  sources=normalize_connections(connections, 1))
    ip = net.buffers(batch)[2]
    shortcuts = connections == "shortcut"
    dense = engine_input(np.zeros((3, 64)), np.float64)
    csr = engine_input(sp.random(3, 64, density=0.1, format="csr"), np.float64)
    for X, sparse in ((dense, False), (csr, True)):
        assert net.engine_for(batch, ip, X) is net.engine.variant(expect_parallel, shortcuts,
                                                                  sparse=sparse)
    ip[IP_PAR_MIN] = 1  # the tests' hook to force parallel twins also forces that variant
    assert net.engine_for(batch, ip, dense) is net.engine.variant(True, shortcuts,
                                                                  sparse=False)
