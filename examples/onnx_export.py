"""Export a fitted fastbp model to ONNX and run it with onnxruntime.

    python examples/onnx_export.py [OUT.onnx]

Needs onnx and onnxruntime (from a fastbp checkout: ``pip install ".[onnx]"``); without
them the example says so and exits.  The model standardizes its inputs itself
(``scale="standard"``), so the ONNX graph takes raw features too.
"""
import os
import sys
import tempfile


def main(out=None):
    try:
        import onnx
        import onnxruntime
    except ImportError:
        print("onnx or onnxruntime is not installed: skipping the export (pip install onnx "
              "onnxruntime, or from a fastbp checkout: pip install \".[onnx]\").")
        return None
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    import fastbp

    data = load_breast_cancer()
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target_names[data.target], random_state=0)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, early_stopping=True,
                                 random_state=0, scale="standard").fit(X_train, y_train)
    if out is None:
        out = os.path.join(tempfile.mkdtemp(prefix="fastbp-"), "breast_cancer.onnx")
    onnx.save(fastbp.to_onnx(model), out)
    session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"X": X_test})
    same = np.array_equal(labels, model.predict(X_test))
    diff = float(np.abs(probabilities - model.predict_proba(X_test)).max())
    print(f"test accuracy: {model.score(X_test, y_test):.4f}")
    print(f"wrote {out}")
    print(f"onnxruntime: same labels: {same}; largest probability difference {diff:.3g}")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
