"""Model files written by earlier fastbp versions still load and predict the same.

The fixtures in ``tests/data`` were written once by the version in their name
(``tests/data/make_model_files.py``) and are never rewritten.
"""
import pathlib

import numpy as np
import pytest

import fastbp

DATA = pathlib.Path(__file__).resolve().parent / "data"
FILES = sorted(p.stem for p in DATA.glob("model_v*.fbp"))


def test_fixtures_exist():
    assert "model_v0_1_0_classifier" in FILES and "model_v0_1_0_regressor" in FILES


@pytest.mark.parametrize("stem", FILES)
def test_old_model_file_loads_and_predicts_the_same(stem):
    model = fastbp.load(DATA / f"{stem}.fbp")
    X = np.load(DATA / f"{stem}_X.npy")
    pred = model.predict(X)
    expected = np.load(DATA / f"{stem}_predict.npy")
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(pred, expected, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(pred, expected)
    proba = DATA / f"{stem}_predict_proba.npy"
    if proba.exists():
        np.testing.assert_allclose(model.predict_proba(X), np.load(proba), rtol=1e-9,
                                   atol=1e-12)
    assert model.coefs_[0].dtype == X.dtype


def test_old_model_file_keeps_training():
    model = fastbp.load(DATA / "model_v0_1_0_classifier.fbp")
    X = np.load(DATA / "model_v0_1_0_classifier_X.npy")
    y = model.predict(X)
    n_iter = model.n_iter_
    model.partial_fit(X, y)
    assert model.n_iter_ == 1 and n_iter == 5
    assert np.isfinite(model.predict_proba(X)).all()
