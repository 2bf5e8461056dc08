"""Kernel benchmarks: one class per loop kernel and its BLAS twin.

Each class is named after its kernel in CamelCase (``dense_forward`` ->
``DenseForward``, attribute ``kernel``; a second benchmark of a kernel adds a
suffix: ``DenseForwardActivations``); ``tests/test_benchmarks.py`` checks
that every engine kernel of ``fastbp.kernels_loop`` has one.

Parameters: backend x size x dtype x threads.  The backend comes first because asv's
dashboard draws up to 8 parameter combinations by default, taking the parameters in
their order: so every kernel's default graph shows the loop kernels and their BLAS
twin side by side (1 thread, float64, each size); other combinations are a click away.

* backend 'loops-parallel' / 'loops-serial': the ``<name>_parallel`` /
  ``<name>_serial`` twin of ``fastbp.kernels_loop`` (the serial jitted helpers
  without a parallel twin are 'loops-serial' too); 'blas': ``fastbp.kernels_blas``.
* threads: numba's and the BLAS's thread count; serial code runs with 1 only.

``setup`` allocates and fills the arrays and calls the kernel once, so
compiling (or loading the numba cache) stays out of the timings.  Kernels are
called from Python, so the tiniest sizes include the dispatch overhead (a few
microseconds).  ``peakmem_*`` is the process's peak RSS: the loop kernels
allocate nothing, the BLAS twin allocates temporaries.
"""
import numpy as np
from fastbp import kernels_blas, kernels_loop
from fastbp.codes import ACTIVATION_CODES, IDENTITY, LOG_LOSS, OPT_SGD, RELU, SOFTMAX
from fastbp.params import Layout, normalize_connections
from fastbp.simd import lanes

from .common import (SEED, Benchmark, ThreadLimit, median_seconds, random_array,
                     skip_single_threaded)

DTYPES = ["float64", "float32"]
TWIN_BACKENDS = ["loops-parallel", "loops-serial", "blas"]
HELPER_BACKENDS = ["loops-serial", "blas"]
THREADS = [1, 2]
PARAM_NAMES = ["backend", "size", "dtype", "threads"]  # backend first: see the docstring

# m x n_in x n_out: W1's hidden layer at batch 32; W4's first layer at batch 256.
DENSE_SIZES = ["32x64x64", "256x784x512"]


def kernel_function(name, backend):
    """The kernel ``name`` of ``backend`` (see the module docstring)."""
    if backend == "blas":
        return getattr(kernels_blas, name)
    if backend == "loops-parallel":
        return getattr(kernels_loop, name + "_parallel")
    if backend == "loops-serial":
        twin = getattr(kernels_loop, name + "_serial", None)
        return twin if twin is not None else getattr(kernels_loop, name)
    raise ValueError(f"unknown kernel backend {backend!r}")


def parse_size(size):
    return tuple(int(s) for s in size.split("x"))


class _Kernel(Benchmark):
    """Common setup, timing and memory of the kernel benchmarks (not collected by asv)."""

    kernel = None
    param_names = PARAM_NAMES

    def arguments(self, dims, dtype, rng):
        """The kernel's argument tuple for ``dims`` (from the size string)."""
        raise NotImplementedError

    def flops(self, dims):
        """Floating-point operations of one call (for track_gflops)."""
        raise NotImplementedError

    def setup(self, backend, size, dtype, threads):
        skip_single_threaded(backend, threads)
        self.func = kernel_function(self.kernel, backend)
        self.dims = parse_size(size)
        self.args = self.arguments(self.dims, np.dtype(dtype), np.random.default_rng(SEED))
        self.threads = ThreadLimit(threads)
        self.func(*self.args)  # compile or load from the numba cache

    def teardown(self, backend, size, dtype, threads):
        if getattr(self, "threads", None) is not None:  # asv tears down skipped cases too
            self.threads.restore()
            self.threads = None

    def time_kernel(self, backend, size, dtype, threads):
        self.func(*self.args)

    def peakmem_kernel(self, backend, size, dtype, threads):
        self.func(*self.args)


