"""Training on a dask cluster (GitHub issue 7).  Needs ``pip install fastbp[dask]``.

Two ways to train on data that live on a dask cluster:

* Streaming: ``dask_ml.wrappers.Incremental(fastbp.MLPClassifier(...))`` (or the
  regressor) walks a dask array or dask DataFrame block by block through
  ``partial_fit`` (one compiled epoch per block) and predicts block-parallel
  (``ParallelPostFit``).  Nothing here is needed for that: the estimators are
  ordinary scikit-learn estimators.  Give them ``n_jobs`` = the threads a task
  may use (1 with ``threads_per_worker=1``), or every task uses all cores.

* Data-parallel: :func:`fit` keeps the data partitioned on the workers and
  moves only parameters.  Each iteration the client sends one flat
  parameter vector to every worker holding partitions; every worker returns one vector of sums over the
  partitions it holds; the client adds them and takes the step.

  - ``solver='lbfgs'``: exact full-batch L-BFGS (``scipy.optimize.minimize``, the
    single-machine ``FitRun.lbfgs`` itself).  A worker returns the data loss
    and gradient *sums* of its partitions (``Network.loss_grad`` with
    ``alpha=0``, times the partition's weight sum); the client adds the L2 term
    ``alpha/2 ||W||^2`` (``alpha W`` on weights only) and divides by the total
    weight sum.  Same objective as a single-machine fit on the concatenated
    data, up to summation order.
  - stochastic solvers: per-epoch model averaging (local SGD).  From the same
    start, each partition runs one compiled epoch (``trainer.run_epoch``) of
    mini-batches over its own rows; the client averages parameters and the
    optimizer's moments weighted by the partitions' weight sums (their sizes
    when unweighted).  This is *not* single-machine SGD: see ``docs_dask.md``.

The result is an ordinary fitted fastbp estimator (``coefs_``, ``classes_``,
``loss_``, ``n_iter_``, ``history_``...; ``predict`` runs locally).

``python -m fastbp.dask --bench`` times one data-parallel iteration against
the parameter count on a local cluster.
"""
import copy
import threading
import time
import warnings
from concurrent.futures import CancelledError

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.base import is_classifier
from sklearn.utils.validation import validate_data

import dask
import distributed

from .estimators import FitRun, MLPClassifier, MLPRegressor
from .network import Network, as_rows, engine_array, with_threads
from .trainer import DivergenceError, run_epoch, sample_order

__all__ = ["fit", "task_threads", "benchmark"]

# Moments each stochastic solver keeps (optimizers.py): only these travel.
_MOMENTS = {"sgd": ("m1",), "adam": ("m1", "m2"), "rmsprop": ("m2",), "adagrad": ("m2",)}


# ---------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------
_KERNEL_LOCK = threading.Lock()  # one fastbp task computes per worker process at a time
_NETS = {}


def task_threads(requested=None):
    """Threads a fastbp task on this worker may give the compiled kernels.

    ``requested`` if given, else the worker's ``nthreads`` (dask does not set
    ``NUMBA_NUM_THREADS``: without this, every worker process would start one
    thread per core), capped at ``numba.config.NUMBA_NUM_THREADS``.  Outside a
    worker: ``NUMBA_NUM_THREADS``.
    """
    if requested is None:
        try:
            requested = distributed.get_worker().state.nthreads
        except ValueError:  # not on a worker
            requested = numba.config.NUMBA_NUM_THREADS
    return max(1, min(int(requested), numba.config.NUMBA_NUM_THREADS))


def _in_task(threads, func, *args):
    """Run ``func`` with the worker's thread budget, one fastbp task at a time."""
    with _KERNEL_LOCK:
        return with_threads(task_threads(threads), func, *args)


def _network(spec):
    """This process's Network for ``spec`` (workspaces are kept between iterations)."""
    net = _NETS.get(spec)
    if net is None:
        net = Network(*spec)
        if len(_NETS) >= 4:
            _NETS.clear()
        _NETS[spec] = net
    return net


