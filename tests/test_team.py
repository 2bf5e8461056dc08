"""Team epochs (``fastbp.team``): every worker in one parallel region per epoch.

* On random chain networks, shapes, batch sizes (last batches of 1 sample among
  them), orders, sample weights (a batch whose weights sum to 0 among them),
  optimizers, clipping and dtypes, a team epoch gives ``engine.train_epoch``'s
  parameters, optimizer moments, step count and statistics bit for bit (the
  ``loops-serial`` engine), under 1 and 2 threads.
* A diverging epoch stops at the same batch, before any update from it, as the
  serial engine's does.
* ``Network.team_for`` picks it exactly where it applies (2 threads or more).
* A fit that takes team epochs gives the same bits here and in fresh processes
  that load it from the cache, under 1 and 2 threads.
"""
import os
import textwrap

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from fastbp.backends import get_team_epoch
from fastbp.codes import IP_STEP, ST_DIVERGED
from fastbp.config import TEAM_MIN_ROWS, TEAM_MIN_WORK
from fastbp.network import Dropout, Network, engine_array, engine_input, with_threads
from fastbp.optimizers import Optimizer
from helpers import run_python

SOLVERS = [("sgd", False), ("sgd", True), ("adam", True), ("rmsprop", True), ("adagrad", True)]


def _network(rng, backend, dtype, classify):
    n_hidden = int(rng.integers(1, 4))
    sizes = [int(rng.integers(1, 40))] + [int(rng.integers(1, 70)) for _ in range(n_hidden)]
    acts = [str(rng.choice(["relu", "tanh", "logistic", "identity"])) for _ in range(n_hidden)]
    if classify:
        sizes.append(int(rng.integers(3, 6)))
        return Network(sizes, acts, "softmax", "log_loss", dtype, backend)
    sizes.append(int(rng.integers(1, 4)))
    return Network(sizes, acts, "identity", "squared_error", dtype, backend)


