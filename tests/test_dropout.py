"""Dropout (issue 14): inverted dropout of the hidden layers while training.

* The counter-based masks: the compiled hash and its NumPy twin agree bit for bit; the
  keep fraction is 1 - rate within a stated tolerance; units, steps, rows and layers
  draw independently (pair frequencies).
* ``dropout_forward`` / ``dropout_backward``: loop (serial, parallel under 1 and 2
  threads) against the BLAS twin and the plain-Python body, and the backward against
  finite differences of the forward; random shapes, both dtypes.
* ``loss_and_gradient(dropout=, dropout_seed=)``: a fixed mask, so
  ``check_gradients`` compares with finite differences (chain and shortcut nets,
  several activations); loops, blas and python give the same numbers.
* Estimators: rate 0 is the default bit for bit; loops, blas and python train the
  same weights; predict/score never drop; the validation loss is computed without
  dropout; the mask stream continues in partial_fit; refusals (lbfgs, rprop, bad
  rates); the train/test gap on scikit-learn's diabetes data narrows.  (dask refuses dropout:
  tests/test_dask.py, beside its rprop refusal.)
* Model files: the rates and the stream are saved; a model loaded in another process
  continues partial_fit exactly as the in-memory one (slow: subprocess); CLI --dropout.
"""
import json
import textwrap

import numba
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import fastbp
from fastbp import kernels_blas, kernels_loop
from fastbp.codes import IDENTITY, LOGISTIC, RELU, SOFTPLUS, TANH
from fastbp.jit import pure_python
from helpers import run_python

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
# Tiny shapes: CI also runs the tests marked nojit with NUMBA_DISABLE_JIT=1 (kernel bodies
# as Python); the estimator tests are compiled only.
nojit = pytest.mark.nojit


# -- the masks ------------------------------------------------------------------------
def _loop_uniforms(seed, step, rows, layer, n_units):
    out = np.empty((len(rows), n_units))
    for n, r in enumerate(rows):
        key = kernels_loop.dropout_key(seed, step, int(r), layer)
        for j in range(n_units):
            out[n, j] = kernels_loop.dropout_uniform(key, j)
    return out


@nojit
def test_hash_compiled_equals_numpy_twin(rng):
    seeds = [0, 1, 2 ** 62 + 12345, int(rng.integers(0, 2 ** 63 - 1))]
    for seed in seeds:
        step = int(rng.integers(0, 2 ** 40))
        rows = rng.integers(0, 2 ** 33, size=5)
        layer = int(rng.integers(1, 5))
        twin = kernels_blas.dropout_uniform(seed, step, rows, layer, 9)
        assert np.array_equal(_loop_uniforms(seed, step, rows, layer, 9), twin)
        assert ((twin >= 0) & (twin < 1)).all()


@nojit
def test_integer_threshold_is_the_float_keep_test(rng):
    """The kernels' integer test ``mix32(key ^ j) < dropout_threshold(rate)`` keeps
    exactly the units ``dropout_uniform(key, j) < 1 - rate`` keeps, at the edges too."""
    for rate in [0.0, 0.5, 0.25, 1 / 3, 0.1, 1 - 2 ** -32, *rng.uniform(0, 1, 20)]:
        thr = kernels_loop.dropout_threshold(rate)
        assert thr == kernels_blas.dropout_threshold(rate)
        h = np.array([0, 1, int(thr) - 1, int(thr), int(thr) + 1, 2 ** 32 - 1], dtype=np.int64)
        h = h[(h >= 0) & (h < 2 ** 32)].astype(np.uint64)
        as_float = h.astype(np.float64) * 2.0 ** -32 < 1.0 - rate
        assert np.array_equal(h < thr, as_float), rate