class _Gflops:
    """``track_gflops``: flops of a call over its median time (mixed into dense kernels)."""

    def track_gflops(self, backend, size, dtype, threads):
        seconds = median_seconds(lambda: self.func(*self.args), repeats=5, min_time=0.02)
        return self.flops(self.dims) / seconds / 1e9

    track_gflops.unit = "GFLOP/s"


def _dense(dims, dtype, rng):
    m, n_in, n_out = dims
    w = random_array(rng, (n_out, n_in), dtype) * dtype.type(np.sqrt(2.0 / n_in))
    a_prev = random_array(rng, (m, n_in), dtype, "relu")
    delta = random_array(rng, (m, n_out), dtype) * dtype.type(0.01)
    return w, a_prev, delta


class DenseForward(_Gflops, _Kernel):
    """``a = g(a_prev w^T + b)``, relu."""

    kernel = "dense_forward"
    # and W3's first layer at batch 32: short input rows, the outer-product form
    params = [TWIN_BACKENDS, DENSE_SIZES + ["32x20x64"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, a_prev, _ = _dense(dims, dtype, rng)
        b = random_array(rng, (n_out,), dtype) * dtype.type(0.1)
        return w, b, a_prev, RELU, np.empty((m, n_out), dtype=dtype)

    def flops(self, dims):
        m, n_in, n_out = dims
        return 2.0 * m * n_in * n_out


class DenseBackwardInput(_Gflops, _Kernel):
    """``delta_prev = g'(z_prev) * (delta w)``, relu below."""

    kernel = "dense_backward_input"
    params = [TWIN_BACKENDS, DENSE_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, a_prev, delta = _dense(dims, dtype, rng)
        return w, delta, a_prev, RELU, np.empty((m, n_in), dtype=dtype)

    def flops(self, dims):
        m, n_in, n_out = dims
        return 2.0 * m * n_in * n_out


class DenseBackwardParams(_Gflops, _Kernel):
    """``dw = (delta^T a_prev + alpha w) / m``, ``db``, row norms (finished, not accumulated)."""

    kernel = "dense_backward_params"
    params = [TWIN_BACKENDS, DENSE_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, a_prev, delta = _dense(dims, dtype, rng)
        return (w, delta, a_prev, 1e-4, 1.0 / m, False, np.empty((n_out, n_in), dtype=dtype),
                np.empty(n_out, dtype=dtype), np.empty(2 * n_out, dtype=dtype))

    def flops(self, dims):
        m, n_in, n_out = dims
        return 2.0 * m * n_in * n_out


class OuterRows(_Gflops, _Kernel):
    """``C = A^T B`` over all rows (the register tiles of both backward passes, alone).

    Size ``P x rows x cols``: W4's weight gradients of the second layer (256
    samples, 512 x 512) and a block of 12 samples of its error (p = 512 units,
    784 inputs, the last vector of columns partial).  The rate of this helper is
    the ceiling of ``dense_backward_params`` / ``dense_backward_input``.
    """

    kernel = "outer_rows"
    params = [HELPER_BACKENDS, ["256x512x512", "512x12x784"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        n_p, rows, cols = dims
        return (random_array(rng, (n_p, rows), dtype), random_array(rng, (n_p, cols), dtype),
                np.empty((rows, cols), dtype=dtype), 0, rows, False)

    def flops(self, dims):
        n_p, rows, cols = dims
        return 2.0 * n_p * rows * cols


class PackedRows(_Gflops, _Kernel):
    """``C = A^T B`` over one block of rows from packed operands (``packed_rows``, the
    tiles of the wide layers' kernels, alone).

    Size ``P x rows x cols``: a block of 48 of W4's second-layer units (256 samples,
    512 inputs: ``dense_backward_params``' packed form) and a block of 48 samples
    of its first layer's forward pass (p = 784 inputs, 512 units).  Against
    ``OuterRows``, what packing buys once the operands are packed.
    """

    kernel = "packed_rows"
    params = [HELPER_BACKENDS, ["256x48x512", "784x48x512"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        n_p, rows, cols = dims
        width = lanes(dtype)
        A = random_array(rng, (n_p, rows), dtype)
        B = random_array(rng, (n_p, cols), dtype)
        tiles = np.empty((-(-rows // 6), n_p, 6), dtype=dtype)
        kernels_blas.pack_tiles(A, 0, rows, tiles)
        panels = np.empty((-(-cols // width), n_p, width), dtype=dtype)
        for k in range(panels.shape[0]):
            kernels_blas.pack_panel(B, k, panels[k])
        return tiles, panels, np.empty((rows, cols), dtype=dtype), 0, rows, False

    def flops(self, dims):
        n_p, rows, cols = dims
        return 2.0 * n_p * rows * cols


class DenseForwardActivations(_Kernel):
    """What an activation costs per element: ``dense_forward`` from 1 input into 1024 units.

    One multiply-add per element beside g, so the relu row is the baseline and the
    others show the cost of vecmath's vectorised tanh / logistic / softplus (log1p and
    exp) inside a kernel (``track_ns_per_element``).  The second parameter is the
    activation instead of a size.
    """

    kernel = "dense_forward"
    params = [["loops-serial", "blas"], ["relu", "tanh", "logistic", "softplus"], DTYPES, [1]]
    param_names = ["backend", "activation", "dtype", "threads"]
    rows, units = 256, 1024

    def setup(self, backend, activation, dtype, threads):
        self.activation = ACTIVATION_CODES[activation]
        super().setup(backend, f"{self.rows}x1x{self.units}", dtype, threads)

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w = random_array(rng, (n_out, n_in), dtype)
        b = random_array(rng, (n_out,), dtype)
        a_prev = random_array(rng, (m, n_in), dtype) * dtype.type(3.0)
        return w, b, a_prev, self.activation, np.empty((m, n_out), dtype=dtype)

    def track_ns_per_element(self, backend, activation, dtype, threads):
        seconds = median_seconds(lambda: self.func(*self.args), repeats=5, min_time=0.02)
        return seconds / (self.rows * self.units) * 1e9

    track_ns_per_element.unit = "ns"


class DenseForwardAcc(_Gflops, _Kernel):
    """A shortcut block added to a layer's sums: ``a = g(a + a_src w^T)``, relu.

    Repeated calls keep adding to ``a`` (it grows linearly with the calls, which
    does not change the work).
    """

    kernel = "dense_forward_acc"
    params = [TWIN_BACKENDS, DENSE_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, a_src, _ = _dense(dims, dtype, rng)
        return w, a_src, RELU, np.zeros((m, n_out), dtype=dtype)

    def flops(self, dims):
        m, n_in, n_out = dims
        return 2.0 * m * n_in * n_out


class DenseBackwardInputAcc(_Gflops, _Kernel):
    """A shortcut block's term of its source's error, overwriting (``add`` false), g' = 1."""

    kernel = "dense_backward_input_acc"
    params = [TWIN_BACKENDS, DENSE_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, a_src, delta = _dense(dims, dtype, rng)
        return w, delta, a_src, IDENTITY, False, np.empty((m, n_in), dtype=dtype)

    def flops(self, dims):
        m, n_in, n_out = dims
        return 2.0 * m * n_in * n_out


def _csr_batch(dims, dtype, rng, density=0.02):
    """(w, Xs, order): a CSR matrix of 4 m rows (int64 indices, sorted) and a shuffle."""
    import scipy.sparse as sp
    m, n_in, n_out = dims
    n_total = 4 * m
    X = sp.random(n_total, n_in, density=density, format="csr", dtype=np.float64, rng=rng)
    X.sort_indices()
    Xs = (np.ascontiguousarray(X.data, dtype=dtype),
          np.ascontiguousarray(X.indices, dtype=np.int64),
          np.ascontiguousarray(X.indptr, dtype=np.int64))
    w = random_array(rng, (n_out, n_in), dtype) * dtype.type(np.sqrt(2.0 / (density * n_in)))
    order = rng.permutation(n_total).astype(np.int64)
    return w, Xs, order


# m x n_in x n_out, 2% non-zeros: a bag-of-words first layer.
CSR_SIZES = ["32x1000x64", "256x10000x256"]


class CsrForward(_Kernel):
    """First layer from CSR rows (shuffled), relu."""

    kernel = "csr_forward"
    params = [TWIN_BACKENDS, CSR_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, Xs, order = _csr_batch(dims, dtype, rng)
        b = random_array(rng, (n_out,), dtype) * dtype.type(0.1)
        return w, b, Xs, order, 0, RELU, np.empty((m, n_out), dtype=dtype)


class CsrBackwardParams(_Kernel):
    """First-layer gradients from CSR rows (shuffled), finished."""

    kernel = "csr_backward_params"
    params = [TWIN_BACKENDS, CSR_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, Xs, order = _csr_batch(dims, dtype, rng)
        delta = random_array(rng, (m, n_out), dtype) * dtype.type(0.01)
        return (w, delta, Xs, order, 0, 1e-4, 1.0 / m, False,
                np.empty((n_out, n_in), dtype=dtype), np.empty(n_out, dtype=dtype),
                np.empty(2 * n_out, dtype=dtype))


class CsrForwardAcc(_Kernel):
    """A shortcut block from CSR input rows (shuffled) added to a layer's sums, identity."""

    kernel = "csr_forward_acc"
    params = [TWIN_BACKENDS, CSR_SIZES, DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_in, n_out = dims
        w, Xs, order = _csr_batch(dims, dtype, rng)
        return w, Xs, order, 0, IDENTITY, np.zeros((m, n_out), dtype=dtype)


class GatherRows(_Kernel):
    """Copy a shuffled batch of rows (m x n_features) out of 8 m rows."""

    kernel = "gather_rows"
    params = [TWIN_BACKENDS, ["32x20", "256x784"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, d = dims
        X = random_array(rng, (8 * m, d), dtype, "uniform")
        order = rng.permutation(8 * m).astype(np.int64)
        return X, order, 0, np.empty((m, d), dtype=dtype)


class RowsWithin(_Kernel):
    """predict's input check: m rows of n_features inside per-column limits (all are:
    the whole pass runs)."""

    kernel = "rows_within"
    params = [TWIN_BACKENDS, ["1x784", "1000x784"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, d = dims
        X = random_array(rng, (m, d), dtype, "uniform")
        return X, np.full(d, -1.0, dtype=dtype), np.full(d, 2.0, dtype=dtype)


class PrefetchRows(_Kernel):
    """The cache hints for W2's next shuffled batch: 10 rows of 784 out of 10,000."""

    kernel = "prefetch_rows"
    params = [HELPER_BACKENDS, ["10x784"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        m, d = dims
        X = random_array(rng, (1000 * m, d), dtype, "uniform")
        return X, rng.permutation(1000 * m).astype(np.int64), 0, m


class OptimizerStep(_Kernel):
    """sgd with Nesterov momentum over the flat parameters (W1's and W4's counts)."""

    kernel = "optimizer_step"
    params = [TWIN_BACKENDS, ["5569", "669706"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        (p,) = dims
        theta = random_array(rng, (p,), dtype) * dtype.type(0.1)
        grad = random_array(rng, (p,), dtype) * dtype.type(0.01)
        m1 = np.zeros(p, dtype=dtype)
        m2 = np.zeros(p, dtype=dtype)
        return OPT_SGD, theta, grad, m1, m2, 1e-4, 0.9, 0.999, 1e-8, True


class RpropStep(_Kernel):
    """iRPROP- step over the flat parameters (W1's and W4's counts); gradient signs mixed."""

    kernel = "rprop_step"
    params = [TWIN_BACKENDS, ["5569", "669706"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        (p,) = dims
        theta = random_array(rng, (p,), dtype) * dtype.type(0.1)
        grad = random_array(rng, (p,), dtype) * dtype.type(0.01)
        step = np.full(p, 0.01, dtype=dtype)
        prev = random_array(rng, (p,), dtype) * dtype.type(0.01)
        # the step sizes stay within the bounds over repeated calls: a steady state
        return theta, grad, step, prev, 1e-6, 50.0


class DropoutForward(_Kernel):
    """Inverted dropout of a hidden block (m x n_units), rate 0.5, shuffled rows.

    Repeated calls drop more and more units of the same array (each call its own
    masks): the work per call (a hash per unit) does not depend on the values.
    """

    kernel = "dropout_forward"
    params = [TWIN_BACKENDS, ["32x64", "256x512"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_units = dims
        order = rng.permutation(4 * m).astype(np.int64)
        return random_array(rng, (m, n_units), dtype), order, 0, 12345, 7, 1, 0.5


class DropoutBackward(_Kernel):
    """The error of a dropped-out relu block (m x n_units), rate 0.5, shuffled rows."""

    kernel = "dropout_backward"
    params = [TWIN_BACKENDS, ["32x64", "256x512"], DTYPES, THREADS]

    def arguments(self, dims, dtype, rng):
        m, n_units = dims
        order = rng.permutation(4 * m).astype(np.int64)
        return (random_array(rng, (m, n_units), dtype), random_array(rng, (m, n_units), dtype),
                order, 0, 12345, 7, 1, 0.5, RELU)


# -- serial jitted helpers (no parallel twin) -------------------------------------

class FinalizeParams(_Kernel):
    """Finish accumulated sums of one layer (n_out x n_in): ``dw = (dw + alpha w) scale``."""

    kernel = "finalize_params"
    params = [HELPER_BACKENDS, ["512x784"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        n_out, n_in = dims
        w = random_array(rng, (n_out, n_in), dtype) * dtype.type(0.05)
        dw = random_array(rng, (n_out, n_in), dtype)
        # scale 1 keeps dw bounded over the repeated calls: dw grows by alpha w per call.
        return (w, 1e-4, 1.0, dw, random_array(rng, (n_out,), dtype),
                np.empty(2 * n_out, dtype=dtype))


class OutputDelta(_Kernel):
    """Softmax + cross-entropy output delta of a batch (m x n_classes)."""

    kernel = "output_delta"
    params = [HELPER_BACKENDS, ["256x10"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        m, k = dims
        logits = rng.standard_normal((m, k))
        a = np.exp(logits - logits.max(axis=1, keepdims=True))
        a = np.ascontiguousarray(a / a.sum(axis=1, keepdims=True), dtype=dtype)
        Y = np.zeros((m, k), dtype=dtype)
        Y[np.arange(m), rng.integers(0, k, m)] = 1.0
        return (a, Y, np.empty(0, dtype=dtype), np.empty(0, dtype=np.int64), 0, LOG_LOSS,
                SOFTMAX, 1.0, float(np.finfo(dtype).eps), False, np.empty((m, k), dtype=dtype))


class LayerSqNorms(_Kernel):
    """Per-layer squared gradient norms over W4's flat gradient."""

    kernel = "layer_sq_norms"
    params = [HELPER_BACKENDS, ["784x512x512x10"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        layout = Layout(dims, [RELU] * (len(dims) - 2) + [SOFTMAX])
        grad = random_array(rng, (layout.n_params,), dtype) * dtype.type(0.01)
        return grad, layout.table, np.empty(layout.n_layers, dtype=dtype)


class BlockSqNorms(_Kernel):
    """Per-shortcut-block squared gradient norms of W4's net with shortcut connections."""

    kernel = "block_sq_norms"
    params = [HELPER_BACKENDS, ["784x512x512x10"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        sources = normalize_connections("shortcut", len(dims) - 2)
        layout = Layout(dims, [RELU] * (len(dims) - 2) + [SOFTMAX], sources)
        grad = random_array(rng, (layout.n_params,), dtype) * dtype.type(0.01)
        return grad, layout.skips, np.empty(len(layout.skip_keys), dtype=dtype)


class ScaleVector(_Kernel):
    """In-place scaling of W4's flat gradient (factor 1: values stay put over repeats)."""

    kernel = "scale_vector"
    params = [HELPER_BACKENDS, ["669706"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        (p,) = dims
        return random_array(rng, (p,), dtype), 1.0


class ColumnStats(_Kernel):
    """A fit's input statistics (mean, std, min, max per column) of W2's training X."""

    kernel = "column_stats"
    params = [HELPER_BACKENDS, ["10000x784"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        n, d = dims
        return random_array(rng, (n, d), dtype), np.empty((4, d))


class CopyRows(_Kernel):
    """Copy a predicted chunk (m x n_outputs) into the output block at row m."""

    kernel = "copy_rows"
    params = [HELPER_BACKENDS, ["1024x10"], DTYPES, [1]]

    def arguments(self, dims, dtype, rng):
        m, k = dims
        return random_array(rng, (m, k), dtype), np.empty((4 * m, k), dtype=dtype), m