def _problem(seed):
    """A random network (for both engines), data, order, weights and optimizer settings."""
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 3 == 0 else np.float64
    classify = bool(seed % 2)
    net = _network(rng, "loops", dtype, classify)
    serial = Network(*net.args[:5], backend="loops-serial")
    sizes = net.layout.sizes
    bs = int(rng.choice([2, 5, 16, 17, 33, 40]))
    n = bs * int(rng.integers(1, 5)) + int(rng.choice([0, 1, bs // 2]))
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    if classify:
        Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
    else:
        Y = rng.standard_normal((n, sizes[-1])).astype(dtype)
    kind = seed % 4
    sw = np.empty(0, dtype)  # unweighted
    if kind >= 2:
        sw = rng.random(n).astype(dtype)
        if kind == 3:
            sw[:bs] = 0.0  # the first batch of the natural order weighs nothing
    order = (np.empty(0, np.int64) if kind == 3 or seed % 5 == 0
             else rng.permutation(n).astype(np.int64))
    theta = (0.4 * rng.standard_normal(net.layout.n_params)).astype(dtype)
    solver, nesterov = SOLVERS[seed % len(SOLVERS)]
    settings = dict(solver=solver, lr=float(rng.choice([1e-3, 0.05])),
                    nesterov=nesterov, alpha=float(rng.choice([0.0, 1e-3])),
                    clip=float(rng.choice([0.0, 0.5])))
    return net, serial, X, Y, sw, order, bs, theta, settings


def _epochs(net, X, Y, sw, order, bs, theta, settings, epoch=None, n_epochs=2):
    """``n_epochs`` epochs by ``epoch`` (default: the network's own choice); returns
    (theta, m1, m2, [stats per epoch], step count)."""
    theta = theta.copy()
    opt = Optimizer(settings["solver"], theta.shape[0], theta.dtype, settings["lr"],
                    nesterovs_momentum=settings["nesterov"])
    grad = np.zeros_like(theta)
    stats = []
    for _ in range(n_epochs):
        if epoch is None:
            stats.append(net.train_epoch(theta, grad, opt, X, Y, sw, order, bs,
                                         settings["alpha"], settings["clip"]).copy())
            continue
        Xe = engine_input(X, net.dtype)
        context = net.context(bs, settings["alpha"], settings["clip"], opt)
        data = (Xe[0], Xe[1], engine_array(Y), engine_array(sw))
        epoch(data, order, (theta, grad, opt.m1, opt.m2), context)
        opt.t = int(context[3][IP_STEP])
        stats.append(context[4].copy())
    return theta, opt.m1, opt.m2, stats, opt.t


def _assert_same(got, ref):
    for g, r, what in zip(got, ref, ("theta", "m1", "m2", "stats", "step")):
        if what == "stats":
            assert len(g) == len(r)
            for a, b in zip(g, r):
                assert a.tobytes() == b.tobytes(), f"stats: {a} != {b}"
        elif what == "step":
            assert g == r
        else:
            assert g.dtype == r.dtype and g.tobytes() == r.tobytes(), what


def _threads():
    return (1, 2) if numba.config.NUMBA_NUM_THREADS >= 2 else (1,)


@pytest.mark.parametrize("seed", range(24))
def test_team_epochs_give_the_serial_engines_bits_under_1_and_2_threads(seed):
    net, serial, X, Y, sw, order, bs, theta, settings = _problem(seed)
    ref = _epochs(serial, X, Y, sw, order, bs, theta, settings)
    assert np.isfinite(ref[0]).all()
    assert ref[0].tobytes() != theta.tobytes()  # it trained: the comparison is not vacuous
    for threads in _threads():
        got = with_threads(threads, _epochs, net, X, Y, sw, order, bs, theta, settings,
                           get_team_epoch())
        _assert_same(got, ref)


@pytest.mark.nojit
def test_team_epoch_as_python_gives_the_serial_engines_bits():
    """Under NUMBA_DISABLE_JIT the team runs as Python (one worker takes every block)."""
    for seed in (1, 4):
        net, serial, X, Y, sw, order, bs, theta, settings = _problem(seed)
        ref = _epochs(serial, X, Y, sw, order, bs, theta, settings, n_epochs=1)
        _assert_same(_epochs(net, X, Y, sw, order, bs, theta, settings, get_team_epoch(),
                             n_epochs=1), ref)


def test_a_diverging_team_epoch_stops_where_the_serial_engine_does():
    net, serial, X, Y, sw, order, bs, theta, settings = _problem(2)
    net = Network([X.shape[1], 8, Y.shape[1]], ["identity"], "identity", "squared_error",
                  X.dtype, "loops")
    serial = Network(*net.args[:5], backend="loops-serial")
    theta = np.random.default_rng(2).standard_normal(net.layout.n_params).astype(X.dtype)
    assert X.shape[0] >= 3 * bs and X.dtype == np.float64
    rows = order[bs:2 * bs] if order.shape[0] else np.arange(bs, 2 * bs)
    X[rows] *= 1e200  # the second batch's loss overflows
    ref = _epochs(serial, X, Y, sw, order, bs, theta, settings, n_epochs=1)
    assert ref[3][0][ST_DIVERGED] == 1.0
    assert ref[0].tobytes() != theta.tobytes()  # the first batch's update was kept
    for threads in _threads():
        got = with_threads(threads, _epochs, net, X, Y, sw, order, bs, theta, settings,
                           get_team_epoch(), n_epochs=1)
        _assert_same(got, ref)


def _big_enough(sizes, cap):
    return cap * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) >= TEAM_MIN_WORK


def test_networks_take_team_epochs_exactly_where_they_apply():
    sizes = [64, 128, 64, 10]
    cap = 64
    assert _big_enough(sizes, cap) and cap >= TEAM_MIN_ROWS
    net = Network(sizes, ["tanh", "tanh"], "softmax", "log_loss", "float64", "loops")
    X = engine_input(np.zeros((cap, 64)), net.dtype)
    ip = net.context(cap)[3]
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert with_threads(2, net.team_for, cap, ip, X) is get_team_epoch()
    # one thread runs the serial engine (the same bits, without the team's claims)
    assert with_threads(1, net.team_for, cap, ip, X) is None
    # below the batch size, or the work (W3's net at batch 32)
    assert net.team_for(TEAM_MIN_ROWS // 2, net.context(TEAM_MIN_ROWS // 2)[3], X) is None
    small = Network([20, 64, 64, 1], ["relu", "relu"], "identity", "squared_error",
                    "float64", "loops")
    assert not _big_enough(small.layout.sizes, 32)
    assert small.team_for(32, small.context(32)[3], X) is None
    # sparse input, dropout, the other backends, shortcut blocks, parallel kernels
    Xs = engine_input(sp.csr_matrix(np.eye(cap, 64)), net.dtype)
    assert net.team_for(cap, ip, Xs) is None
    assert net.team_for(cap, ip, X, Dropout([0.5, 0.5], 1)) is None
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert with_threads(2, net.team_for, cap, ip, X, Dropout([0.0, 0.0], 1)) \
            is get_team_epoch()
    for backend in ("loops-serial", "blas", "python"):
        other = Network(sizes, ["tanh", "tanh"], "softmax", "log_loss", "float64", backend)
        assert other.team_for(cap, other.context(cap)[3], X) is None
    skip = Network(sizes, ["tanh", "tanh"], "softmax", "log_loss", "float64", "loops",
                   sources=[[0], [1], [2, 0]])
    assert skip.team_for(cap, skip.context(cap)[3], X) is None
    wide = Network([784, 512, 512, 10], ["relu", "relu"], "softmax", "log_loss", "float64",
                   "loops")
    assert wide.team_for(256, wide.context(256)[3], X) is None


_FIT = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    import fastbp

    def fit(n_jobs):
        '''A net and batch that take team epochs with 2 threads: (the model, its flat
        parameters and predicted probabilities).'''
        rng = np.random.default_rng(5)
        X = rng.standard_normal((300, 64))
        y = rng.integers(0, 10, 300)
        model = fastbp.MLPClassifier((128, 64), activation="tanh", solver="adam",
                                     batch_size=64, max_iter=2, tol=0.0, random_state=0,
                                     n_jobs=n_jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        # 1,200 x 64 inputs: predict's input check takes its parallel twin
        proba = model.predict_proba(np.repeat(X, 4, axis=0))
        return model, np.concatenate([a.ravel() for a in model.coefs_ + model.intercepts_]
                                     + [proba.ravel()])
""")


def test_team_fits_give_the_same_bits_in_fresh_processes_under_1_and_2_threads(tmp_path):
    """Train and predict here (1 and 2 threads); then in fresh processes with a cache of
    their own: the first, under 2 threads, compiles the team epoch (and predict's
    parallel input check) into the empty cache, trains, predicts and saves the model;
    the next ones, under 1 and 2 threads, load them from the now warm cache, train
    again, and load the saved model and predict with it.  One set of bits."""
    namespace = {}
    exec(compile(_FIT, "<team fit>", "exec"), namespace)
    net = Network([64, 128, 64, 10], ["tanh", "tanh"], "softmax", "log_loss", "float64")
    assert _big_enough(net.layout.sizes, 64)
    here = namespace["fit"](1)[1]
    if numba.config.NUMBA_NUM_THREADS >= 2:
        assert namespace["fit"](2)[1].tobytes() == here.tobytes()
    cache = tmp_path / "numba-cache"
    model = tmp_path / "model.fbp"
    rows = here.shape[0] - 1200 * 10  # the predicted probabilities come last
    for k, threads in enumerate((2, 1, 2)):  # fresh cache, then warm
        path = tmp_path / f"theta_{k}.npy"
        code = _FIT + textwrap.dedent(f"""
            fitted, flat = fit(None)
            np.save({str(path)!r}, flat)
            if {k} == 0:
                fitted.save({str(model)!r})
            else:
                loaded = fastbp.load({str(model)!r})
                X = np.random.default_rng(5).standard_normal((300, 64))
                np.save({str(path)!r} + ".proba.npy",
                        loaded.predict_proba(np.repeat(X, 4, axis=0)))
        """)
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), NUMBA_CACHE_DIR=str(cache))
        proc = run_python(code, env=env)
        assert proc.returncode == 0, proc.stderr
        assert np.load(path).tobytes() == here.tobytes(), f"run {k}: {threads} threads"
        if k > 0:
            proba = np.load(str(path) + ".proba.npy")
            assert proba.ravel().tobytes() == here[rows:].tobytes(), f"run {k}: loaded model"
