"""What a model remembers of its training inputs: per-column statistics and, with
``scale="standard"``, the standardization it applies before its first layer.

* :class:`InputStats` -- count, mean, standard deviation, minimum and maximum of
  each input column, recorded by every local fit (one pass over X, cheap next to an
  epoch) and merged over ``partial_fit`` calls and warm starts.  ``predict`` uses
  them to warn (:class:`InputRangeWarning`) when inputs fall far outside the
  training range: the silent trap of a model trained on standardized features and
  given raw ones.
* :class:`Standardizer` -- ``(x - mean) / scale`` per column (scikit-learn's
  ``StandardScaler``: population standard deviation, 1 where it is 0), frozen at
  the first fit so that warm starts keep the space the weights were learned in.

Both are plain float64 arrays, stored in model files as arrays (no pickle).
"""
import warnings

import numpy as np
import scipy.sparse as sp

from .config import ELEMENTWISE_PAR_SHIFT, PARALLEL_MIN_WORK
from .jit import start_threads
from .kernel_cache import guarded
from .kernels_loop import column_stats, rows_within_parallel, rows_within_serial

# A damaged cache entry recompiles, as the engine's do.  The parallel twin checks
# inputs of at least _ROWS_WITHIN_PAR elements (a 1,000-row predict of 784 inputs:
# the pass over X took 227 us on one core, bound by the cache's bandwidth).
_rows_within_serial = guarded(rows_within_serial)
_rows_within_parallel = guarded(rows_within_parallel)
_ROWS_WITHIN_PAR = PARALLEL_MIN_WORK >> ELEMENTWISE_PAR_SHIFT
_column_stats = guarded(column_stats)

__all__ = ["InputStats", "Standardizer", "InputRangeWarning", "RANGE_LIMIT"]

# predict warns when a value lies more than this many training standard deviations
# below the training minimum or above the training maximum of its column (a column's
# standard deviation, or the typical column's where that is larger: InputStats.typical_std)
RANGE_LIMIT = 10.0
CHUNK_BYTES = 1 << 20  # InputStats.of reads other dense X in blocks of about this many bytes


class InputRangeWarning(UserWarning):
    """Inputs to predict lie far outside the range of the training inputs."""


