"""Model files: a documented, versioned, portable format loaded without pickle.

A ``.fbp`` file is a NumPy ``.npz`` archive (a zip) holding only plain arrays:

* ``coef_<l>`` (n_in, n_out) and ``intercept_<l>`` (n_out,) per layer, in the
  model dtype (float32 or float64); n_in is 0 when layer l+1 does not take
  layer l as a source;
* ``skip_coef_<s>_<t>`` (n_s, n_t) per shortcut block from layer s to layer t
  (layers numbered 0 = the input, 1..H hidden, H+1 the output);
* ``classes`` (classifiers: integer, float, bool or unicode array);
* ``meta`` -- UTF-8 JSON as a uint8 array: ``format`` ("fastbp-model"),
  ``format_version``, ``fastbp_version``, ``estimator`` (class name),
  ``params`` (constructor parameters), ``n_features_in``, ``feature_names_in``,
  ``out_activation``, ``hidden_activations``, ``dtype``, ``n_iter``, ``loss``,
  ``loss_curve``, ``history``, label-binarizer fields, ``input_n_samples``,
  ``connections`` (the sources of every layer, ``{"t": [s, ...]}``; absent in
  older files: a chain);
* ``input_mean``, ``input_std``, ``input_min``, ``input_max`` (n_features,) float64:
  statistics of the training inputs (``predict``'s range check; optional);
* ``scale_mean``, ``scale_scale`` (n_features,) float64: the standardization of
  ``scale='standard'``.

Versions: a file is written in the oldest version that holds its contents, so
older fastbp still reads it and refuses what it would misread.  1 = chain
networks without a scaler (what every fastbp has written and read); 2 = a model
with shortcut blocks or a scaler, which a fastbp that reads version 1 only must
refuse rather than load without them.

This module is the format only (arrays and JSON in, arrays and JSON out);
which attributes a model stores and how it is rebuilt is the estimators'
business (``estimators._BaseMLP.save``, ``estimators.load``).

It is read with ``allow_pickle=False``: a file cannot run code.  Saving is
atomic (temporary file in the same folder, fsync, rename): a crash or a full
disk during ``save`` never destroys the previous file.  Pickle also works.
"""
import json
import os
import tempfile

import numpy as np
from ._version import __version__

FORMAT = "fastbp-model"
FORMAT_VERSION = 2  # the newest version this fastbp reads and writes

__all__ = ["write", "read", "jsonable", "ModelFileError", "FORMAT_VERSION"]


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupted, foreign or too new."""


def jsonable(value):
    """``value`` as JSON-ready Python data (None for what JSON cannot hold)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # callables, RandomState instances: not stored


def write(path, arrays, meta, version=1):
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON-ready dict) to ``path`` atomically.

    ``meta`` gets the format fields (``format``, ``format_version``,
    ``fastbp_version``) in front.  ``format_version`` is the larger of ``version``
    and a ``format_version`` that ``meta`` asks for (see the module docstring).
    """
    meta = dict(meta)
    version = max(version, meta.pop("format_version", 1))
    if not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"format version {version} is not one this fastbp writes")
    meta = {"format": FORMAT, "format_version": version, "fastbp_version": __version__,
            **meta}
    arrays = dict(arrays)
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


def read(path):
    """(meta, arrays) of a model file; ModelFileError if it is not one this version reads."""
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