@nojit
def test_hash_keep_fraction_and_independence():
    # 200 rows x 500 units = 1e5 draws: the keep fraction's standard error is
    # sqrt(q (1 - q) / 1e5) <= 0.0016; the tolerance 0.006 is about 4 of them.
    rows = np.arange(200)
    for rate in (0.1, 0.5, 0.8):
        kept = kernels_blas.dropout_uniform(7, 3, rows, 1, 500) < 1 - rate
        assert abs(kept.mean() - (1 - rate)) < 0.006
    q = 0.5
    base = kernels_blas.dropout_uniform(7, 3, rows, 1, 500) < q
    others = {"next unit": kernels_blas.dropout_uniform(7, 3, rows, 1, 501)[:, 1:] < q,
              "next step": kernels_blas.dropout_uniform(7, 4, rows, 1, 500) < q,
              "next row": kernels_blas.dropout_uniform(7, 3, rows + 1, 1, 500) < q,
              "next layer": kernels_blas.dropout_uniform(7, 3, rows, 2, 500) < q,
              "next seed": kernels_blas.dropout_uniform(8, 3, rows, 1, 500) < q}
    for what, other in others.items():
        # independent draws: both kept with probability q^2 = 0.25 (standard error 0.0014)
        assert abs((base & other).mean() - q * q) < 0.006, what
        assert not np.array_equal(base, other), what


# -- the kernels ----------------------------------------------------------------------
def _block(rng):
    """(m, n_units, z): a random block, sizes not multiples of 4 included."""
    m = int(rng.integers(1, 12))
    n_units = int(rng.integers(1, 10))
    return m, n_units, rng.standard_normal((m, n_units))


def _activate(z, act, dtype):
    from fastbp.activations import activate
    a = np.array(z, dtype=dtype, order="C")  # a copy: z stays the pre-activation
    activate(a, act)
    return a


RTOL = {np.float64: 1e-13, np.float32: 1e-5}
_PY_FORWARD = pure_python(kernels_loop.dropout_forward_serial)
_PY_BACKWARD = pure_python(kernels_loop.dropout_backward_serial)


@nojit
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_kernels_loops_blas_python_and_threads(rng, dtype):
    for act in (RELU, TANH, LOGISTIC):
        m, n_units, z = _block(rng)
        order = rng.permutation(m + 5).astype(np.int64)
        for order_, start in ((order, 3), (np.empty(0, dtype=np.int64), 2)):
            args = (order_, start, 99, 4, 2, 0.4)
            a_blas = _activate(z, act, dtype)
            kernels_blas.dropout_forward(a_blas, *args)
            results = []
            for func in (kernels_loop.dropout_forward_serial, _PY_FORWARD):
                a = _activate(z, act, dtype)
                func(a, *args)
                results.append(a)
            for threads in (1, 2):  # the parallel twin: the same bits for any thread count
                previous = numba.get_num_threads()
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                try:
                    a = _activate(z, act, dtype)
                    kernels_loop.dropout_forward_parallel(a, *args)
                finally:
                    numba.set_num_threads(previous)
                results.append(a)
            for a in results:
                assert np.array_equal(a, a_blas)
            e = rng.standard_normal((m, n_units)).astype(dtype)
            d_blas, a2 = e.copy(), a_blas.copy()
            kernels_blas.dropout_backward(a2, d_blas, *args, act)
            for func in (kernels_loop.dropout_backward_serial,
                         kernels_loop.dropout_backward_parallel, _PY_BACKWARD):
                d, a3 = e.copy(), a_blas.copy()
                func(a3, d, *args, act)
                # g' is computed in another order by the twin (NumPy) than by the loop
                # body: equal to rounding; the dropped units are exactly the same
                assert np.array_equal(d == 0, d_blas == 0)
                assert np.allclose(d, d_blas, rtol=RTOL[dtype], atol=0)
                assert np.array_equal(a3, a2)


@nojit
@pytest.mark.parametrize("act", [TANH, LOGISTIC, SOFTPLUS, IDENTITY])
def test_dropout_backward_is_the_derivative_of_the_forward(rng, act):
    """``dropout_backward`` of e equals d/dz sum(e * dropout_forward(g(z))) (central
    differences, float64), with the same mask."""
    m, n_units = int(rng.integers(1, 7)), int(rng.integers(1, 9))
    z = rng.standard_normal((m, n_units))
    e = rng.standard_normal((m, n_units))
    order = np.empty(0, dtype=np.int64)
    args = (order, 0, 5, 1, 3, 0.3)

    def f(zz):
        a = _activate(zz, act, np.float64)
        kernels_loop.dropout_forward_serial(a, *args)
        return float((e * a).sum())

    a = _activate(z, act, np.float64)
    kernels_loop.dropout_forward_serial(a, *args)
    delta = e.copy()
    kernels_loop.dropout_backward_serial(a, delta, *args, act)
    numeric = np.empty_like(z)
    eps = 1e-6
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        numeric[idx] = (f(zp) - f(zm)) / (2 * eps)
    assert np.allclose(delta, numeric, rtol=1e-6, atol=1e-8)
    assert (delta == 0).any() or m * n_units < 4  # some units dropped (rate 0.3)


