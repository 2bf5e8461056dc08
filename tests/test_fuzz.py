"""Fuzzing fit/predict/partial_fit: a finite model, or an exception that names a real
problem of the generated input (never one on ordinary input)."""
import re
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


# Beyond this size activations and squared errors overflow within an epoch, so
# divergence is a fair answer; the generator's values are either <= 3 or >= 1e30.
LARGE = 1e20


def legitimate_errors(X, y, task):
    """[(exception type, message pattern)] that name a real problem of this input.

    Ordinary input (finite, moderate values) admits none: fit must succeed.
    """
    if not np.isfinite(X).all():                 # overflowed in the cast to float32
        return [(ValueError, r"Input X contains infinity")]
    big = np.abs(X).max(initial=0.0) > LARGE
    if task == "regress":
        big = big or np.abs(y).max(initial=0.0) > LARGE
    if big:
        return [(fastbp.DivergenceError, r"diverged: the loss or a parameter became non-finite"),
                (ValueError, r"non-finite parameter weights")]
    return []


def check_error(exc, allowed, what):
    """Re-raise ``exc`` unless it is one of ``allowed`` (see legitimate_errors)."""
    for kind, pattern in allowed:
        if isinstance(exc, kind) and re.search(pattern, str(exc)):
            return
    raise AssertionError(f"{what} failed on input that admits no such error "
                         f"(allowed: {allowed}): {type(exc).__name__}: {exc}") from exc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fit_predict_is_clean_or_finite(problem):
    X, y, task, params = problem
    allowed = legitimate_errors(X, y, task)
    cls = fastbp.MLPClassifier if task == "classify" else fastbp.MLPRegressor
    model = cls(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fit(X, y)
        except Exception as exc:  # noqa: BLE001 - judged by check_error
            check_error(exc, allowed, "fit")
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
            # inputs beyond LARGE may overflow the pre-activations of finite weights
            assert np.isfinite(proba).all() or allowed
        if model.solver != "lbfgs":
            try:
                model.partial_fit(X, y)
            except Exception as exc:  # noqa: BLE001 - judged by check_error
                check_error(exc, allowed, "partial_fit")
            else:
                assert all(np.isfinite(c).all() for c in model.coefs_)


def test_ordinary_input_admits_no_error():
    """Guard for the test above: the judge refuses errors on ordinary input."""
    X = np.ones((5, 2))
    assert legitimate_errors(X, np.arange(5.0), "regress") == []
    assert legitimate_errors(X * 1e-310, np.arange(5) % 2, "classify") == []
    with pytest.raises(AssertionError, match="admits no such error"):
        check_error(ValueError("anything at all"), [], "fit")
    assert legitimate_errors(X * 1e200, np.arange(5.0), "regress")
    assert legitimate_errors(np.full((5, 2), np.inf, np.float32), np.arange(5.0), "regress")


@pytest.mark.parametrize("n_classes", [2, 50])
def test_many_classes_single_feature(rng, n_classes):
    X = rng.standard_normal((200, 1))
    y = rng.integers(0, n_classes, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fastbp.MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    assert model.predict_proba(X).shape == (200, len(np.unique(y)))
    assert np.allclose(model.predict_proba(X).sum(axis=1), 1)
