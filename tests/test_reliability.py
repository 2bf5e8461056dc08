"""Reliability: bad input, divergence, interruption, threads, memory (issue 5)."""
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import fastbp
from fastbp import DivergenceError, DivergenceWarning

CHILD_ENV = {**os.environ, "PYTHONWARNINGS": "default"}


def _clf(**kw):
    kw.setdefault("max_iter", 3)
    return fastbp.MLPClassifier((4,), random_state=0, **kw)


def _reg(**kw):
    kw.setdefault("max_iter", 3)
    return fastbp.MLPRegressor(hidden_layer_sizes=(4,), random_state=0, **kw)


@pytest.fixture
def data(rng):
    X = rng.random((30, 3))
    y = np.arange(30) % 2
    yr = rng.random(30)
    return X, y, yr


def _with(a, value, index=0):
    a = np.array(a, dtype=float)
    a.flat[index] = value
    return a


def _object_none(X):
    Xo = X.astype(object)
    Xo[1, 2] = None
    return Xo


# (name, callable(X, y, yr), exception type, phrase of the message)
BAD_INPUT = [
    ("nan in X", lambda X, y, yr: _clf().fit(_with(X, np.nan), y), ValueError, "NaN"),
    ("inf in X", lambda X, y, yr: _clf().fit(_with(X, np.inf), y), ValueError, "infinity"),
    ("nan in y", lambda X, y, yr: _reg().fit(X, _with(yr, np.nan)), ValueError, "y contains NaN"),
    ("inf in y", lambda X, y, yr: _reg().fit(X, _with(yr, -np.inf)), ValueError, "infinity"),
    ("nan in sample_weight",
     lambda X, y, yr: _clf().fit(X, y, sample_weight=_with(np.ones(30), np.nan)),
     ValueError, "sample_weight contains NaN"),
    ("inf in sample_weight",
     lambda X, y, yr: _clf().fit(X, y, sample_weight=_with(np.ones(30), np.inf)),
     ValueError, "infinity"),
    ("X 1-D", lambda X, y, yr: _clf().fit(X[:, 0], y), ValueError, "Expected 2D array"),
    ("X 3-D", lambda X, y, yr: _clf().fit(X[:, :, None], y), ValueError, "dim 3"),
    ("no samples", lambda X, y, yr: _clf().fit(X[:0], y[:0]), ValueError, "0 sample(s)"),
    ("no features", lambda X, y, yr: _clf().fit(X[:, :0], y), ValueError, "0 feature(s)"),
    ("length mismatch", lambda X, y, yr: _clf().fit(X, y[:5]), ValueError,
     "inconsistent numbers of samples"),
    ("strings in X", lambda X, y, yr: _clf().fit(np.full((30, 3), "a"), y), ValueError,
     "could not convert string to float"),
    ("complex X", lambda X, y, yr: _clf().fit(X + 1j, y), ValueError, "Complex data not supported"),
    ("None in object X", lambda X, y, yr: _clf().fit(_object_none(X), y), ValueError, "NaN"),
    ("predict with other width", lambda X, y, yr: _clf().fit(X, y).predict(X[:, :2]),
     ValueError, "X has 2 features, but MLPClassifier is expecting 3 features"),
    ("predict before fit", lambda X, y, yr: _clf().predict(X), NotFittedError, "not fitted yet"),
    ("zero width", lambda X, y, yr: fastbp.MLPClassifier((4, 0)).fit(X, y), ValueError,
     "hidden_layer_sizes"),
    ("negative width", lambda X, y, yr: fastbp.MLPClassifier(-3).fit(X, y), ValueError,
     "hidden_layer_sizes"),
    ("learning rate <= 0", lambda X, y, yr: _clf(learning_rate_init=0.0).fit(X, y), ValueError,
     "'learning_rate_init' parameter"),
    ("learning rate NaN", lambda X, y, yr: _clf(learning_rate_init=np.nan).fit(X, y), ValueError,
     "'learning_rate_init' parameter"),
    ("alpha < 0", lambda X, y, yr: _clf(alpha=-1.0).fit(X, y), ValueError, "'alpha' parameter"),
    ("alpha NaN", lambda X, y, yr: _clf(alpha=np.nan).fit(X, y), ValueError, "'alpha' parameter"),
    ("tol < 0", lambda X, y, yr: _clf(tol=-1e-3).fit(X, y), ValueError, "'tol' parameter"),
    ("momentum > 1", lambda X, y, yr: _clf(momentum=1.5).fit(X, y), ValueError,
     "'momentum' parameter"),
    ("beta_1 = 1", lambda X, y, yr: _clf(beta_1=1.0).fit(X, y), ValueError, "'beta_1' parameter"),
    ("beta_2 NaN", lambda X, y, yr: _clf(beta_2=np.nan).fit(X, y), ValueError,
     "'beta_2' parameter"),
    ("validation_fraction = 1", lambda X, y, yr: _clf(validation_fraction=1.0).fit(X, y),
     ValueError, "'validation_fraction' parameter"),
    ("unknown activation", lambda X, y, yr: _clf(activation="swish").fit(X, y), ValueError,
     "'activation' parameter"),
    ("unknown activation in list",
     lambda X, y, yr: fastbp.MLPClassifier((3, 3), activation=["relu", "swish"]).fit(X, y),
     ValueError, "swish"),
    ("unknown solver", lambda X, y, yr: _clf(solver="newton").fit(X, y), ValueError,
     "'solver' parameter"),
    ("unknown loss", lambda X, y, yr: _reg(loss="gamma").fit(X, yr), ValueError,
     "'loss' parameter"),
    ("unknown backend", lambda X, y, yr: _clf(backend="cuda").fit(X, y), ValueError,
     "'backend' parameter"),
    ("batch_size < 1", lambda X, y, yr: _clf(batch_size=0).fit(X, y), ValueError,
     "'batch_size' parameter"),
    ("max_iter < 1", lambda X, y, yr: fastbp.MLPClassifier(max_iter=0).fit(X, y), ValueError,
     "'max_iter' parameter"),
    ("activation list too short",
     lambda X, y, yr: fastbp.MLPClassifier((3, 3), activation=["tanh"]).fit(X, y),
     ValueError, "one name per hidden layer"),
]
# Unseen labels in partial_fit and bad sample weights (shape, sign, all zero): test_inputs.py.


