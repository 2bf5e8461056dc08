"""Estimator benchmarks: whole fits and predictions on the workloads of ``common.WORKLOADS``.

Parameters: backend x workload x threads (backend first, so that asv's default
graph, up to 8 combinations taken in parameter order, shows the backends side by
side).  Every fit runs exactly ``EPOCHS`` epoch(s) (fixed ``max_iter``, sgd + momentum 0.9, no early stopping,
no tolerance stop), so ``time_fit_epoch`` is seconds per epoch (plus the fit's
small fixed cost: validation, initialisation).  The python backend runs the
'tiny' workload only; serial backends run with 1 thread only (other
combinations are skipped with NotImplementedError in ``setup``).

``track_train_loss`` is the training loss after the fit: a speed-up that
changes the numbers shows up there (it should agree across backends and
thread counts to rounding).

``ShortcutFit`` / ``ShortcutSpeedup``: the same workloads with shortcut
connections (every layer fed by all earlier layers and the input) beside their
chain twin, and the BLAS backend's fit time over the loops' on each.

``ActivationFit``: W6's net with each hidden activation and dtype, and its time
over the relu twin's.
"""
import statistics
import warnings

import fastbp  # noqa: F401  (imported once by asv's forkserver, see common.py)

from .common import WORKLOADS, Benchmark, ThreadLimit, skip_single_threaded, wall_seconds

EPOCHS = 1
WORKLOAD_NAMES = list(WORKLOADS)          # 'tiny' first (the tiniest)
BACKENDS = ["loops", "loops-serial", "blas", "python"]
THREADS = [1, 2]
PREDICT_ROWS = 10_000


def _skip(workload, backend, threads):
    skip_single_threaded(backend, threads)
    if backend == "python" and workload != "tiny":
        raise NotImplementedError("the python backend runs the 'tiny' workload only")


def _release(bench):
    """Undo a setup's warning filter and thread limit.  asv also tears down the cases
    whose setup was skipped or failed part-way, so either may be missing."""
    if getattr(bench, "quiet", None) is not None:
        bench.quiet.__exit__(None, None, None)
        bench.quiet = None
    if getattr(bench, "threads", None) is not None:
        bench.threads.restore()
        bench.threads = None


class _Estimator(Benchmark):
    """Data, estimator, threads and a JIT warm-up fit; shared by the classes below."""

    param_names = ["backend", "workload", "threads"]  # backend first: see the docstring
    params = [BACKENDS, WORKLOAD_NAMES, THREADS]
    timeout = 900.0
    warmup_time = 0.0  # setup warms up; W4/W5 epochs take seconds
    number = 1

    def setup(self, backend, workload, threads):
        _skip(workload, backend, threads)
        from sklearn.exceptions import ConvergenceWarning
        self.threads = ThreadLimit(threads)
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)  # the fixed epochs run out
        self.wl = WORKLOADS[workload]
        self.X, self.y = self.wl.data()
        self.est = self.wl.fastbp_estimator(backend, max_iter=EPOCHS, n_jobs=threads)
        rows = self.wl.warm_rows()
        self.est.fit(self.X[:rows], self.y[:rows])  # JIT: compile or load the cache

    def teardown(self, backend, workload, threads):
        _release(self)


class Fit(_Estimator):
    """One fit of ``EPOCHS`` epoch(s) over the whole workload."""

    def time_fit_epoch(self, backend, workload, threads):
        self.est.fit(self.X, self.y)

    def peakmem_fit(self, backend, workload, threads):
        self.est.fit(self.X, self.y)

    def track_gflops(self, backend, workload, threads):
        seconds = wall_seconds(lambda: self.est.fit(self.X, self.y))
        return self.wl.train_flops() * EPOCHS / seconds / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_train_loss(self, backend, workload, threads):
        self.est.fit(self.X, self.y)
        return float(self.est.loss_)

    track_train_loss.unit = "loss"


class Predict(_Estimator):
    """``predict`` on the first ``PREDICT_ROWS`` rows of the workload (fitted in setup)."""

    def setup(self, backend, workload, threads):
        super().setup(backend, workload, threads)
        self.X_pred = self.X[:PREDICT_ROWS]
        self.est.predict(self.X_pred)

    def time_predict(self, backend, workload, threads):
        self.est.predict(self.X_pred)

    def time_predict_proba_one_row(self, backend, workload, threads):
        """One row: the per-call overhead (input checks, dispatch), not the kernels."""
        self.est.predict_proba(self.X_pred[:1]) if hasattr(self.est, "predict_proba") \
            else self.est.predict(self.X_pred[:1])