# -- loss and gradient with a fixed mask -----------------------------------------------
def _net(rng, sizes, scale=0.5):
    coefs = [rng.standard_normal((a, b)) * scale for a, b in zip(sizes[:-1], sizes[1:])]
    intercepts = [rng.standard_normal(b) * 0.1 for b in sizes[1:]]
    return coefs, intercepts


@nojit
@pytest.mark.parametrize("activation", ["tanh", "relu", "logistic", "softplus"])
def test_gradient_with_a_fixed_mask_matches_finite_differences(rng, activation):
    sizes = [4, 6, 5, 3]
    coefs, intercepts = _net(rng, sizes)
    X = rng.standard_normal((11, 4))
    Y = rng.standard_normal((11, 3))
    kw = dict(activation=activation, dropout=[0.3, 0.5], dropout_seed=12345, dropout_step=3,
              alpha=1e-3)
    check = fastbp.check_gradients(coefs, intercepts, X, Y, **kw)
    assert check.max_rel_error < 1e-6, check
    loss0, g0, b0 = fastbp.loss_and_gradient(coefs, intercepts, X, Y, activation=activation,
                                             alpha=1e-3)
    loss, g, b = fastbp.loss_and_gradient(coefs, intercepts, X, Y, **kw)
    assert loss != loss0  # the masks change the objective
    for backend in ("blas", "python"):
        lb, gb, bb = fastbp.loss_and_gradient(coefs, intercepts, X, Y, backend=backend, **kw)
        assert np.isclose(lb, loss, rtol=1e-12)
        for x, y in zip(gb + bb, g + b):
            assert np.allclose(x, y, rtol=1e-10, atol=1e-13)
    # another step or seed draws other masks
    other = fastbp.loss_and_gradient(coefs, intercepts, X, Y, **{**kw, "dropout_step": 4})[0]
    assert other != loss


@nojit
def test_gradient_with_dropout_on_a_shortcut_net(rng):
    sizes = [3, 5, 4, 2]
    coefs, intercepts = _net(rng, sizes)
    skip = {(0, 2): rng.standard_normal((3, 4)) * 0.5, (1, 3): rng.standard_normal((5, 2)) * 0.5}
    X = rng.standard_normal((9, 3))
    Y = rng.standard_normal((9, 2))
    kw = dict(activation="tanh", dropout=0.4, dropout_seed=7, skip_coefs=skip)
    check = fastbp.check_gradients(coefs, intercepts, X, Y, **kw)
    assert check.max_rel_error < 1e-6, check
    loops = fastbp.loss_and_gradient(coefs, intercepts, X, Y, **kw)
    blas = fastbp.loss_and_gradient(coefs, intercepts, X, Y, backend="blas", **kw)
    assert np.isclose(loops[0], blas[0], rtol=1e-12)
    for k in skip:
        assert np.allclose(loops[3][k], blas[3][k], rtol=1e-10, atol=1e-13)


@nojit
def test_gradient_refuses_bad_dropout(rng):
    coefs, intercepts = _net(rng, [3, 4, 2])
    X, Y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fastbp.loss_and_gradient(coefs, intercepts, X, Y, dropout=1.0)
    with pytest.raises(ValueError, match="hidden layers"):
        fastbp.loss_and_gradient(coefs, intercepts, X, Y, dropout=[0.1, 0.2])
    with pytest.raises(ValueError, match="seed"):
        fastbp.loss_and_gradient(coefs, intercepts, X, Y, dropout=0.1, dropout_seed=-1)


