"""Shared pieces of the benchmark suite: base class, workloads, seeded data, threads.

Used by the asv benchmarks (``bench_*.py``) and by ``compare.py``.

Rules (the whole list is in benchmarks/README.md):

* ``Benchmark`` sets the wall-clock timer explicitly (process time would sum
  the threads) and a timeout; every benchmark class derives from it.
* The data makers are seeded and cached.  They are **only ever appended to**:
  changing one would silently change the data behind recorded results.  Need
  other data?  Add a new maker (or a new seed) below the existing ones.
* The first value of every benchmark parameter is the tiniest case;
  ``tests/test_benchmarks.py`` runs each benchmark once with those values.
* The ``bench_*`` modules import fastbp at module level: asv.conf.json sets
  ``launch_method`` to ``forkserver``, so asv imports the suite once and forks a
  process per benchmark and parameter combination (with 'spawn' each of them
  would pay fastbp's ~2 s import).  This module itself imports fastbp,
  scikit-learn and numba inside functions only.
* No module-level function here is named like an asv benchmark (``time_``,
  ``track_``, ``peakmem_``, ``mem_``, ``timeraw_``).
"""
import dataclasses
import functools
import time

import numpy as np

SEED = 0


class Benchmark:
    """Base of every benchmark class: explicit wall-clock timer and a timeout."""

    timer = time.perf_counter
    timeout = 300.0


# ---------------------------------------------------------------------------
# Seeded, cached data makers.  APPEND ONLY (see the module docstring).
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def regression_data(n_samples, n_features, dtype="float64", seed=SEED):
    """(X, y): X ~ N(0, 1) of ``dtype``; y = tanh of a random projection + noise.

    Cached: callers must not modify the arrays.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float64).astype(dtype)
    w = rng.standard_normal(n_features) / np.sqrt(n_features)
    y = np.tanh(X.astype(np.float64) @ w) + 0.1 * rng.standard_normal(n_samples)
    return X, y.astype(dtype)


@functools.lru_cache(maxsize=None)
def classification_data(n_samples, n_features, n_classes, dtype="float64", seed=SEED):
    """(X, y): X uniform in [0, 1) of ``dtype`` (pixel-like); y int64 labels.

    Labels are the argmax of a random linear teacher plus Gumbel noise, so the
    task is learnable and every class occurs.  Drawn directly in ``dtype`` (no
    float64 temporary of X).  Cached: callers must not modify the arrays.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((n_samples, n_features), dtype=np.dtype(dtype).type)
    W = (rng.standard_normal((n_features, n_classes)) * (4.0 / np.sqrt(n_features)))
    W = W.astype(dtype)
    logits = X @ W - 0.5 * W.sum(axis=0)  # (X - 0.5) W without an X-sized temporary
    logits = logits + rng.gumbel(size=(n_samples, n_classes))
    return X, np.argmax(logits, axis=1).astype(np.int64)


def random_array(rng, shape, dtype, kind="normal"):
    """A fresh (not cached) C-contiguous array for the kernel benchmarks.

    kind: 'normal' N(0, 1); 'uniform' [0, 1); 'relu' max(N(0, 1), 0)
    (outputs of a relu layer: about half zeros).
    """
    if kind == "uniform":
        a = rng.random(shape)
    elif kind == "relu":
        a = np.maximum(rng.standard_normal(shape), 0.0)
    else:
        a = rng.standard_normal(shape)
    return np.ascontiguousarray(a, dtype=dtype)


