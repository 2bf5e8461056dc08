"""What one process does in the life of a model (run by tests/test_cache_lifecycle.py).

``python lifecycle_child.py write DIR``: train and save models and data in DIR, and
compute nothing else (no predict).
``python lifecycle_child.py call DIR METHOD LOADER DTYPE SPARSE``: load a model as a
user would and make METHOD the process's first compiled call; print its result
as one JSON line.  The test computes the same with :func:`perform` in its own
process and compares.
"""
import json
import os
import pickle
import sys
import warnings

import numpy as np
import scipy.sparse as sp

N_FEATURES = 4


def data(dtype, sparse, n=60, seed=0):
    """A small seeded classification/regression problem (some exact zeros for CSR)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_FEATURES))
    X[rng.random(X.shape) < 0.3] = 0.0
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    t = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1
    X = X.astype(dtype)
    return (sp.csr_matrix(X) if sparse else X), y, t


def write(root):
    import joblib

    import fastbp

    warnings.simplefilter("ignore")
    for dtype in ("float64", "float32"):
        X, y, t = data(dtype, sparse=False)
        models = {
            "clf": fastbp.MLPClassifier((5,), solver="adam", max_iter=5, random_state=0),
            # 16 hidden units from 4 inputs on 60 rows: the forward pass's outer-product form
            "reg": fastbp.MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", max_iter=5,
                                       random_state=0),
        }
        for name, model in models.items():
            model.fit(X, y if name == "clf" else t)
            stem = os.path.join(root, f"{name}_{dtype}")
            model.save(stem + ".fbp")
            with open(stem + ".pkl", "wb") as fh:
                pickle.dump(model, fh)
            joblib.dump(model, stem + ".joblib")
    X, _, _ = data("float64", sparse=False, n=7, seed=1)
    np.savetxt(os.path.join(root, "new.csv"), X, delimiter=",",
               header=",".join(f"x{i}" for i in range(N_FEATURES)), comments="")


def load(root, kind, dtype, loader):
    import joblib

    import fastbp

    stem = os.path.join(root, f"{kind}_{dtype}")
    if loader == "fbp":
        return fastbp.load(stem + ".fbp")
    if loader == "pickle":
        with open(stem + ".pkl", "rb") as fh:
            return pickle.load(fh)
    return joblib.load(stem + ".joblib")


def _flat(model):
    return np.concatenate([a.ravel() for a in model.coefs_ + model.intercepts_]).tolist()


def perform(root, method, loader, dtype, sparse):
    """The result of METHOD as plain lists and floats (JSON-able)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # only the expected one: max_iter is tiny
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _perform(root, method, loader, dtype, sparse)


def _perform(root, method, loader, dtype, sparse):
    import fastbp

    X, y, t = data(dtype, sparse, n=9, seed=2)
    if method.startswith("fit-"):
        solver = method[4:]
        model = fastbp.MLPClassifier((5,), solver=solver, max_iter=4, random_state=1,
                                     learning_rate_init=0.05)
        return _flat(model.fit(X, y))
    if method == "regressor-predict":
        return load(root, "reg", dtype, loader).predict(X).tolist()
    model = load(root, "clf", dtype, loader)
    if method in ("predict", "predict_proba", "predict_log_proba"):
        return np.asarray(getattr(model, method)(X)).tolist()
    if method == "score":
        return float(model.score(X, y))
    if method == "partial_fit":
        return _flat(model.partial_fit(X, y))
    Y = np.eye(len(model.classes_))[np.searchsorted(model.classes_, y)]
    kw = dict(activation=model.activation, out_activation=model.out_activation_,
              loss="log_loss", alpha=model.alpha)
    if method == "loss_and_gradient":
        loss, gw, gb = fastbp.loss_and_gradient(model.coefs_, model.intercepts_, X, Y, **kw)
        return [float(loss)] + np.concatenate([g.ravel() for g in gw + gb]).tolist()
    if method == "check_gradients":
        check = fastbp.check_gradients(model.coefs_, model.intercepts_, X, Y, **kw)
        return check.analytic.tolist() + [check.max_rel_error < 1e-5]
    raise ValueError(f"unknown method {method!r}")


def dask_client(root):
    """Train on two dask worker processes, then predict on the client: the client's first
    compiled call is ``Incremental.predict`` (a NumPy array is predicted in place).
    Prints the predictions and saves the trained model for the test to check them."""
    import dask.array as da
    import distributed
    from dask_ml.wrappers import Incremental

    import fastbp

    warnings.simplefilter("ignore")
    X, y, _ = data("float64", sparse=False, n=120, seed=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        inc = Incremental(fastbp.MLPClassifier((5,), random_state=0, n_jobs=1),
                          random_state=0, shuffle_blocks=False)
        inc.fit(da.from_array(X, chunks=40), da.from_array(y, chunks=40), classes=[0, 1, 2])
        pred = inc.predict(X)
    inc.estimator_.save(os.path.join(root, "dask_trained.fbp"))
    print(json.dumps(np.asarray(pred).tolist()))


def main(argv):
    if argv[0] == "write":
        write(argv[1])
        return
    if argv[0] == "dask":
        dask_client(argv[1])
        return
    root, method, loader, dtype, sparse = argv[1:6]
    print(json.dumps(perform(root, method, loader, dtype, sparse == "sparse")))


if __name__ == "__main__":
    main(sys.argv[1:])
