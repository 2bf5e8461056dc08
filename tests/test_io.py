"""Model files: round trips, corruption, foreign and future files, atomic saves, pickle."""
import json
import os
import pickle
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import ModelFileError
from fastbp import io as fio


def _fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


@pytest.fixture
def classifier(rng):
    X = rng.random((60, 4))
    y = np.array(["cat", "dog", "eel"])[np.arange(60) % 3]
    return _fit(fastbp.MLPClassifier((5, 3), activation=["tanh", "relu"], max_iter=5,
                                     random_state=0), X, y), X, y


def _same_predictions(a, b, X):
    if hasattr(a, "predict_proba"):
        assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.predict(X), b.predict(X))


def test_classifier_round_trip(tmp_path, classifier):
    model, X, _ = classifier
    path = tmp_path / "m.fbp"
    model.save(path)
    loaded = fastbp.load(path)
    _same_predictions(model, loaded, X)
    assert list(loaded.classes_) == ["cat", "dog", "eel"]
    assert loaded._hidden_acts_ == ["tanh", "relu"]
    assert loaded.n_iter_ == model.n_iter_
    assert loaded.loss_curve_ == pytest.approx(model.loss_curve_)
    assert loaded.get_params()["hidden_layer_sizes"] == (5, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regressor_round_trip_keeps_dtype_and_feature_names(tmp_path, rng, dtype):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(rng.random((40, 3)).astype(dtype), columns=["a", "b", "c"])
    y = rng.random((40, 2))
    model = _fit(fastbp.MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0), X, y)
    path = tmp_path / "r.fbp"
    model.save(path)
    loaded = fastbp.load(path)
    assert loaded.coefs_[0].dtype == dtype
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    _same_predictions(model, loaded, X)


def test_multilabel_and_binary_round_trip(tmp_path, rng):
    X = rng.random((50, 3))
    for y in ((X[:, :2] > 0.5).astype(int), (X[:, 0] > 0.5)):
        model = _fit(fastbp.MLPClassifier((4,), max_iter=3, random_state=0), X, y)
        model.save(tmp_path / "x.fbp")
        _same_predictions(model, fastbp.load(tmp_path / "x.fbp"), X)


def test_loaded_model_can_keep_training(tmp_path, classifier):
    model, X, y = classifier
    model.save(tmp_path / "m.fbp")
    loaded = fastbp.load(tmp_path / "m.fbp")
    loaded.set_params(warm_start=True, max_iter=2)
    _fit(loaded, X, y)
    assert loaded.n_iter_ == 2


def test_truncated_file_is_named(tmp_path, classifier):
    model, _, _ = classifier
    path = tmp_path / "m.fbp"
    model.save(path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) - 5):
        bad = tmp_path / f"cut{cut}.fbp"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=str(bad.name)):
            fastbp.load(bad)


def test_flipped_bytes_never_load_a_different_model(tmp_path, rng, classifier):
    model, X, _ = classifier
    path = tmp_path / "m.fbp"
    model.save(path)
    data = bytearray(path.read_bytes())
    errors = 0
    for pos in rng.choice(len(data), size=60, replace=False):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        bad = tmp_path / "flip.fbp"
        bad.write_bytes(bytes(flipped))
        try:
            loaded = fastbp.load(bad)
        except ModelFileError as exc:
            assert "flip.fbp" in str(exc)
            errors += 1
        else:  # a byte the format does not use (zip padding, timestamps): same model
            _same_predictions(model, loaded, X)
    assert errors > 30


def test_foreign_files_are_refused(tmp_path):
    text = tmp_path / "notes.fbp"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="notes.fbp"):
        fastbp.load(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    with pytest.raises(ModelFileError, match="not a fastbp model file"):
        fastbp.load(plain)
    with pytest.raises(ModelFileError, match="no such file"):
        fastbp.load(tmp_path / "missing.fbp")


def _rewrite_meta(path, out, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    change(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out, **arrays)


def test_newer_format_version_is_refused(tmp_path, classifier):
    model, _, _ = classifier
    model.save(tmp_path / "m.fbp")
    future = tmp_path / "future.npz"
    _rewrite_meta(tmp_path / "m.fbp", future,
                  lambda meta: meta.update(format_version=fio.FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="Upgrade fastbp"):
        fastbp.load(future)


def test_inconsistent_metadata_is_refused(tmp_path, classifier):
    model, _, _ = classifier
    model.save(tmp_path / "m.fbp")
    bad = tmp_path / "bad.npz"
    _rewrite_meta(tmp_path / "m.fbp", bad, lambda meta: meta.update(n_features_in=99))
    with pytest.raises(ModelFileError, match="inconsistent"):
        fastbp.load(bad)


def test_files_holding_pickles_are_refused(tmp_path):
    evil = tmp_path / "evil.fbp"
    np.savez(evil, meta=np.array([{"format": "fastbp-model"}], dtype=object))
    with pytest.raises(ModelFileError):
        fastbp.load(evil)


def test_failed_save_keeps_previous_file(tmp_path, classifier, monkeypatch):
    model, X, _ = classifier
    path = tmp_path / "m.fbp"
    model.save(path)
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio.np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.fbp"]


def test_save_requires_fitted_model(tmp_path):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        fastbp.MLPClassifier().save(tmp_path / "x.fbp")


def test_pickle_round_trip(classifier):
    model, X, _ = classifier
    _same_predictions(model, pickle.loads(pickle.dumps(model)), X)