class InputStats:
    """Per-column statistics of the inputs a model was trained on (float64 arrays)."""

    def __init__(self, n_samples, mean, std, minimum, maximum):
        self.n_samples = int(n_samples)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.min = np.asarray(minimum, dtype=np.float64)
        self.max = np.asarray(maximum, dtype=np.float64)

    @classmethod
    def of(cls, X):
        """The statistics of X (dense array or scipy sparse matrix, n_samples >= 1)."""
        if sp.issparse(X):
            from sklearn.utils.sparsefuncs import mean_variance_axis, min_max_axis
            X = sp.csr_matrix(X)
            mean, var = mean_variance_axis(X.astype(np.float64), axis=0)
            lo, hi = min_max_axis(X, axis=0)
        elif (type(X) is np.ndarray and X.ndim == 2 and X.dtype in (np.float64, np.float32)
              and X.flags.c_contiguous and X.shape[0] > 0):  # what fit passes: one compiled pass
            out = np.empty((4, X.shape[1]))
            _column_stats(X, out)
            return cls(X.shape[0], *out)
        else:
            X = np.asarray(X)
            # blocks of rows (merged as in ``merged``): fit never copies X, and neither
            # does this (X.var would allocate a float64 temporary of X's size)
            rows = max(1, CHUNK_BYTES // (8 * max(X.shape[1], 1)))
            stats = None
            for start in range(0, X.shape[0], rows):
                part = np.asarray(X[start:start + rows], dtype=np.float64)
                mean = part.mean(axis=0)
                std = np.sqrt(np.mean(np.square(part - mean), axis=0))
                block = cls(part.shape[0], mean, std, part.min(axis=0), part.max(axis=0))
                stats = block if stats is None else stats.merged(block)
            return stats
        return cls(X.shape[0], mean, np.sqrt(var), lo, hi)

    def merged(self, other):
        """Statistics of both sets of rows together (Chan et al.'s pairwise update)."""
        n = self.n_samples + other.n_samples
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n_samples / n)
        m2 = (self.std ** 2 * self.n_samples + other.std ** 2 * other.n_samples
              + delta ** 2 * (self.n_samples * other.n_samples / n))
        return InputStats(n, mean, np.sqrt(m2 / n), np.minimum(self.min, other.min),
                          np.maximum(self.max, other.max))

    # -- model files ----------------------------------------------------------------
    def arrays(self):
        return {"input_mean": self.mean, "input_std": self.std, "input_min": self.min,
                "input_max": self.max}

    @classmethod
    def from_file(cls, meta, arrays, n_features):
        """The statistics stored in a model file, or None (files of fastbp <= 0.1.0)."""
        if "input_mean" not in arrays:
            return None
        stats = cls(meta.get("input_n_samples", 0), arrays["input_mean"], arrays["input_std"],
                    arrays["input_min"], arrays["input_max"])
        for a in (stats.mean, stats.std, stats.min, stats.max):
            if a.shape != (n_features,):
                raise ValueError("input statistics do not match n_features_in")
        return stats

    # -- the range check --------------------------------------------------------------
    def typical_std(self):
        """The median standard deviation of the columns that vary (1.0 if none does).

        The range check measures distances in units of a column's standard deviation,
        but never in units smaller than this: a column that barely varies in training
        (a rare pixel, a one-hot category, a constant) would otherwise make any new
        value look "far".  Scale mismatches, the trap the check is for, still stand out
        by orders of magnitude.
        """
        varying = self.std[self.std > 0]
        return float(np.median(varying)) if varying.size else 1.0

    def bounds(self, limit=RANGE_LIMIT):
        """(low, high, unit): the per-column limits of the range check (computed once)."""
        cached = self.__dict__.get("_bounds")
        if cached is None or cached[0] != limit:
            unit = np.maximum(self.std, self.typical_std())
            cached = (limit, self.min - limit * unit, self.max + limit * unit, unit)
            self._bounds = cached
        return cached[1:]

    def inside(self, X, limit=RANGE_LIMIT):
        """Whether the dense, C-contiguous float X is finite and inside the range check's
        limits everywhere: one compiled pass (``kernels_loop.rows_within``) that stands
        for both predict's finiteness check and :meth:`check` on ordinary input."""
        low, high, _ = self.bounds(limit)
        if X.dtype != low.dtype:  # limits in X's dtype: one compiled variant per model dtype
            cached = self.__dict__.get("_bounds_as")
            if cached is None or cached[:2] != (limit, X.dtype):
                cached = (limit, X.dtype, low.astype(X.dtype), high.astype(X.dtype))
                self._bounds_as = cached
            low, high = cached[2:]
        if X.size >= _ROWS_WITHIN_PAR:
            start_threads()  # as backends.get_engine: before compiled parallel code runs
            return _rows_within_parallel(X, low, high)
        return _rows_within_serial(X, low, high)

    def check(self, X, names=None, limit=RANGE_LIMIT):
        """Warn (InputRangeWarning) if some column of X lies more than ``limit`` training
        standard deviations outside its training range; returns the offending columns.

        Cheap: a comparison with precomputed limits (a few microseconds for a few rows;
        two column reductions for many), the details only when something is off.
        """
        low, high, unit = self.bounds(limit)
        if sp.issparse(X):
            from sklearn.utils.sparsefuncs import min_max_axis
            lo, hi = min_max_axis(sp.csr_matrix(X), axis=0)
        else:
            if X.shape[0] <= 16 and not ((X < low).any() or (X > high).any()):
                return np.empty(0, dtype=np.intp)
            lo, hi = X.min(axis=0), X.max(axis=0)
        bad = np.flatnonzero((lo < low) | (hi > high))
        if bad.size:
            below = (self.min - lo) / unit
            above = (hi - self.max) / unit
            far = np.maximum(below, above)
            warnings.warn(self._message(bad, far, lo, hi, below, above, names, limit),
                          InputRangeWarning, stacklevel=4)
        return bad

    def _message(self, bad, far, lo, hi, below, above, names, limit):
        def name(j):
            return repr(str(names[j])) if names is not None else f"{j}"

        worst = bad[np.argmax(far[bad])]
        if above[worst] >= below[worst]:
            where = (f"values up to {hi[worst]:.4g}, {above[worst]:.3g} training standard "
                     f"deviations above the largest training value {self.max[worst]:.4g}")
        else:
            where = (f"values down to {lo[worst]:.4g}, {below[worst]:.3g} training standard "
                     f"deviations below the smallest training value {self.min[worst]:.4g}")
        others = [name(j) for j in bad if j != worst]
        more = ""
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            more = f"; {len(others)} other column(s) too ({shown})"
        return (f"input column {name(worst)} has {where}{more}. The model never saw such "
                "inputs: its predictions there are unreliable. Were the features scaled "
                "differently in training (e.g. standardized) than here? (more than "
                f"{limit:g} standard deviations outside the training range; "
                "fastbp.InputRangeWarning)")


class Standardizer:
    """``(x - mean) / scale`` per column, computed in the data's dtype."""

    def __init__(self, mean, scale):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @classmethod
    def from_stats(cls, stats):
        scale = stats.std.copy()
        scale[scale < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(stats.mean))] = 1.0
        return cls(stats.mean.copy(), scale)

    def transform(self, X):
        """A new C-contiguous array (dense X only) in X's dtype."""
        if sp.issparse(X):
            raise ValueError("scale='standard' centers each column, which would make sparse X "
                             "dense; scale sparse inputs beforehand (e.g. scikit-learn's "
                             "MaxAbsScaler) or pass a dense array")
        dtype = X.dtype
        out = np.subtract(X, self.mean.astype(dtype), dtype=dtype)
        out /= self.scale.astype(dtype)
        return np.ascontiguousarray(out)

    def arrays(self):
        return {"scale_mean": self.mean, "scale_scale": self.scale}

    @classmethod
    def from_file(cls, arrays, n_features):
        if "scale_mean" not in arrays:
            return None
        out = cls(arrays["scale_mean"], arrays["scale_scale"])
        if out.mean.shape != (n_features,) or out.scale.shape != (n_features,) \
                or not (np.isfinite(out.mean).all() and (out.scale > 0).all()):
            raise ValueError("scaler arrays do not match n_features_in or are invalid")
        return out
