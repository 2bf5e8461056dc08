"""ONNX export: onnxruntime reproduces predict and predict_proba (1e-12 float64, 1e-6 float32).

Every hidden activation, per-layer activations, both dtypes, multiclass (string labels),
binary (integer labels), multilabel, multi-output regression with a Huber loss and
``scale='standard'``.  Tiny fits of 5 epochs.
"""
import numpy as np
import pytest

import fastbp
from fastbp.onnx import to_onnx
from helpers import assert_close

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
TOL = {np.float64: 1e-12, np.float32: 1e-6}
ACTIVATIONS = ["identity", "logistic", "tanh", "relu", "leaky_relu", "softplus",
               ["softplus", "leaky_relu"]]


def _session(model):
    return ort.InferenceSession(to_onnx(model).SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _targets(X):
    return {"multiclass": np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > .5)],
            "binary": (X[:, 0] > 0).astype(int) * 3 + 1,
            "multilabel": np.c_[X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > 0].astype(int)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_classifier_matches_onnxruntime(dtype, activation, rng):
    X = rng.standard_normal((40, 4)).astype(dtype)
    hidden = (6, 5) if isinstance(activation, list) else (6,)
    for kind, y in _targets(X).items():
        model = fastbp.MLPClassifier(hidden_layer_sizes=hidden, activation=activation,
                                     max_iter=5, random_state=0).fit(X, y)
        label, proba = _session(model).run(None, {"X": X})
        assert proba.dtype == dtype
        assert_close(proba, model.predict_proba(X), tol=TOL[dtype], what=kind)
        np.testing.assert_array_equal(label, model.predict(X), err_msg=kind)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_regressor_with_scaler_matches_onnxruntime(dtype, activation, rng):
    X = (rng.standard_normal((40, 3)) * [1, 100, 1e-3] + [0, 500, 2]).astype(dtype)
    Y = np.c_[X[:, 0], X[:, 1] / 100]
    model = fastbp.MLPRegressor(loss="huber", hidden_layer_sizes=(6,), activation=activation,
                                max_iter=5, random_state=0, scale="standard").fit(X, Y)
    (values,) = _session(model).run(None, {"X": X})
    assert_close(values, model.predict(X), tol=TOL[dtype])


def test_saved_file_loads_in_onnxruntime(tmp_path, rng):
    import onnx
    X = rng.standard_normal((20, 3))
    model = fastbp.MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    model.fit(X, X[:, 0])
    onnx.save(to_onnx(model), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (values,) = session.run(None, {"X": X})
    assert_close(values.ravel(), model.predict(X))


def test_skl2onnx_converts_pipelines_with_fastbp(rng):
    """register_converters: skl2onnx converts a Pipeline ending in a fastbp estimator."""
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fastbp.onnx import register_converters
    register_converters()
    X = rng.standard_normal((40, 4)) * [1, 10, 100, 1000]
    targets = _targets(X)
    for dtype in (np.float64, np.float32):
        Xd = X.astype(dtype)
        for kind in ("multiclass", "binary"):
            pipe = make_pipeline(StandardScaler(), fastbp.MLPClassifier(
                hidden_layer_sizes=(6,), activation="tanh", max_iter=5, random_state=0))
            pipe.fit(Xd, targets[kind])
            onx = skl2onnx.to_onnx(pipe, Xd[:1], options={"zipmap": False})
            session = ort.InferenceSession(onx.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
            label, proba = session.run(None, {session.get_inputs()[0].name: Xd})
            np.testing.assert_array_equal(label, pipe.predict(Xd))
            # StandardScaler's ONNX graph computes (x - mean) * (1 / scale): a few ulp apart
            assert_close(proba, pipe.predict_proba(Xd), tol=1e3 * TOL[dtype], what=kind)
        reg = fastbp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0,
                                  scale="standard").fit(Xd, X[:, :2] / [1, 10])
        onx = skl2onnx.to_onnx(reg, Xd[:1])
        session = ort.InferenceSession(onx.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        (values,) = session.run(None, {session.get_inputs()[0].name: Xd})
        assert_close(values, reg.predict(Xd), tol=TOL[dtype])


def test_skl2onnx_zipmap_and_nocl_options(rng):
    skl2onnx = pytest.importorskip("skl2onnx")
    from fastbp.onnx import register_converters
    register_converters()
    X = rng.standard_normal((30, 3)).astype(np.float32)  # ZipMap takes float32 only
    y = _targets(X)["multiclass"]
    model = fastbp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    expected = model.predict_proba(X)
    for options in (None, {"nocl": True, "zipmap": False}):
        onx = skl2onnx.to_onnx(model, X[:1], options=options)
        session = ort.InferenceSession(onx.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        label, proba = session.run(None, {session.get_inputs()[0].name: X})
        if options is None:  # zipmap: one {class: probability} dict per row
            proba = np.array([[row[c] for c in model.classes_] for row in proba])
            np.testing.assert_array_equal(label, model.predict(X))
        else:  # nocl: indices into classes_
            np.testing.assert_array_equal(model.classes_[label], model.predict(X))
        assert_close(proba, expected, tol=TOL[np.float32])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shortcut_connections_match_onnxruntime(dtype, rng):
    X = rng.standard_normal((40, 4)).astype(dtype)
    y = _targets(X)["multiclass"]
    for connections in ("shortcut", {3: [0, 2]}, {2: [0], 3: [1, 2]}):
        model = fastbp.MLPClassifier(hidden_layer_sizes=(6, 5), activation=["tanh", "relu"],
                                     connections=connections, max_iter=5,
                                     random_state=0).fit(X, y)
        assert model.skip_coefs_  # the blocks are exported, not dropped
        label, proba = _session(model).run(None, {"X": X})
        assert_close(proba, model.predict_proba(X), tol=TOL[dtype], what=str(connections))
        np.testing.assert_array_equal(label, model.predict(X))
