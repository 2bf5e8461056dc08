"""Writes the model-file fixtures of ``test_io_old_files.py``; run ONCE per format release.

The files in this folder were written by fastbp 0.1.0 (model format version 1)
with ``python tests/data/make_model_files.py``.  They must never be rewritten by
a later version: their point is that files written by an older fastbp keep
loading and predicting the same.  A new release that changes the writer adds
files of its own (``model_v<version>_*``) beside these.
"""
import pathlib
import warnings

import numpy as np

import fastbp

HERE = pathlib.Path(__file__).resolve().parent


def main():
    version = fastbp.__version__.replace(".", "_")
    rng = np.random.default_rng(20261130)
    X = rng.standard_normal((30, 4))
    y = np.array(["cat", "dog", "eel"])[rng.integers(0, 3, 30)]
    Xr = rng.standard_normal((30, 3)).astype(np.float32)
    yr = np.column_stack([Xr[:, 0] - Xr[:, 1], Xr[:, 2] ** 2]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fastbp.MLPClassifier((5, 3), activation=["tanh", "relu"], solver="sgd",
                                   max_iter=5, random_state=0).fit(X, y)
        reg = fastbp.MLPRegressor("huber", (4,), activation="logistic", max_iter=5,
                                  random_state=0).fit(Xr, yr)
    for name, model, data in (("classifier", clf, X), ("regressor", reg, Xr)):
        stem = f"model_v{version}_{name}"
        model.save(HERE / f"{stem}.fbp")
        np.save(HERE / f"{stem}_X.npy", data)
        np.save(HERE / f"{stem}_predict.npy", model.predict(data))
        if hasattr(model, "predict_proba"):
            np.save(HERE / f"{stem}_predict_proba.npy", model.predict_proba(data))


if __name__ == "__main__":
    main()