def _weight_sum(X, sw):
    return float(sw.sum(dtype=np.float64)) if sw.shape[0] else float(X.shape[0])


def _gradient_sums(spec, theta, *parts):
    """[data sum, weight sum, gradient sum...] over ``parts`` (float64, partition order).

    ``Network.loss_grad`` with ``alpha=0`` gives the weighted means; times each
    partition's weight sum they are sums again.
    """
    net = _network(spec)
    out = np.zeros(theta.shape[0] + 2)
    for X, Y, sw in parts:
        s = _weight_sum(X, sw)
        data, _, grad = net.loss_grad(theta, X, Y, sw, 0.0)
        out[0] += data * s
        out[1] += s
        out[2:] += grad * s
    return out


def _gradient_task(spec, threads, theta, *parts):
    return _in_task(threads, _gradient_sums, spec, theta, *parts)


def _epoch_sums(spec, job, state, indices, *parts):
    """One compiled epoch per partition from ``state``; weighted sums of the results.

    Returns [weight sum, loss*rows, rows, batches, max step, diverged partition
    (-1 if none), gradient-norm sums per layer and shortcut block..., weighted state...].
    """
    net = _network(spec)
    p = net.layout.n_params
    head = 6 + net.layout.n_blocks  # a gradient norm per layer, then per shortcut block
    out = np.zeros(head + state.shape[0])
    out[5] = -1.0
    for index, (X, Y, sw) in zip(indices, parts):
        n = X.shape[0]
        theta = state[:p].copy()
        opt = copy.copy(job["optimizer"])
        opt.learning_rate, opt.t = job["learning_rate"], job["t"]
        opt.m1 = np.zeros(p, dtype=theta.dtype)
        opt.m2 = np.zeros(p, dtype=theta.dtype)
        for k, name in enumerate(job["moments"]):
            getattr(opt, name)[...] = state[(k + 1) * p:(k + 2) * p]
        if job["shuffle"]:
            seq = np.random.SeedSequence([job["seed"], job["epoch"], index])
            rng = np.random.RandomState(seq.generate_state(1)[0])
            order = sample_order(rng, np.arange(n, dtype=np.int64))
        else:
            order = np.empty(0, dtype=np.int64)
        batch_size = job["batch_sizes"][index]
        try:
            loss, gnorms = run_epoch(net, theta, np.empty_like(theta), opt, X, Y, sw, order,
                                     batch_size, job["alpha"], job["clip"])
        except DivergenceError:
            out[5] = index
            return out
        s = _weight_sum(X, sw)
        n_batches = max(1, -(-n // batch_size))
        out[0] += s
        out[1] += loss * n
        out[2] += n
        out[3] += n_batches
        out[4] = max(out[4], opt.t)
        out[6:head] += gnorms * n_batches
        out[head:head + p] += s * theta
        for k, name in enumerate(job["moments"]):
            out[head + (k + 1) * p:head + (k + 2) * p] += s * getattr(opt, name)
    return out


def _epoch_task(spec, threads, job, state, indices, *parts):
    return _in_task(threads, _epoch_sums, spec, job, state, indices, *parts)


# -- partitions: checked and converted once, where they are computed ----------
def _where(index):
    return f"partition {index}"


def _rows(obj, dtype=None):
    """NumPy (or CSR) view of a block: ndarray, pandas object or scipy matrix."""
    if sp.issparse(obj):
        return as_rows(obj, dtype)
    if hasattr(obj, "to_numpy"):
        return obj.to_numpy(dtype=dtype) if dtype is not None else obj.to_numpy()
    return np.asarray(obj, dtype=dtype)


def _first_bad_row(A):
    bad = ~np.isfinite(A)
    return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def _labels(index, y):
    """Distinct labels of one partition's y (rows of a 2-D indicator y)."""
    y = _rows(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim not in (1, 2):
        raise ValueError(f"{_where(index)}: y must be 1-D or 2-D, got shape {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{_where(index)}: y contains NaN or infinity (row "
                         f"{_first_bad_row(y)} of the partition)")
    if y.ndim == 2:
        return np.unique(y, axis=0), None
    return np.unique(y, return_counts=True)


def _prepare(index, x, y, sw, n_features, dtype, binarizer, class_weights=None):
    """(X, Y, sw) of one partition as the engine takes them, or a ValueError naming it."""
    where = _where(index)
    try:
        X = _rows(x, dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: X cannot be converted to {np.dtype(dtype)}: {exc}") from exc
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D, got shape {X.shape}")
    n = X.shape[0]
    if n == 0:
        raise ValueError(f"{where} is empty (0 rows). Drop empty partitions before fitting "
                         "(e.g. repartition a filtered DataFrame, or rechunk the array).")
    if X.shape[1] != n_features:
        raise ValueError(f"{where}: X has {X.shape[1]} columns, expected {n_features} "
                         "(the width of the other partitions).")
    if not np.isfinite(X.data if sp.issparse(X) else X).all():
        row = "" if sp.issparse(X) else f" (row {_first_bad_row(X)} of the partition)"
        raise ValueError(f"{where}: X contains NaN or infinity{row}.")
    X = as_rows(X)
    y = _rows(y)
    if y.shape[0] != n:
        raise ValueError(f"{where}: X has {n} rows but y has {y.shape[0]}; partition y "
                         "exactly like X.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if binarizer is not None:
        Y = binarizer.transform(y).astype(dtype)
    else:
        try:
            Y = np.asarray(y, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: y is not numeric: {exc}") from exc
        if not np.isfinite(Y).all():
            raise ValueError(f"{where}: y contains NaN or infinity (row "
                             f"{_first_bad_row(Y)} of the partition).")
    Y = engine_array(Y.reshape(n, -1))
    if sw is None:
        w = np.empty(0, dtype=dtype)
    else:
        w = engine_array(_rows(sw, dtype))
        if w.shape != (n,):
            raise ValueError(f"{where}: sample_weight has shape {w.shape}, expected ({n},).")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{where}: sample_weight must be finite and non-negative.")
    if class_weights is not None:  # times each sample's class weight (Y is binarized)
        index = (Y[:, 0] > 0.5).astype(np.intp) if Y.shape[1] == 1 else np.argmax(Y, axis=1)
        cw = np.asarray(class_weights, dtype=np.float64)[index]
        w = np.ascontiguousarray(cw * w if w.shape[0] else cw, dtype=dtype)
    return X, Y, w


def _summary(part):
    X, Y, sw = part
    return X.shape[0], Y.shape[1], _weight_sum(X, sw)


# ---------------------------------------------------------------------------
# client side: the partitions of one fit and its per-iteration rounds
# ---------------------------------------------------------------------------
def _is_dask(obj):
    return obj is not None and dask.is_dask_collection(obj)


def _dask_blocks(obj, name, row_chunks=None):
    """Per-partition Delayed objects of a dask array / DataFrame / Series."""
    if hasattr(obj, "chunks") and hasattr(obj, "ndim"):  # dask array
        if obj.ndim > 2:
            raise ValueError(f"{name} must be 1-D or 2-D, got {obj.ndim}-D")
        if row_chunks is not None and obj.chunks[0] != row_chunks and \
                not any(np.isnan(row_chunks)) and not any(np.isnan(obj.chunks[0])):
            obj = obj.rechunk({0: row_chunks})
        if obj.ndim == 2:
            if obj.numblocks[1] > 1:
                obj = obj.rechunk({1: -1})
            return list(obj.to_delayed()[:, 0])
        return list(obj.to_delayed())
    return list(obj.to_delayed())


def _host_blocks(obj, lengths):
    """An in-memory array cut into row blocks of ``lengths`` (embedded in the graph,
    so a lost partition can be recomputed)."""
    out, start = [], 0
    for n in lengths:
        part = obj.iloc[start:start + n] if hasattr(obj, "iloc") else obj[start:start + n]
        out.append(dask.delayed(part, traverse=False))
        start += n
    return out


def _partition(client, X, y, sample_weight, n_partitions):
    """Aligned per-partition Delayed lists (X, y, sample_weight or Nones)."""
    if _is_dask(X):
        row_chunks = X.chunks[0] if hasattr(X, "chunks") else None
        xs = _dask_blocks(X, "X")
        lengths = None
        if row_chunks is not None and not any(np.isnan(row_chunks)):
            lengths = [int(n) for n in row_chunks]
    else:
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        n = X.shape[0]
        k = max(1, min(n_partitions, n))
        lengths = [n // k + (i < n % k) for i in range(k)]
        xs = _host_blocks(X, lengths)
        row_chunks = tuple(lengths)

    def align(obj, name):
        if obj is None:
            return [None] * len(xs)
        if _is_dask(obj):
            blocks = _dask_blocks(obj, name, row_chunks)
        else:
            if lengths is None:
                raise ValueError(f"X is a dask collection with unknown partition lengths; "
                                 f"pass {name} as a dask collection partitioned like X.")
            if len(obj) != sum(lengths):
                raise ValueError(f"X has {sum(lengths)} rows but {name} has {len(obj)}.")
            blocks = _host_blocks(obj, lengths)
        if len(blocks) != len(xs):
            raise ValueError(f"X has {len(xs)} partitions but {name} has {len(blocks)}; "
                             f"partition {name} exactly like X.")
        return blocks

    return xs, align(y, "y"), align(sample_weight, "sample_weight")


def _head(X):
    """A small in-memory sample with X's columns and dtypes, for scikit-learn's checks."""
    if not _is_dask(X):
        return X
    if hasattr(X, "_meta_nonempty"):  # dask DataFrame: fake rows of the right dtypes
        return X._meta_nonempty.iloc[:1]
    if X.ndim != 2 or np.isnan(X.shape[1]):
        raise ValueError(f"X must be 2-D with a known number of columns, got shape {X.shape}")
    return np.zeros((1, int(X.shape[1])), dtype=X.dtype)


class _Cluster:
    """One fit's partitions on the workers, and the two per-iteration rounds.

    A round sends one flat array to each worker holding partitions (a scatter
    per worker), runs one task per worker over the partitions it holds (sums
    in partition order) and adds the workers' answers in order of their first
    partition.  A round that loses data or a connection to a dying worker is
    run again (same inputs, same answer), with the array inside the tasks;
    dask recomputes lost partitions from their graph.
    """

    def __init__(self, client, parts, spec, threads, retries):
        self.client = client
        self.parts = parts
        self.spec = spec
        self.threads = threads
        self.retries = retries

    def groups(self):
        """[(worker address or None, [partition indices])], by first index."""
        who = self.client.who_has(self.parts)
        by_worker = {}
        for i, f in enumerate(self.parts):
            holders = sorted(who.get(f.key, ()))
            by_worker.setdefault(holders[0] if holders else None, []).append(i)
        return sorted(by_worker.items(), key=lambda kv: kv[1][0])

    def round(self, task, payload, *args, per_group=None):
        """Results per worker group and their sum; reruns a round that failed."""
        for attempt in range(self.retries + 1):
            try:
                # a rerun ships the payload inside the tasks: dask can then recompute
                # everything from the scheduler's copy, whatever else is dying
                return self._round(task, payload, args, per_group, embed=attempt > 0)
            except (CancelledError, OSError) as exc:  # lost data / a dying worker
                if attempt == self.retries:
                    raise
                warnings.warn(f"fastbp.dask: a round failed ({type(exc).__name__}: {exc}); "
                              "running it again", RuntimeWarning)
                time.sleep(0.25 * (attempt + 1))

    def _round(self, task, payload, args, per_group, embed):
        client = self.client
        timeout = 30.0 + payload.nbytes / 10e6  # generous: only a dead peer should hit it
        futures = []
        for addr, indices in self.groups():
            where = None if addr is None else [addr]
            # one copy of the payload to each worker, straight where its partitions are
            # (no scheduler-side replicate, which can wait long on a dying peer)
            shared = payload if embed else client.scatter(payload, workers=where, hash=False,
                                                          timeout=timeout)
            extra = (per_group(indices),) if per_group else ()
            futures.append(client.submit(
                task, self.spec, self.threads, *args, shared, *extra,
                *[self.parts[i] for i in indices], pure=False, workers=where,
                allow_other_workers=where is not None))  # distributed refuses it without workers
        results = client.gather(futures)
        total = np.zeros_like(results[0])
        for r in results:
            total += r
        return results, total


class _DistributedNetwork:
    """Duck-typed ``network.Network`` for ``FitRun.lbfgs``: ``loss_grad`` over the cluster."""

    def __init__(self, net, cluster, weight_sum):
        self.layout = net.layout
        self.cluster = cluster
        self.weight_sum = weight_sum
        self.evaluations = 0

    def loss_grad(self, theta, X=None, Y=None, sw=None, alpha=0.0, grad=None):
        """(data term, L2 term, gradient), as ``Network.loss_grad`` on all partitions."""
        if grad is None:
            grad = np.empty_like(theta)
        _, sums = self.cluster.round(_gradient_task, np.ascontiguousarray(theta))
        self.evaluations += 1
        scale = 1.0 / self.weight_sum
        g = sums[2:]
        wsq = 0.0
        layout = self.layout
        for w, dw in zip(layout.weights(theta) + layout.skip_weights(theta),
                         layout.weights(g) + layout.skip_weights(g)):
            w64 = w.astype(np.float64)
            dw += alpha * w64  # the engine's finalize_params: (dw + alpha w) * scale
            wsq += float(np.dot(w64.ravel(), w64.ravel()))
        grad[...] = g * scale
        return sums[0] * scale, 0.5 * alpha * wsq * scale, grad


# ---------------------------------------------------------------------------
# the public entry point
# ---------------------------------------------------------------------------
def fit(estimator, X, y, sample_weight=None, *, client=None, n_partitions=None,
        threads=None, retries=3):
    """Fit a fastbp estimator data-parallel on a dask cluster; returns it, fitted.

    Parameters
    ----------
    estimator : fastbp.MLPClassifier or fastbp.MLPRegressor
        Its parameters are used as in ``estimator.fit``: ``solver='lbfgs'`` is
        exact full-batch L-BFGS over all partitions; 'sgd', 'adam', 'rmsprop'
        and 'adagrad' run per-epoch model averaging (one local epoch per
        partition, then a weighted average); 'rprop' is refused.  ``max_iter``, ``tol``,
        ``n_iter_no_change``, ``alpha``, ``verbose``, ``callbacks``,
        ``warm_start``, ``random_state`` keep their meaning; ``early_stopping``
        is not supported.
    X : dask array, dask DataFrame, or an in-memory array / DataFrame
        Rows are partitioned as the collection's blocks (a dask array is
        rechunked to full width); in-memory data are cut into
        ``n_partitions`` blocks.  Every partition must be non-empty, finite
        and of the same width.
    y, sample_weight : same kinds, partitioned like X (or in memory when X's
        partition lengths are known).
    client : distributed.Client, default: the current client.
    n_partitions : int, default: one per worker (in-memory X only).
    threads : int, default: each worker's ``nthreads``
        Threads the compiled kernels use in a worker task.
    retries : int, default=3
        Times a round is rerun after losing data or a connection to a dying
        worker (tasks that were running are rescheduled by dask itself).

    Returns the estimator, fitted as by ``estimator.fit`` (``coefs_``,
    ``intercepts_``, ``classes_``, ``n_features_in_``, ``loss_``, ``n_iter_``,
    ``history_``...).  Nothing is assigned if the fit fails.
    """
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError as exc:
            raise ValueError("fastbp.dask.fit needs a distributed.Client: pass client=... "
                             "or create one first.") from exc
    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise TypeError("fastbp.dask.fit trains fastbp.MLPClassifier or fastbp.MLPRegressor, "
                        f"got {type(estimator).__name__}")
    if y is None:
        raise ValueError("fastbp.dask.fit needs targets y.")
    estimator._validate_params()
    if estimator.early_stopping:
        raise ValueError("fastbp.dask.fit does not support early_stopping=True; hold out "
                         "a validation set and use callbacks instead.")
    if estimator.solver == "rprop":
        raise ValueError("fastbp.dask.fit does not support solver='rprop' yet; use "
                         "solver='lbfgs' (exact full batch on a cluster) or fit in memory.")
    if np.any(np.asarray(estimator.dropout, dtype=np.float64) > 0):
        raise ValueError("fastbp.dask.fit does not support dropout yet (workers would draw "
                         "masks for their own row numbers); fit in memory, or set "
                         "dropout=0.0.")
    if estimator.scale is not None:
        raise ValueError("fastbp.dask.fit does not support scale='standard'; standardize the "
                         "dask arrays first (e.g. dask_ml.preprocessing.StandardScaler).")
    with FitRun(estimator) as lifecycle:  # start -> epochs -> commit, or nothing assigned
        run = _DataParallelFit(estimator, client, threads, retries, lifecycle)
        try:
            run.solve(*run.setup(X, y, sample_weight, n_partitions))
        finally:
            run.close()
    return estimator


class _DataParallelFit:
    """One call of :func:`fit`: the partitions, and the solver of the fit's lifecycle
    (``estimators.FitRun``; a new one for ``est`` when none is given)."""

    def __init__(self, est, client, threads, retries, lifecycle=None):
        self.lifecycle = lifecycle if lifecycle is not None else FitRun(est)
        self.est = est
        self.client = client
        self.threads = threads
        self.retries = retries
        self.parts = []

    def setup(self, X, y, sample_weight, n_partitions=None):
        """Check and place the partitions; returns (fit record, Network, _Cluster)."""
        est, client, lifecycle = self.est, self.client, self.lifecycle
        first_pass = lifecycle.first_pass
        n_workers = len(client.scheduler_info()["workers"])
        xs, ys, ws = _partition(client, X, y, sample_weight, n_partitions or max(1, n_workers))
        head = validate_data(est, _head(X), accept_sparse=["csr", "csc"],
                             dtype=(np.float64, np.float32), reset=first_pass)
        dtype = head.dtype if first_pass else est.coefs_[0].dtype
        binarizer, class_weights = self._labels(ys) if is_classifier(est) else (None, None)
        self.parts = self._place(xs, ys, ws, head.shape[1], dtype, binarizer, class_weights)
        summaries = client.gather(client.map(_summary, self.parts, pure=False))
        for i, s in enumerate(summaries):
            if s[1] != summaries[0][1]:
                raise ValueError(f"{_where(i)}: y has {s[1]} columns, {_where(0)} has "
                                 f"{summaries[0][1]}.")
        self.rows = [s[0] for s in summaries]
        self.weight_sum = float(sum(s[2] for s in summaries))
        if not self.weight_sum > 0:
            raise ValueError("sample_weight must have a positive sum"
                             + (" (times class_weight)." if est.__dict__.get("class_weight")
                                is not None else "."))
        fit = lifecycle.start(head.shape[1], summaries[0][1], dtype)
        net = fit.net
        return fit, net, _Cluster(client, self.parts, net.args, self.threads, self.retries)

    def solve(self, fit, net, cluster):
        """Run the estimator's solver over the cluster and commit the result to it."""
        if self.est.solver == "lbfgs":
            fit.net = _DistributedNetwork(net, cluster, self.weight_sum)
            self.lifecycle.lbfgs(fit, None, None, None)  # the single-machine L-BFGS loop
        else:
            step = _AveragingEpoch(self.lifecycle, net, cluster, self.rows)
            self.lifecycle.epochs(fit, step, sum(self.rows))  # the single-machine epoch loop
        fit.net = net
        self.lifecycle.commit(fit)

    def close(self):
        """Release the partitions on the workers."""
        if self.parts:
            self.client.cancel(self.parts)
            self.parts = []

    def _labels(self, ys):
        """(The estimator's LabelBinarizer, fitted on the labels of all partitions; the
        class weights of ``class_weight``, counted over all partitions, or None)."""
        client = self.client
        found = client.gather(client.compute(
            [dask.delayed(_labels, pure=False)(i, yb) for i, yb in enumerate(ys)]))
        uniques = [u for u, _ in found]
        labels = (np.unique(np.concatenate(uniques, axis=0), axis=0) if uniques[0].ndim == 2
                  else np.unique(np.concatenate(uniques)))
        binarizer = self.lifecycle.set_classes(labels)
        if getattr(self.est, "class_weight", None) is None:
            return binarizer, None
        counts = None
        if uniques[0].ndim == 1:
            counts = np.zeros(len(labels), dtype=np.int64)
            for u, c in found:
                counts[np.searchsorted(labels, u)] += c
        return binarizer, self.est.class_weights(counts=counts)

    def _place(self, xs, ys, ws, n_features, dtype, binarizer, class_weights=None):
        """Futures of the checked partitions, spread round-robin over the workers."""
        workers = sorted(self.client.scheduler_info()["workers"])
        parts = []
        for i, (xb, yb, wb) in enumerate(zip(xs, ys, ws)):
            task = dask.delayed(_prepare, pure=False)(i, xb, yb, wb, n_features,
                                                      np.dtype(dtype), binarizer,
                                                      class_weights)
            home = [workers[i % len(workers)]] if workers else None  # none yet: anywhere
            parts.append(self.client.compute(task, workers=home, allow_other_workers=True))
        return parts


class _AveragingEpoch:
    """The step of ``trainer.EpochLoop`` for stochastic solvers on a cluster.

    From the same start, each partition runs one compiled epoch over its own
    rows; the averages of the parameters and the optimizer's moments, weighted
    by the partitions' weight sums, become the new state.
    """

    def __init__(self, lifecycle, net, cluster, rows):
        est = lifecycle.est
        self.cluster = cluster
        self.p = net.layout.n_params
        self.n_blocks = net.layout.n_blocks
        self.moments = _MOMENTS[est.solver]
        self.job = {"optimizer": lifecycle.optimizer(0, net.dtype), "moments": self.moments,
                    "seed": int(lifecycle.rng.randint(np.iinfo(np.int32).max)),
                    "shuffle": est.shuffle,
                    "batch_sizes": [lifecycle.batch_size(n) for n in rows],
                    "alpha": est.alpha, "clip": lifecycle.clip}
        self.epoch = 0  # rounds started: seeds the partitions' shuffles

    def __call__(self, theta, opt, checkpoints):
        """One round; (mean loss, per-layer gradient norms), or DivergenceError with
        the last averaged state kept."""
        p, moments = self.p, self.moments
        epoch, self.epoch = self.epoch, self.epoch + 1
        checkpoints.push(theta, opt)
        state = np.concatenate([theta] + [getattr(opt, m) for m in moments])
        self.job.update(epoch=epoch, learning_rate=opt.learning_rate, t=opt.t)
        results, sums = self.cluster.round(_epoch_task, state, self.job,
                                           per_group=lambda idx: idx)
        diverged = [int(r[5]) for r in results if r[5] >= 0]
        if diverged:
            msg = (f"training diverged in {_where(min(diverged))} at epoch {epoch + 1}: the "
                   "loss or a parameter became non-finite. Try a lower learning_rate_init, "
                   "clip_norm=..., or scaling the inputs (StandardScaler).")
            err = DivergenceError(msg)
            err.epochs_lost = 1  # this round only: the state is the last averaged one
            err.warning = msg + " Keeping the weights of the last averaged epoch."
            raise err
        opt.t = max(int(r[4]) for r in results)
        head = 6 + self.n_blocks
        avg = sums[head:] / sums[0]
        theta[...] = avg[:p]
        for k, name in enumerate(moments):
            getattr(opt, name)[...] = avg[(k + 1) * p:(k + 2) * p]
        return float(sums[1] / sums[2]), sums[6:head] / sums[3]


# ---------------------------------------------------------------------------
# benchmark: python -m fastbp.dask --bench
# ---------------------------------------------------------------------------
def benchmark(client, widths=(16, 128, 512, 2048), n_features=64, n_outputs=10,
              rows_per_worker=64, repeat=5, dtype=np.float64):
    """Per-iteration time of one data-parallel gradient round vs parameter count.

    Tiny data (``rows_per_worker`` per worker) so the time is the round's
    overhead: parameters out, scheduling, the gradient back, the sum.  Returns a
    list of dicts: n_params, megabytes, local_ms (``Network.loss_grad`` on the
    concatenated rows), round_ms (median of ``repeat``), overhead_ms.
    """
    workers = len(client.scheduler_info()["workers"])
    rng = np.random.default_rng(0)
    n = rows_per_worker * workers
    X = rng.standard_normal((n, n_features)).astype(dtype)
    y = np.arange(n) % n_outputs
    rows = []
    for h in widths:
        est = MLPClassifier((h,), solver="lbfgs", random_state=0)
        run = _DataParallelFit(est, client, None, 0)
        try:
            fit, net, cluster = run.setup(X, y, None, workers)
            dnet = _DistributedNetwork(net, cluster, run.weight_sum)
            Y = est._label_binarizer.transform(y).astype(dtype)
            sw = np.empty(0, dtype=dtype)
            net.loss_grad(fit.theta, X, Y, sw, 0.0)
            local = _median_ms(lambda: net.loss_grad(fit.theta, X, Y, sw, 0.0), repeat)
            dnet.loss_grad(fit.theta)  # warm-up: load the kernels on the workers
            dist = _median_ms(lambda: dnet.loss_grad(fit.theta), repeat)
        finally:
            run.close()
        rows.append({"n_params": fit.theta.size, "megabytes": fit.theta.nbytes / 1e6,
                     "local_ms": local, "round_ms": dist, "overhead_ms": dist - local})
    return rows


def _median_ms(func, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m fastbp.dask",
                                     description="fastbp on dask: per-iteration benchmark")
    parser.add_argument("--bench", action="store_true", help="run the benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 128, 512, 2048])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 0
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                  processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = benchmark(client, widths=args.widths, repeat=args.repeat)
    print(f"{args.workers} workers, 1 thread each, loopback; one gradient round "
          "(theta out to each worker, sums back)")
    print(f"{'n_params':>10} {'MB':>8} {'local ms':>9} {'round ms':>9} {'overhead ms':>12}")
    for r in rows:
        print(f"{r['n_params']:>10d} {r['megabytes']:>8.3f} {r['local_ms']:>9.2f} "
              f"{r['round_ms']:>9.2f} {r['overhead_ms']:>12.2f}")
    return 0


if __name__ == "__main__":
    # run the importable copy: worker tasks must pickle by reference to fastbp.dask,
    # not by value from __main__
    from fastbp.dask import main as _main
    raise SystemExit(_main())