# -- estimators ------------------------------------------------------------------------
def _blobs(rng, n=60):
    X = rng.standard_normal((n, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8).astype(int)
    return X, y


def _params(model):
    return np.concatenate([a.ravel() for a in model.coefs_ + model.intercepts_])


def test_rate_zero_is_the_default_bit_for_bit(rng):
    X, y = _blobs(rng)
    kw = dict(hidden_layer_sizes=(6, 5), max_iter=3, batch_size=16, random_state=0)
    default = fastbp.MLPClassifier(**kw).fit(X, y)
    for rate in (0.0, [0.0, 0.0]):
        model = fastbp.MLPClassifier(dropout=rate, **kw).fit(X, y)
        assert np.array_equal(_params(model), _params(default))
        assert model.loss_curve_ == default.loss_curve_
        assert model._dropout_seed is None  # no draw from random_state


def test_backends_train_the_same_weights_and_predict_never_drops(rng):
    X, y = _blobs(rng)
    kw = dict(hidden_layer_sizes=(6, 5), activation=["tanh", "relu"], max_iter=3,
              batch_size=16, random_state=0, dropout=[0.2, 0.5])
    loops = fastbp.MLPClassifier(**kw).fit(X, y)
    assert loops._dropout_step == 3 * 4  # one step per mini-batch: 4 batches of <= 16
    plain = fastbp.MLPClassifier(**{**kw, "dropout": 0.0}).fit(X, y)
    assert not np.allclose(_params(loops), _params(plain))
    for backend in ("blas", "python"):
        other = fastbp.MLPClassifier(backend=backend, **kw).fit(X, y)
        assert np.allclose(_params(other), _params(loops), rtol=1e-10, atol=1e-12)
        assert other._dropout_seed == loops._dropout_seed
    # predict: the plain forward pass of the weights (NumPy), and the same every call
    h = np.tanh(X @ loops.coefs_[0] + loops.intercepts_[0])
    h = np.maximum(h @ loops.coefs_[1] + loops.intercepts_[1], 0)
    z = h @ loops.coefs_[2] + loops.intercepts_[2]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.allclose(loops.predict_proba(X), p, rtol=1e-12, atol=1e-14)
    assert np.array_equal(loops.predict_proba(X), loops.predict_proba(X))


def test_validation_loss_is_computed_without_dropout(rng):
    X = rng.standard_normal((50, 3))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.standard_normal(50)
    X_val = rng.standard_normal((20, 3))
    y_val = X_val[:, 0] - 2 * X_val[:, 1]
    model = fastbp.MLPRegressor(hidden_layer_sizes=(8,), max_iter=4, batch_size=10, alpha=0.0,
                                random_state=0, dropout=0.5)
    model.fit(X, y, X_val=X_val, y_val=y_val)
    expected = 0.5 * np.mean((model.predict(X_val) - y_val) ** 2)
    assert np.isclose(model.validation_loss_curve_[-1], expected, rtol=1e-12)


def test_partial_fit_continues_the_mask_stream(rng):
    X, y = _blobs(rng)
    kw = dict(hidden_layer_sizes=(6,), batch_size=20, random_state=0, dropout=0.3)
    model = fastbp.MLPClassifier(**kw)
    model.partial_fit(X, y, classes=[0, 1, 2])
    seed = model._dropout_seed
    assert model._dropout_step == 3
    model.partial_fit(X, y)
    assert (model._dropout_seed, model._dropout_step) == (seed, 6)
    warm = fastbp.MLPClassifier(max_iter=2, warm_start=True, **kw).fit(X, y)
    steps = warm._dropout_step
    warm.fit(X, y)
    assert warm._dropout_step == 2 * steps


@pytest.mark.parametrize("solver", ["lbfgs", "rprop"])
def test_full_batch_solvers_refuse_dropout(rng, solver):
    X, y = _blobs(rng, 20)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(4,), solver=solver, dropout=0.2)
    with pytest.raises(ValueError, match=rf"dropout=0.2 needs a stochastic solver.*"
                                         rf"solver='{solver}'"):
        model.fit(X, y)
    assert not hasattr(model, "coefs_")


def test_bad_rates_are_refused(rng):
    X, y = _blobs(rng, 20)
    for rate, match in ((1.0, "dropout"), (-0.1, "dropout"), ([0.1, 0.2], "2 rates"),
                        (["a"], "numbers")):
        with pytest.raises(ValueError, match=match):
            fastbp.MLPClassifier(hidden_layer_sizes=(4,), dropout=rate).fit(X, y)


