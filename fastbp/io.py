"""Model files: a documented, versioned, portable format loaded without pickle.

A ``.fbp`` file is a NumPy ``.npz`` archive (a zip) holding only plain arrays:

* ``coef_<l>`` (n_in, n_out) and ``intercept_<l>`` (n_out,) per layer, in the
  model dtype (float32 or float64);
* ``classes`` (classifiers: integer, float, bool or unicode array);
* ``meta`` -- UTF-8 JSON as a uint8 array: ``format`` ("fastbp-model"),
  ``format_version``, ``fastbp_version``, ``estimator`` (class name),
  ``params`` (constructor parameters), ``n_features_in``, ``feature_names_in``,
  ``out_activation``, ``hidden_activations``, ``dtype``, ``n_iter``, ``loss``,
  ``loss_curve``, ``history``, label-binarizer fields.

It is read with ``allow_pickle=False``: a file cannot run code.  Saving is
atomic (temporary file in the same folder, fsync, rename): a crash or a full
disk during ``save`` never destroys the previous file.  Pickle also works.
"""
import json
import os
import tempfile

import numpy as np
from sklearn.preprocessing import LabelBinarizer

from . import __version__

FORMAT = "fastbp-model"
FORMAT_VERSION = 1

__all__ = ["save", "load", "ModelFileError", "FORMAT_VERSION"]


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted, foreign or too new."""


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # callables, RandomState instances: not stored


def save(model, path):
    """Write a fitted fastbp estimator to ``path`` atomically."""
    from sklearn.utils.validation import check_is_fitted
    check_is_fitted(model)
    arrays = {}
    for l, (c, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        arrays[f"coef_{l}"] = np.ascontiguousarray(c)
        arrays[f"intercept_{l}"] = np.ascontiguousarray(b)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastbp_version": __version__,
        "estimator": type(model).__name__,
        "params": {k: _jsonable(v) for k, v in model.get_params().items()
                   if k not in ("callbacks",)},
        "n_layers": len(model.coefs_),
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": _jsonable(getattr(model, "feature_names_in_", None)),
        "out_activation": model.out_activation_,
        "hidden_activations": list(model._hidden_acts_),
        "dtype": str(model.coefs_[0].dtype),
        "n_outputs": int(model.n_outputs_),
        "n_iter": int(model.n_iter_),
        "t": int(getattr(model, "t_", 0)),
        "loss": _jsonable(getattr(model, "loss_", None)),
        "loss_curve": _jsonable(getattr(model, "loss_curve_", None)),
        "validation_scores": _jsonable(getattr(model, "validation_scores_", None)),
        "history": _jsonable(getattr(model, "history_", None)),
    }
    if hasattr(model, "classes_"):
        classes = np.asarray(model.classes_)
        if classes.dtype == object:
            try:
                classes = classes.astype(str)
            except (TypeError, ValueError) as exc:
                raise ValueError("class labels must be numbers or strings to be saved") from exc
        arrays["classes"] = classes
        lb = model._label_binarizer
        meta["label_binarizer"] = {"y_type": lb.y_type_, "neg_label": int(lb.neg_label),
                                   "pos_label": int(lb.pos_label),
                                   "classes_dtype": str(np.asarray(model.classes_).dtype)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fbp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems cannot fsync a folder
        pass
    return path


def _read(path):
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                raise ModelFileError(f"{path}: not a fastbp model file (not an npz archive)")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                files = set(npz.files)
                if "meta" not in files:
                    raise ModelFileError(f"{path}: not a fastbp model file (no 'meta' entry)")
                data = {k: npz[k] for k in files}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except ModelFileError:
        raise
    except Exception as exc:  # zipfile/numpy raise many types on damaged input
        raise ModelFileError(f"{path}: unreadable, truncated or corrupted model file "
                             f"({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(data.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: corrupted metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a fastbp model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in model format version {version} by fastbp "
                             f"{meta.get('fastbp_version')}; this fastbp ({__version__}) reads "
                             f"up to version {FORMAT_VERSION}. Upgrade fastbp to load it.")
    return meta, data


def load(path):
    """Read a model written by :func:`save`; returns a fitted estimator."""
    from .estimators import MLPClassifier, MLPRegressor
    path = os.fspath(path)
    meta, data = _read(path)
    try:
        cls = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[meta["estimator"]]
        n_layers = int(meta["n_layers"])
        coefs = [data[f"coef_{l}"] for l in range(n_layers)]
        intercepts = [data[f"intercept_{l}"] for l in range(n_layers)]
        dtype = np.dtype(meta["dtype"])
        sizes = [int(meta["n_features_in"])] + [c.shape[1] for c in coefs]
        for l, (c, b) in enumerate(zip(coefs, intercepts)):
            if c.dtype != dtype or b.dtype != dtype or c.shape != (sizes[l], sizes[l + 1]) \
                    or b.shape != (sizes[l + 1],):
                raise ModelFileError(f"{path}: layer {l} arrays have inconsistent shapes or "
                                     "dtype")
            if not (np.isfinite(c).all() and np.isfinite(b).all()):
                raise ModelFileError(f"{path}: layer {l} holds non-finite weights")
        params = {k: v for k, v in meta["params"].items() if k in cls().get_params()}
        if isinstance(params.get("hidden_layer_sizes"), list):
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        model = cls(**params)
        model.coefs_ = coefs
        model.intercepts_ = intercepts
        model.n_features_in_ = sizes[0]
        if meta.get("feature_names_in") is not None:
            model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        model.n_outputs_ = int(meta["n_outputs"])
        model.n_layers_ = n_layers + 1
        model.out_activation_ = meta["out_activation"]
        model._hidden_acts_ = list(meta["hidden_activations"])
        model.n_iter_ = int(meta["n_iter"])
        model.t_ = int(meta.get("t", 0))
        model.loss_ = meta.get("loss")
        model.loss_curve_ = meta.get("loss_curve")
        model.validation_scores_ = meta.get("validation_scores")
        model.history_ = meta.get("history")
        model.best_loss_ = None
        model.best_validation_score_ = None
        model._no_improvement_count = 0
        model._optimizer = None
        if cls is MLPClassifier:
            lbm = meta["label_binarizer"]
            classes = data["classes"]
            lb = LabelBinarizer(neg_label=lbm["neg_label"], pos_label=lbm["pos_label"])
            if lbm["y_type"] == "multilabel-indicator":
                lb.fit(np.eye(len(classes), dtype=int)[:, :] if len(classes) > 1
                       else np.array([[0], [1]]))
            else:
                lb.fit(classes)
            if lb.y_type_ != lbm["y_type"]:
                raise ModelFileError(f"{path}: label information is inconsistent")
            model._label_binarizer = lb
            model.classes_ = lb.classes_
        if model.n_outputs_ != sizes[-1]:
            raise ModelFileError(f"{path}: n_outputs does not match the last layer")
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: incomplete or inconsistent model file "
                             f"({type(exc).__name__}: {exc})") from None
    return model
