"""Fuzzing fit/predict/partial_fit: a clean, named exception or a finite model."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp

SPECIAL = [0.0, 1.0, -1.0, 1e300, -1e300, 5e-324, 1e-310, 1e30, 3.0]


@st.composite
def problems(draw):
    n = draw(st.integers(1, 30))
    d = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    kind = draw(st.sampled_from(["normal", "constant", "special", "tiny", "huge"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        X = rng.standard_normal((n, d))
    elif kind == "constant":
        X = np.full((n, d), draw(st.sampled_from(SPECIAL)))
    elif kind == "special":
        X = rng.choice(SPECIAL, size=(n, d))
    elif kind == "tiny":
        X = rng.standard_normal((n, d)) * 1e-310
    else:
        X = rng.standard_normal((n, d)) * 1e200
    with np.errstate(over="ignore"):
        X = X.astype(dtype)
    n_classes = draw(st.integers(1, 12))
    y = rng.integers(0, n_classes, n)
    task = draw(st.sampled_from(["classify", "regress"]))
    if task == "regress":
        y = rng.choice(SPECIAL, size=n) if kind == "special" else rng.standard_normal(n)
    params = dict(
        hidden_layer_sizes=tuple(draw(st.lists(st.integers(1, 8), min_size=0, max_size=2))),
        solver=draw(st.sampled_from(["sgd", "adam", "lbfgs"])),
        batch_size=draw(st.sampled_from(["auto", 1, 7])),
        max_iter=draw(st.integers(1, 3)),
        random_state=0,
    )
    return X, y, task, params


ALLOWED = (ValueError, TypeError)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fit_predict_is_clean_or_finite(problem):
    X, y, task, params = problem
    cls = fastbp.MLPClassifier if task == "classify" else fastbp.MLPRegressor
    model = cls(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(X, y)
        except ALLOWED as exc:
            assert str(exc), "exceptions must say what is wrong"
            return
        for c in model.coefs_ + model.intercepts_:
            assert np.isfinite(c).all()
            assert c.dtype == X.dtype
        with np.errstate(all="ignore"):
            pred = model.predict(X)
        assert pred.shape[0] == X.shape[0]
        if task == "classify":
            assert set(np.unique(pred)) <= set(np.unique(y))
            proba = model.predict_proba(X)
            # one class: scikit-learn's convention (kept) is two columns, [1 - p, p]
            assert proba.shape == (X.shape[0], max(2, len(model.classes_)))
            assert np.isfinite(proba).all()
        if model.solver != "lbfgs":
            try:
                model.partial_fit(X, y)
            except ALLOWED as exc:
                assert str(exc)
            else:
                assert all(np.isfinite(c).all() for c in model.coefs_)


@pytest.mark.parametrize("n_classes", [2, 50])
def test_many_classes_single_feature(rng, n_classes):
    X = rng.standard_normal((200, 1))
    y = rng.integers(0, n_classes, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fastbp.MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    assert model.predict_proba(X).shape == (200, len(np.unique(y)))
    assert np.allclose(model.predict_proba(X).sum(axis=1), 1)