# ---------------------------------------------------------------------------
# Workloads: the same architecture, activation, loss, optimizer and batch size
# for every system that is compared.
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Workload:
    """One training problem.  ``sizes`` = (n_features, hidden..., n_outputs)."""

    name: str
    sizes: tuple
    activation: str
    task: str            # 'regression' (squared error), 'classification' (softmax + log loss)
    batch_size: int
    n_samples: int
    dtype: str
    learning_rate: float
    quick_samples: int   # sample count of ``compare.py --quick``
    epochs: int          # default epochs of ``compare.py``

    @property
    def n_features(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    @property
    def hidden(self):
        return tuple(self.sizes[1:-1])

    @property
    def loss(self):
        return "squared error" if self.task == "regression" else "softmax + cross-entropy"

    def describe(self):
        net = "-".join(str(s) for s in self.sizes)
        return f"{net} {self.activation}, {self.loss}, batch {self.batch_size}, {self.dtype}"

    def data(self, n_samples=None):
        """(X, y) of ``n_samples`` rows (default: the workload's), seeded and cached."""
        n = self.n_samples if n_samples is None else int(n_samples)
        if self.task == "regression":
            return regression_data(n, self.n_features, self.dtype)
        return classification_data(n, self.n_features, self.n_outputs, self.dtype)

    def estimator_params(self, max_iter):
        """Parameters shared by fastbp's and scikit-learn's estimators.

        sgd with momentum 0.9 (Nesterov), constant step, no early stopping and
        no tolerance stop: a fit runs exactly ``max_iter`` epochs.
        """
        return dict(hidden_layer_sizes=self.hidden, activation=self.activation,
                    solver="sgd", momentum=0.9, nesterovs_momentum=True,
                    learning_rate="constant", learning_rate_init=self.learning_rate,
                    alpha=1e-4, batch_size=self.batch_size, max_iter=int(max_iter),
                    shuffle=True, random_state=SEED, tol=0.0,
                    n_iter_no_change=int(max_iter) + 10, early_stopping=False)

    def fastbp_estimator(self, backend, max_iter=1, n_jobs=None):
        import fastbp
        cls = fastbp.MLPRegressor if self.task == "regression" else fastbp.MLPClassifier
        return cls(backend=backend, n_jobs=n_jobs, **self.estimator_params(max_iter))

    def sklearn_estimator(self, max_iter=1):
        from sklearn import neural_network
        cls = (neural_network.MLPRegressor if self.task == "regression"
               else neural_network.MLPClassifier)
        return cls(**self.estimator_params(max_iter))

    def warm_rows(self):
        """Rows for a JIT warm-up fit: a few batches (compiles/loads every kernel used)."""
        return min(self.n_samples, max(4 * self.batch_size, 64))

    def train_flops(self, n_samples=None):
        """Floating-point operations of one training epoch (multiply-adds x 2).

        Forward ``2 sum n_in n_out``, weight gradients the same again, and
        delta propagation ``2 sum n_in n_out`` over every layer but the first,
        per sample; activations, losses, biases and the update are ignored.
        """
        n = self.n_samples if n_samples is None else n_samples
        pairs = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        return float(n) * 2.0 * (2 * sum(pairs) + sum(pairs[1:]))

    def predict_flops(self, n_samples):
        pairs = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        return float(n_samples) * 2.0 * sum(pairs)


WORKLOADS = {w.name: w for w in (
    # The python backend's workload (W3's net on a few samples): first, the tiniest.
    Workload("tiny", (20, 64, 64, 1), "relu", "regression", 32, 256, "float64", 0.01, 256, 1),
    Workload("W1", (20, 64, 64, 1), "relu", "regression", 1, 20_000, "float64", 0.001, 2_000, 2),
    Workload("W2", (784, 30, 10), "logistic", "classification", 10, 10_000, "float64", 0.05,
             2_000, 2),
    Workload("W3", (20, 64, 64, 1), "relu", "regression", 32, 50_000, "float64", 0.01, 5_000, 2),
    Workload("W4", (784, 512, 512, 10), "relu", "classification", 256, 20_000, "float64", 0.01,
             1_024, 1),
    Workload("W5", (784, 512, 512, 10), "relu", "classification", 256, 20_000, "float32", 0.01,
             1_024, 1),
    # A tanh net and its relu twin: what a transcendental activation costs per epoch.
    Workload("W6", (64, 128, 64, 10), "tanh", "classification", 64, 30_000, "float64", 0.02,
             2_000, 2),
    Workload("W7", (64, 128, 64, 10), "relu", "classification", 64, 30_000, "float64", 0.02,
             2_000, 2),
)}


# ---------------------------------------------------------------------------
# Threads and skips.
# ---------------------------------------------------------------------------

class ThreadLimit:
    """Limit the compiled kernels (numba) and NumPy's BLAS to ``n`` threads; ``restore()``.

    Raises NotImplementedError (asv: skip) when the machine has fewer threads.
    """

    def __init__(self, n):
        import numba
        from threadpoolctl import threadpool_limits
        n = int(n)
        if n > numba.config.NUMBA_NUM_THREADS:
            raise NotImplementedError(f"{n} threads: only {numba.config.NUMBA_NUM_THREADS} "
                                      "available")
        self._numba = numba
        self._previous = numba.get_num_threads()
        numba.set_num_threads(n)
        self._blas = threadpool_limits(limits=n, user_api="blas")

    def restore(self):
        self._blas.restore_original_limits()
        self._numba.set_num_threads(self._previous)


def skip_single_threaded(backend, threads):
    """Serial code (a serial twin, the python backend) is run with 1 thread only."""
    if threads != 1 and backend in ("loops-serial", "python"):
        raise NotImplementedError(f"{backend} runs one thread; threads={threads} skipped")


def wall_seconds(func):
    """Wall-clock seconds of one call of ``func()``."""
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def median_seconds(func, repeats=5, min_time=0.02):
    """Median wall-clock seconds per call of ``func()`` over ``repeats`` samples.

    Each sample averages enough calls to last about ``min_time`` seconds.
    """
    t0 = time.perf_counter()
    func()
    once = time.perf_counter() - t0
    number = max(1, int(min_time / max(once, 1e-9)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            func()
        samples.append((time.perf_counter() - t0) / number)
    samples.sort()
    return samples[len(samples) // 2]


# Fresh-interpreter code: import fastbp and fit a tiny net (bench_compile, compare.py).
TINY_FIT_CODE = """
import warnings
warnings.simplefilter("ignore")
import numpy as np
from fastbp import MLPClassifier
rng = np.random.default_rng(0)
X = rng.standard_normal((64, 8))
y = (X[:, 0] > 0).astype(np.int64)
MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", batch_size=16, max_iter=2,
              random_state=0).fit(X, y)
"""

# The same with scikit-learn (compare.py's reference for the cold start).
SKLEARN_TINY_FIT_CODE = TINY_FIT_CODE.replace("from fastbp import",
                                              "from sklearn.neural_network import")

# Setup for a cold compile: an empty numba cache for this interpreter only.
COLD_CACHE_SETUP = """
import atexit, os, shutil, tempfile
_cache = tempfile.mkdtemp(prefix="fastbp-cold-numba-cache-")
os.environ["NUMBA_CACHE_DIR"] = _cache
atexit.register(shutil.rmtree, _cache, True)
"""