class Speedup(_Estimator):
    """Fit time of the BLAS backend over that of a loop backend, same threads, one process."""

    params = [["loops", "loops-serial"], WORKLOAD_NAMES, THREADS]

    def setup(self, backend, workload, threads):
        super().setup(backend, workload, threads)
        self.blas = self.wl.fastbp_estimator("blas", max_iter=EPOCHS, n_jobs=threads)
        rows = self.wl.warm_rows()
        self.blas.fit(self.X[:rows], self.y[:rows])

    def track_speedup_vs_blas(self, backend, workload, threads):
        loops = wall_seconds(lambda: self.est.fit(self.X, self.y))
        blas = wall_seconds(lambda: self.blas.fit(self.X, self.y))
        return blas / loops

    track_speedup_vs_blas.unit = "x"


SHORTCUT_WORKLOADS = ["tiny", "W3", "W2", "W4"]   # 'tiny' first (the tiniest)
CONNECTIONS = ["chain", "shortcut"]


class _Topology(_Estimator):
    """A workload's estimator with ``connections`` set; JIT warm-up fit in setup."""

    param_names = ["backend", "workload", "connections", "threads"]  # backend first
    params = [["loops", "blas"], SHORTCUT_WORKLOADS, CONNECTIONS, THREADS]

    def setup(self, backend, workload, connections, threads):
        super().setup(backend, workload, threads)
        self.est.set_params(connections=connections)
        rows = self.wl.warm_rows()
        self.est.fit(self.X[:rows], self.y[:rows])

    def teardown(self, backend, workload, connections, threads):
        super().teardown(backend, workload, threads)


class ShortcutFit(_Topology):
    """One epoch of a shortcut net beside its chain twin (same widths)."""

    def time_fit_epoch(self, backend, workload, connections, threads):
        self.est.fit(self.X, self.y)

    def track_train_loss(self, backend, workload, connections, threads):
        self.est.fit(self.X, self.y)
        return float(self.est.loss_)

    track_train_loss.unit = "loss"


class ShortcutSpeedup(_Topology):
    """Fit time of the BLAS backend over the loops', chain and shortcut, one process."""

    param_names = ["workload", "connections", "threads"]
    params = [SHORTCUT_WORKLOADS, CONNECTIONS, THREADS]

    def setup(self, workload, connections, threads):
        super().setup("loops", workload, connections, threads)
        self.blas = self.wl.fastbp_estimator("blas", max_iter=EPOCHS, n_jobs=threads)
        self.blas.set_params(connections=connections)
        rows = self.wl.warm_rows()
        self.blas.fit(self.X[:rows], self.y[:rows])

    def teardown(self, workload, connections, threads):
        super().teardown("loops", workload, connections, threads)

    def track_speedup_vs_blas(self, workload, connections, threads):
        loops = wall_seconds(lambda: self.est.fit(self.X, self.y))
        blas = wall_seconds(lambda: self.blas.fit(self.X, self.y))
        return blas / loops

    track_speedup_vs_blas.unit = "x"


class ActivationFit(Benchmark):
    """What a hidden activation costs a whole fit: W6's net (64-128-64-10, batch 64) with
    each activation, in float64 and float32, one thread.

    ``time_fit_epoch`` per case; ``track_time_over_relu`` is the epoch's time over that
    of the same net with relu, timed in turn in this process (median of 5 pairs; the
    transcendental activations' target: at most 1.2).
    """

    param_names = ["backend", "activation", "dtype"]  # backend first: see the docstring
    params = [["loops", "blas"], ["relu", "tanh", "logistic", "softplus"],
              ["float64", "float32"]]
    timeout = 600.0
    warmup_time = 0.0
    number = 1
    n_samples = 10_000

    def setup(self, backend, activation, dtype):
        from sklearn.exceptions import ConvergenceWarning
        self.threads = ThreadLimit(1)
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)
        wl = WORKLOADS["W6"]
        X, self.y = wl.data(self.n_samples)
        self.X = X.astype(dtype)
        self.est = wl.fastbp_estimator(backend, max_iter=EPOCHS, n_jobs=1)
        self.relu = wl.fastbp_estimator(backend, max_iter=EPOCHS, n_jobs=1)
        self.est.set_params(activation=activation)
        self.relu.set_params(activation="relu")
        rows = wl.warm_rows()
        for est in (self.est, self.relu):
            est.fit(self.X[:rows], self.y[:rows])  # JIT: compile or load the cache

    def teardown(self, backend, activation, dtype):
        _release(self)

    def time_fit_epoch(self, backend, activation, dtype):
        self.est.fit(self.X, self.y)

    def track_time_over_relu(self, backend, activation, dtype):
        # the median of 5 pairs timed in turn, so a drift of the machine's speed cancels
        ratios = [wall_seconds(lambda: self.est.fit(self.X, self.y))
                  / wall_seconds(lambda: self.relu.fit(self.X, self.y)) for _ in range(5)]
        return statistics.median(ratios)

    track_time_over_relu.unit = "x"