@pytest.mark.parametrize("name,call,exc,phrase", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_named(data, name, call, exc, phrase):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as info:
            call(*data)
    assert phrase in str(info.value)


def _snapshot(model):
    return ([c.copy() for c in model.coefs_], [b.copy() for b in model.intercepts_],
            model.n_iter_, list(model.loss_curve_))


def _same(a, b):
    return (all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
            and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))
            and a[2:] == b[2:])


def _diverging_data(rng):
    X = rng.random((200, 3)) * 1e3
    return X, X @ np.array([1.0, 2.0, 3.0])


def test_divergence_rolls_back_to_last_finite_epoch(rng):
    X, y = _diverging_data(rng)
    model = fastbp.MLPRegressor(hidden_layer_sizes=(8,), activation="identity", solver="sgd",
                                learning_rate_init=0.1, max_iter=50, random_state=0)
    with pytest.warns(DivergenceWarning, match="lower learning_rate_init"):
        model.fit(X, y)
    assert 0 < model.n_iter_ < 50
    assert len(model.loss_curve_) == model.n_iter_
    assert np.isfinite(model.loss_curve_).all()
    assert all(np.isfinite(c).all() for c in model.coefs_ + model.intercepts_)
    assert np.isfinite(model.predict(X)).all()


def test_divergence_in_first_epoch_raises_and_keeps_fitted_model(rng):
    X, y = _diverging_data(rng)
    model = fastbp.MLPRegressor(hidden_layer_sizes=(8,), activation="identity", solver="sgd",
                                learning_rate_init=1e-12, max_iter=2, batch_size=10,
                                random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    before = _snapshot(model)
    model.set_params(learning_rate_init=1e6, warm_start=True)
    with pytest.raises(DivergenceError, match="non-finite"):
        model.fit(X, y)
    assert _same(before, _snapshot(model))


@pytest.mark.parametrize("warm_start", [False, True])
def test_failed_fit_leaves_fitted_model_unchanged(data, warm_start):
    X, y, _ = data
    model = _clf(warm_start=warm_start, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    before = _snapshot(model)
    classes = model.classes_.copy()
    with pytest.raises(ValueError):
        model.fit(_with(X, np.nan), y)
    with pytest.raises(ValueError):
        model.fit(X, y, sample_weight=-np.ones(30))
    assert _same(before, _snapshot(model))
    assert np.array_equal(classes, model.classes_)


def test_keyboard_interrupt_from_callback_keeps_usable_model(data):
    X, y, _ = data

    def stop_at_three(info):
        if info.epoch == 3:
            raise KeyboardInterrupt

    model = _clf(max_iter=50, callbacks=stop_at_three)
    with pytest.warns(UserWarning, match="interrupted by user"):
        model.fit(X, y)
    assert model.n_iter_ == 3
    assert len(model.loss_curve_) == 3
    assert len(model.history_["loss"]) == 3
    assert model.predict(X).shape == (30,)


@pytest.mark.slow
def test_sigint_in_child_process_stops_training_cleanly(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, fastbp
        rng = np.random.default_rng(0)
        X = rng.random((2000, 20)); y = (X[:, 0] > 0.5).astype(int)
        def tick(info):
            print("epoch", info.epoch, flush=True)
        m = fastbp.MLPClassifier((32,), max_iter=100000, tol=0, n_iter_no_change=10**9,
                                 learning_rate_init=0.03, callbacks=tick, random_state=0)
        m.fit(X, y)
        print("DONE", m.n_iter_, len(m.loss_curve_), m.score(X, y),
              m.loss_curve_[-1] / m.loss_curve_[0], flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CHILD_ENV)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 5"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    done = [ln for ln in out.splitlines() if ln.startswith("DONE")]
    assert done, out
    _, n_iter, n_curve, accuracy, loss_ratio = done[0].split()
    assert n_iter == n_curve and int(n_iter) >= 5
    # the kept weights are trained ones: 5 epochs reach ~95% (chance is 50%)
    assert float(accuracy) >= 0.9 and float(loss_ratio) < 0.5
    assert "interrupted by user" in err


def test_repeated_fits_do_not_grow_memory(data):
    X, y, _ = data

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _clf(max_iter=2).fit(X, y).predict(X)

    for _ in range(20):
        fit()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            fit()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 2 * 2**20, f"memory grew by {grown} bytes over 200 fits"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fit_does_not_copy_contiguous_X(rng, dtype):
    X = np.ascontiguousarray(rng.random((40000, 50)), dtype=dtype)
    y = (X[:, 0] > 0.5).astype(int)
    model = fastbp.MLPClassifier((16,), max_iter=1, batch_size=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[:200], y[:200])  # compile outside the measurement
        tracemalloc.start()
        try:
            model.fit(X, y)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert model.coefs_[0].dtype == dtype
    assert peak < 0.5 * X.nbytes, f"fit allocated {peak} bytes for X of {X.nbytes}"
