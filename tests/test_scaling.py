"""Scaling inside the model (``scale='standard'``) and predict's training-range warning.

Fits are tiny float64 dense adam fits (kernels the suite compiles anyway).
"""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastbp
from fastbp import io
from fastbp.scaling import InputRangeWarning, InputStats

SMALL = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0)


@pytest.fixture
def raw(blobs):
    """blobs with columns on very different scales and offsets."""
    X, y = blobs
    return X * [1.0, 10.0, 1e3, 1e-2] + [0.0, 50.0, -4e3, 1.0], y


def _no_warnings(func, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return func(*args)


def test_input_stats_dense_sparse_and_merged(rng):
    X = rng.standard_normal((30, 4))
    X[X < 0.3] = 0.0
    stats = InputStats.of(X)
    np.testing.assert_allclose(stats.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, X.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(stats.min, X.min(axis=0))
    np.testing.assert_array_equal(stats.max, X.max(axis=0))
    sparse = InputStats.of(sp.csr_matrix(X))
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(getattr(sparse, name), getattr(stats, name), rtol=1e-12,
                                   atol=1e-15)
    merged = InputStats.of(X[:7]).merged(InputStats.of(X[7:]))
    assert merged.n_samples == 30
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(getattr(merged, name), getattr(stats, name), rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("cls", [fastbp.MLPClassifier, fastbp.MLPRegressor])
def test_scale_standard_is_a_standard_scaler_inside_the_model(cls, raw, tmp_path):
    X, y = raw
    inside = cls(**SMALL, scale="standard").fit(X, y)
    pipe = make_pipeline(StandardScaler(), cls(**SMALL)).fit(X, y)
    method = "predict_proba" if cls is fastbp.MLPClassifier else "predict"
    expected = getattr(pipe, method)(X)
    np.testing.assert_array_equal(_no_warnings(getattr(inside, method), X), expected)
    path = tmp_path / "scaled.fbp"
    inside.save(path)
    meta, arrays = io.read(path)
    assert meta["format_version"] == 2  # fastbp 0.1.0 refuses it rather than misreading it
    assert meta["params"]["scale"] == "standard"
    loaded = fastbp.load(path)
    np.testing.assert_array_equal(_no_warnings(getattr(loaded, method), X), expected)
    np.testing.assert_array_equal(loaded.scaler_.mean, inside.scaler_.mean)


def test_scale_is_frozen_by_the_first_fit(raw):
    X, y = raw
    model = fastbp.MLPClassifier(**SMALL, scale="standard")
    model.partial_fit(X[:40], y[:40], classes=np.unique(y))
    mean = model.scaler_.mean.copy()
    model.partial_fit(X[40:], y[40:])
    np.testing.assert_array_equal(model.scaler_.mean, mean)  # the weights' input space
    np.testing.assert_allclose(model.input_stats_.mean, X.mean(axis=0), rtol=1e-10)
    assert model.input_stats_.n_samples == len(X)
    plain = fastbp.MLPClassifier(**SMALL, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="scale='standard' was not set when this model"):
        plain.set_params(scale="standard").fit(X, y)
    assert plain.scaler_ is None  # the failed fit changed nothing


def test_scale_refuses_sparse_input(raw):
    X, y = raw
    with pytest.raises(ValueError, match="sparse X dense"):
        fastbp.MLPClassifier(**SMALL, scale="standard").fit(sp.csr_matrix(X), y)


def test_default_fit_records_statistics_and_file_keeps_version_1(raw, tmp_path):
    X, y = raw
    model = fastbp.MLPRegressor(**SMALL).fit(X, y)
    assert model.scaler_ is None
    np.testing.assert_array_equal(model.input_stats_.max, X.max(axis=0))
    model.save(tmp_path / "plain.fbp")
    meta, arrays = io.read(tmp_path / "plain.fbp")
    assert meta["format_version"] == 1 and "input_std" in arrays  # older fastbp reads it
    loaded = fastbp.load(tmp_path / "plain.fbp")
    np.testing.assert_array_equal(loaded.input_stats_.std, model.input_stats_.std)


def test_predict_warns_on_raw_features_after_training_on_standardized(raw, tmp_path):
    """The trap of issue 15: trained on standardized features, given raw ones."""
    pd = pytest.importorskip("pandas")
    X, y = raw
    columns = ["age", "income", "balance", "rate"]
    scaled = pd.DataFrame(StandardScaler().fit_transform(X), columns=columns)
    model = fastbp.MLPClassifier(**SMALL).fit(scaled, y)
    _no_warnings(model.predict, scaled)
    _no_warnings(model.predict, scaled * 3)  # within 10 training standard deviations
    path = tmp_path / "m.fbp"
    model.save(path)
    loaded = fastbp.load(path)
    for m in (model, loaded):
        with pytest.warns(InputRangeWarning, match=r"input column 'balance' has values down "
                                                   r"to -?[0-9.e+]+, [0-9.e+]+ training "
                                                   r"standard deviations below") as record:
            m.predict_proba(pd.DataFrame(X, columns=columns))
        message = str(record[0].message)
        assert "1 other column(s) too ('income')" in message  # 'age', 'rate': in range
        assert "scaled differently in training" in message
        assert record[0].filename == __file__  # points at the caller's line


def test_range_check_on_sparse_input_and_without_names(raw):
    X, y = raw
    X = np.abs(X)
    model = fastbp.MLPRegressor(**SMALL).fit(sp.csr_matrix(X), y)
    far = X.copy()
    far[0, 2] = X[:, 2].max() + 11 * X[:, 2].std()
    with pytest.warns(InputRangeWarning, match=r"^input column 2 has values up to"):
        model.predict(sp.csr_matrix(far))
    _no_warnings(model.predict, sp.csr_matrix(X))


def test_range_check_quiet_on_an_ordinary_split_of_real_data():
    """digits: some pixels are constant or rare in a training split and not in the test
    split; that is ordinary data, not a scale mismatch (fastbp demo must not warn)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    for seed in range(5):
        X_train, X_test = train_test_split(X / 16.0, test_size=0.25, stratify=y,
                                           random_state=seed)
        stats = InputStats.of(X_train)
        _no_warnings(stats.check, X_test)
        with pytest.warns(InputRangeWarning):  # the same pixels unscaled (0..16): caught
            stats.check(X_test * 16.0)
        for row in X_test[:3]:  # the few-rows path (a comparison) agrees
            _no_warnings(stats.check, row[None, :])
            with pytest.warns(InputRangeWarning):
                assert stats.check(row[None, :] * 16.0).size > 0