def test_dropout_narrows_the_train_test_gap_on_diabetes():
    """scikit-learn's diabetes data (442 patients, 10 features, a noisy target):
    a 128-unit relu layer trained 300 epochs on half of it.  Measured (R^2, train /
    test): no dropout 0.979 / 0.143 (gap 0.84), dropout=0.5 0.743 / 0.337 (gap 0.41)."""
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, random_state=0)
    gaps, tests = {}, {}
    for rate in (0.0, 0.5):
        model = fastbp.MLPRegressor(hidden_layer_sizes=(128,), max_iter=300, alpha=0.0,
                                    learning_rate_init=0.01, n_iter_no_change=1000,
                                    random_state=0, dropout=rate).fit(X_tr, y_tr)
        tests[rate] = model.score(X_te, y_te)
        gaps[rate] = model.score(X_tr, y_tr) - tests[rate]
    assert gaps[0.0] > 0.7 and gaps[0.5] < 0.5, gaps
    assert tests[0.5] > tests[0.0] + 0.1, tests


# -- model files, across processes, and the CLI ----------------------------------------
def test_model_file_round_trip(tmp_path, rng):
    X, y = _blobs(rng)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=2, random_state=0,
                                 dropout=(0.1, 0.3)).fit(X, y)
    model.save(tmp_path / "m.fbp")
    loaded = fastbp.load(tmp_path / "m.fbp")
    assert list(loaded.dropout) == [0.1, 0.3]
    assert (loaded._dropout_seed, loaded._dropout_step) == (model._dropout_seed,
                                                             model._dropout_step)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


_CONTINUE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastbp
    path, data = sys.argv[1], np.load(sys.argv[2])
    model = fastbp.load(path)
    model.partial_fit(data["X"], data["y"])
    print(json.dumps([float(v) for v in np.concatenate(
        [a.ravel() for a in model.coefs_ + model.intercepts_])]))
""")


@pytest.mark.slow
def test_a_loaded_model_continues_partial_fit_like_the_in_memory_one(tmp_path, rng):
    """Train and save here; load in a fresh process and partial_fit: the same weights as
    this process's partial_fit (sgd without momentum: no optimizer state to lose)."""
    X, y = _blobs(rng)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(6,), solver="sgd", momentum=0.0,
                                 learning_rate_init=0.1, batch_size=16, random_state=0,
                                 dropout=0.4)
    model.partial_fit(X, y, classes=[0, 1, 2])
    model.save(tmp_path / "m.fbp")
    np.savez(tmp_path / "data.npz", X=X, y=y)
    model.partial_fit(X, y)
    script = tmp_path / "cont.py"
    script.write_text(_CONTINUE)
    out = run_python([str(script), str(tmp_path / "m.fbp"), str(tmp_path / "data.npz")],
                     timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert np.array_equal(np.array(json.loads(out.stdout.strip().splitlines()[-1])),
                          _params(model))


@pytest.mark.slow
def test_cli_dropout_flag(tmp_path, rng):
    X, y = _blobs(rng)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,y", comments="")
    out = run_python(["-m", "fastbp", "train", str(path), "--target", "y", "--hidden", "6,4",
                      "--epochs", "3", "--dropout", "0.1,0.3", "--out",
                      str(tmp_path / "m.fbp"), "-q"], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    model = fastbp.load(tmp_path / "m.fbp")
    assert list(model.dropout) == [0.1, 0.3] and model._dropout_step > 0
    info = run_python(["-m", "fastbp", "info", str(tmp_path / "m.fbp")], timeout=600)
    assert info.returncode == 0 and "dropout:    [0.1, 0.3]" in info.stdout, info.stdout
    for flags in (["--dropout", "1.5"], ["--dropout", "0.1,0.2,0.3"],
                  ["--dropout", "0.2", "--solver", "lbfgs"]):
        bad = run_python(["-m", "fastbp", "train", str(path), "--target", "y", *flags,
                          "--out", str(tmp_path / "n.fbp")], timeout=600)
        assert bad.returncode != 0 and "--dropout" in bad.stderr, bad.stderr
        assert not (tmp_path / "n.fbp").exists()
