"""Backpropagation kernels in loop (subscript) form, compiled with Numba.

Each operation exists twice, from one source: ``<name>_serial`` (``njit``) and
``<name>_parallel`` (``njit(parallel=True)``); ``engine`` picks one per call
from the work size alone (``config.PARALLEL_MIN_WORK``), never from the thread
count.  The plain-Python source of each is the ``python`` backend, and
``kernels_blas`` has the same names and arguments in matrix form.

Layout: activations and deltas are (n_samples, n_units)
C-order; weights ``w[j, i]`` are (n_out, n_in) C-order, row j contiguous over
i; biases ``b[j]``.  Kernels validate nothing, return only scalars, and allocate
nothing but scratch (a transposed weight block, a block counter).  ``prange``
runs over an index whose iterations write disjoint memory.  The tiled layer
kernels run one ``prange`` iteration per worker, and each worker takes blocks
from a shared counter (``atomic.claim``) until none is left, so a core that
runs faster takes more of them; a block computes the same bits whoever runs it.
"""
import numpy as np
from numba import prange

from .codes import (L_NIN, L_NOUT, L_WOFF, OPT_ADAGRAD, OPT_ADAM, OPT_RMSPROP, OPT_SGD, S_NIN,
                    S_NOUT, S_WOFF)
from .jit import jit, twins
from .activations import activate_row, derivative_row
from .atomic import MAX_WORKERS, claim
from .losses import loss_delta_row
from .simd import LANES_BYTES, prefetch, vadd, vfma, vload, vmul, vsplat, vstore, vsum, vzero

# Rows of the register tile of ``outer_tile`` (its columns are one SIMD vector).
TILE_ROWS = 6
# Wide layers (at least PACK_MIN_WORK multiply-adds in a call) take the packed form of
# the three dense kernels (``packed_rows``): the vector operand is copied once per call
# into panels of one vector's width (``pack_panel``, ``pack_panel_t``) and the
# broadcast operand of each block into 6-row tiles (``pack_tiles``), so that a tile
# reads two contiguous streams instead of P rows that lie n_in or n_out elements
# apart (at 512 float64 units, 4 KiB apart: every row in the same L1 sets and on its
# own page).  Blocks of PACK_ROWS rows (8 tiles) share each panel while it is in
# cache.  Batch 256, 784->512 and 512->512, time of the packed form / the unpacked
# one, packing included (same process, alternated): float64 one core: forward (outer
# form over w^T / dot form) 0.75, params 0.82-0.93, input 0.53-0.66; two threads:
# 0.89-0.92, 0.84-1.00, 0.59-0.76.  Float32 one core 0.72-0.97, two threads
# 0.93-1.18.  W4 epoch 0.86-0.96 s -> 0.71-0.73 s; W5 unchanged (0.40 s).  Chunking
# p so that a panel's slice stays in L1 across the tiles was 6-25% slower.
PACK_MIN_WORK = 1 << 20
PACK_ROWS = 8 * TILE_ROWS
# dense_forward takes the outer-product form (``outer_rows`` over a transposed copy of
# w) for input rows of at most this many bytes (32 float64, 64 float32 inputs), from
# this many samples and units on: on short rows the dot form's tiles spend a horizontal
# sum per output and run partly scalar; few units fill a vector poorly.  One core,
# batch 32, outer / dot time: float64 20->64 0.58, 32->64 0.82, 48->64 1.03, 64->64
# 1.41, 20->16 0.86, 20->10 1.23, 20->1 3.5; float32 20->64 0.34, 64->64 0.71, 20->16
# 0.88, 784->30 at batch 10 4.7.
OUTER_FORWARD_MAX_BYTES = 256
OUTER_FORWARD_MIN_ROWS = 8
OUTER_FORWARD_MIN_UNITS = 16
# True in the ``_parallel`` twin of every kernel (``jit.twins`` sets it in that copy's
# globals), False here and so in the serial twin and the plain-Python form: the
# serial twin runs its blocks in order, without the block counter of ``atomic.claim``
# (an allocation and two atomic adds per call: 7% of a batch-1 step).
PARALLEL_TWIN = False
# ``add_row_dots`` takes 4 x 6 tiles with AVX-512 (32 vector registers) on float64 rows
# longer than WIDE_DOT_MIN_BYTES.  One core, batch 256, time of 4 x 6 tiles / 4 x 3:
# float64 784->512 0.77-0.83, 768->512 0.80, 1024->512 0.75, 2048->256 0.79,
# 784->30 0.84, 400->300 0.91, 256->256 0.94, 600->400 0.99, but 512->512 1.31 and
# 512->256 1.41 (4,096-byte rows) and 200->100 1.09; float32 1.5-1.9 at 512-784 inputs.
WIDE_DOT_TILE = LANES_BYTES >= 256
WIDE_DOT_MIN_BYTES = 4096
# Rows per block of ``rows_within``'s parallel twin (~50 KB of 784 float64 inputs).
ROWS_WITHIN_BLOCK = 64


def gather_rows(X, order, start, out):
    """Copy the rows of a shuffled mini-batch: ``out[n, i] = X[order[start + n], i]``.

    X: (n_total, n_features) C; order: (n_total,) int64; out: (m, n_features) C,
    overwritten.  Parallel over n (each n writes its own row).
    BLAS twin: ``kernels_blas.gather_rows``.
    """
    d = X.shape[1]
    for n in prange(out.shape[0]):
        src = X[order[start + n]]
        dst = out[n]
        for i in range(d):
            dst[i] = src[i]


gather_rows_serial, gather_rows_parallel = twins(gather_rows)


@jit
def prefetch_rows(A, order, start, m):
    """Ask for rows of A to be brought into L2: every cache line of ``A[r, :]`` with
    ``r = order[start + n]``, n < m (``simd.prefetch``, one hint per line); writes nothing.

    A: (n_total, n_columns) C; order: (n_total,) int64.  The engine issues it for
    the next shuffled mini-batch before computing the current one, so the rows
    that batch gathers arrive from DRAM while this one computes.  BLAS twin:
    ``kernels_blas.prefetch_rows`` (nothing to do).
    """
    step = max(64 // A.itemsize, 1)
    last = A.shape[1] - 1
    for n in range(start, start + m):
        row = A[order[n]]
        for i in range(0, last, step):
            prefetch(row, i)
        prefetch(row, last)


@jit
def add_row_dots(w, x, n0, n1, j0, j1, a):
    """Add a block of dot products: ``a_nj <- a_nj + sum_i w_ji x_ni`` for samples
    n0..n1-1 and units j0..j1-1.

    w: (n_out, n_in) C; x: (m, n_in) C; a: (m, n_out) C; n1 - n0 <= 4.  The
    inner loop of ``add_block_dots`` (``dense_forward``, ``dense_forward_acc``).

    Register-blocked: with 4 rows, a tile of 4 samples x 3 units keeps 12 sums
    while i runs over the contiguous rows; LLVM vectorises over i, so the tile
    takes 12 vector accumulators + 3 weight vectors + 1 input vector, AVX2's 16
    registers (a 4 x 4 tile spilled 5 accumulators to the stack every
    iteration and ran at 60% of this one's rate on 784-512 layers).  With
    AVX-512's 32 registers (``WIDE_DOT_TILE``), float64 rows longer than
    ``WIDE_DOT_MIN_BYTES`` first take tiles of 4 x 6 (24 sums: 10 loads per 24
    multiply-adds instead of 7 per 12); the units left over take 4 x 3.  Fewer rows:
    one sample at a time, 4 units at a time.  Leftover units take the plain dot.
    """
    n_in = w.shape[1]
    j_rest = j0
    if n1 - n0 == 4:
        x0 = x[n0]
        x1 = x[n0 + 1]
        x2 = x[n0 + 2]
        x3 = x[n0 + 3]
        j = j0
        if WIDE_DOT_TILE and w.itemsize == 8 and n_in * 8 > WIDE_DOT_MIN_BYTES:
            while j + 6 <= j1:  # 4 x 6: 24 sums, 6 weight and 1 input vectors
                w0 = w[j]
                w1 = w[j + 1]
                w2 = w[j + 2]
                w3 = w[j + 3]
                w4 = w[j + 4]
                w5 = w[j + 5]
                s00 = a[n0, j]
                s01 = a[n0, j + 1]
                s02 = a[n0, j + 2]
                s03 = a[n0, j + 3]
                s04 = a[n0, j + 4]
                s05 = a[n0, j + 5]
                s10 = a[n0 + 1, j]
                s11 = a[n0 + 1, j + 1]
                s12 = a[n0 + 1, j + 2]
                s13 = a[n0 + 1, j + 3]
                s14 = a[n0 + 1, j + 4]
                s15 = a[n0 + 1, j + 5]
                s20 = a[n0 + 2, j]
                s21 = a[n0 + 2, j + 1]
                s22 = a[n0 + 2, j + 2]
                s23 = a[n0 + 2, j + 3]
                s24 = a[n0 + 2, j + 4]
                s25 = a[n0 + 2, j + 5]
                s30 = a[n0 + 3, j]
                s31 = a[n0 + 3, j + 1]
                s32 = a[n0 + 3, j + 2]
                s33 = a[n0 + 3, j + 3]
                s34 = a[n0 + 3, j + 4]
                s35 = a[n0 + 3, j + 5]
                for i in range(n_in):
                    u0 = w0[i]
                    u1 = w1[i]
                    u2 = w2[i]
                    u3 = w3[i]
                    u4 = w4[i]
                    u5 = w5[i]
                    v = x0[i]
                    s00 += u0 * v
                    s01 += u1 * v
                    s02 += u2 * v
                    s03 += u3 * v
                    s04 += u4 * v
                    s05 += u5 * v
                    v = x1[i]
                    s10 += u0 * v
                    s11 += u1 * v
                    s12 += u2 * v
                    s13 += u3 * v
                    s14 += u4 * v
                    s15 += u5 * v
                    v = x2[i]
                    s20 += u0 * v
                    s21 += u1 * v
                    s22 += u2 * v
                    s23 += u3 * v
                    s24 += u4 * v
                    s25 += u5 * v
                    v = x3[i]
                    s30 += u0 * v
                    s31 += u1 * v
                    s32 += u2 * v
                    s33 += u3 * v
                    s34 += u4 * v
                    s35 += u5 * v
                a[n0, j] = s00
                a[n0, j + 1] = s01
                a[n0, j + 2] = s02
                a[n0, j + 3] = s03
                a[n0, j + 4] = s04
                a[n0, j + 5] = s05
                a[n0 + 1, j] = s10
                a[n0 + 1, j + 1] = s11
                a[n0 + 1, j + 2] = s12
                a[n0 + 1, j + 3] = s13
                a[n0 + 1, j + 4] = s14
                a[n0 + 1, j + 5] = s15
                a[n0 + 2, j] = s20
                a[n0 + 2, j + 1] = s21
                a[n0 + 2, j + 2] = s22
                a[n0 + 2, j + 3] = s23
                a[n0 + 2, j + 4] = s24
                a[n0 + 2, j + 5] = s25
                a[n0 + 3, j] = s30
                a[n0 + 3, j + 1] = s31
                a[n0 + 3, j + 2] = s32
                a[n0 + 3, j + 3] = s33
                a[n0 + 3, j + 4] = s34
                a[n0 + 3, j + 5] = s35
                j += 6
        while j + 3 <= j1:
            w0 = w[j]
            w1 = w[j + 1]
            w2 = w[j + 2]
            s00 = a[n0, j]
            s01 = a[n0, j + 1]
            s02 = a[n0, j + 2]
            s10 = a[n0 + 1, j]
            s11 = a[n0 + 1, j + 1]
            s12 = a[n0 + 1, j + 2]
            s20 = a[n0 + 2, j]
            s21 = a[n0 + 2, j + 1]
            s22 = a[n0 + 2, j + 2]
            s30 = a[n0 + 3, j]
            s31 = a[n0 + 3, j + 1]
            s32 = a[n0 + 3, j + 2]
            for i in range(n_in):
                u0 = w0[i]
                u1 = w1[i]
                u2 = w2[i]
                v = x0[i]
                s00 += u0 * v
                s01 += u1 * v
                s02 += u2 * v
                v = x1[i]
                s10 += u0 * v
                s11 += u1 * v
                s12 += u2 * v
                v = x2[i]
                s20 += u0 * v
                s21 += u1 * v
                s22 += u2 * v
                v = x3[i]
                s30 += u0 * v
                s31 += u1 * v
                s32 += u2 * v
            a[n0, j] = s00
            a[n0, j + 1] = s01
            a[n0, j + 2] = s02
            a[n0 + 1, j] = s10
            a[n0 + 1, j + 1] = s11
            a[n0 + 1, j + 2] = s12
            a[n0 + 2, j] = s20
            a[n0 + 2, j + 1] = s21
            a[n0 + 2, j + 2] = s22
            a[n0 + 3, j] = s30
            a[n0 + 3, j + 1] = s31
            a[n0 + 3, j + 2] = s32
            j += 3
        j_rest = j
    else:
        for n in range(n0, n1):
            xn = x[n]
            row = a[n]
            j = j0
            while j + 4 <= j1:
                w0 = w[j]
                w1 = w[j + 1]
                w2 = w[j + 2]
                w3 = w[j + 3]
                s0 = row[j]
                s1 = row[j + 1]
                s2 = row[j + 2]
                s3 = row[j + 3]
                for i in range(n_in):
                    v = xn[i]
                    s0 += w0[i] * v
                    s1 += w1[i] * v
                    s2 += w2[i] * v
                    s3 += w3[i] * v
                row[j] = s0
                row[j + 1] = s1
                row[j + 2] = s2
                row[j + 3] = s3
                j += 4
            j_rest = j
    for n in range(n0, n1):
        xn = x[n]
        row = a[n]
        for j in range(j_rest, j1):
            wj = w[j]
            s = row[j]
            for i in range(n_in):
                s += wj[i] * xn[i]
            row[j] = s


@jit
def outer_tile(A, B, C, r0, c0, n, add):
    """A 6-row register tile of a sum of outer products:
    ``C[r0 + k, c0:c0 + n] (+)= sum_p A[p, r0 + k] B[p, c0:c0 + n]``, k = 0..5.

    A: (P, >= r0 + 6), any layout (its 6 scalars of row p are broadcast); B:
    (P, >= c0 + n) C, n elements of row p read as one vector; C: (>= r0 + 6,
    >= c0 + n) C; n <= L = ``simd.lanes`` of the dtype (a last, partial vector
    of columns is read and written through masks).  ``add`` false overwrites.

    The 6 sums stay in registers for the whole loop over p, which costs one
    vector load and 6 broadcasts per 6 vector multiply-adds: the micro-kernel
    of a BLAS library, with no horizontal sums (the dot-product form's tiles
    reduce every sum across lanes at the end).
    """
    s0 = vzero(C[r0])
    s1 = s0
    s2 = s0
    s3 = s0
    s4 = s0
    s5 = s0
    for p in range(B.shape[0]):
        b = vload(B[p], c0, n)
        s0 = vfma(vsplat(b, A[p, r0]), b, s0)
        s1 = vfma(vsplat(b, A[p, r0 + 1]), b, s1)
        s2 = vfma(vsplat(b, A[p, r0 + 2]), b, s2)
        s3 = vfma(vsplat(b, A[p, r0 + 3]), b, s3)
        s4 = vfma(vsplat(b, A[p, r0 + 4]), b, s4)
        s5 = vfma(vsplat(b, A[p, r0 + 5]), b, s5)
    if add:
        s0 = vadd(s0, vload(C[r0], c0, n))
        s1 = vadd(s1, vload(C[r0 + 1], c0, n))
        s2 = vadd(s2, vload(C[r0 + 2], c0, n))
        s3 = vadd(s3, vload(C[r0 + 3], c0, n))
        s4 = vadd(s4, vload(C[r0 + 4], c0, n))
        s5 = vadd(s5, vload(C[r0 + 5], c0, n))
    vstore(C[r0], c0, s0, n)
    vstore(C[r0 + 1], c0, s1, n)
    vstore(C[r0 + 2], c0, s2, n)
    vstore(C[r0 + 3], c0, s3, n)
    vstore(C[r0 + 4], c0, s4, n)
    vstore(C[r0 + 5], c0, s5, n)


@jit
def outer_row(A, B, C, r, c0, n, add):
    """``outer_tile`` for one row: ``C[r, c0:c0 + n] (+)= sum_p A[p, r] B[p, c0:c0 + n]``.

    Shapes as in ``outer_tile``; one vector load per vector multiply-add.
    """
    s = vzero(C[r])
    for p in range(B.shape[0]):
        b = vload(B[p], c0, n)
        s = vfma(vsplat(b, A[p, r]), b, s)
    if add:
        s = vadd(s, vload(C[r], c0, n))
    vstore(C[r], c0, s, n)


@jit
def outer_rows(A, B, C, r0, r1, add):
    """Rows r0..r1-1 of a sum of outer products:
    ``C[r, c] (+)= sum_p A[p, r] B[p, c]``, i.e. ``C[r0:r1] (+)= (A^T B)[r0:r1]``.

    A: (P, >= r1), any layout; B: (P, n) C; C: (>= r1, n) C.  The shared core of
    ``dense_backward_params`` (A = delta, B = a_prev, C = dw: rows are units j,
    p runs over samples) and ``dense_backward_input`` (A = delta^T, B = w, C =
    delta_prev: rows are samples, p runs over units).  Columns in vectors of L
    (the last one partial), rows in ``outer_tile``'s 6-row tiles (``outer_row``
    for the last r1 - r0 mod 6); the tiles of a block of rows share each
    vector of B's columns while it is in cache.  Sums over p in a fixed order:
    no dependence on how rows are split between threads.  BLAS twin:
    ``kernels_blas.outer_rows``.
    """
    n = C.shape[1]
    width = LANES_BYTES // C.itemsize
    for c0 in range(0, n, width):
        count = min(width, n - c0)
        r = r0
        while r + TILE_ROWS <= r1:
            outer_tile(A, B, C, r, c0, count, add)
            r += TILE_ROWS
        for rr in range(r, r1):
            outer_row(A, B, C, rr, c0, count, add)


@jit
def pack_panel(B, k, panel):
    """Panel k of B: ``panel[p, c] = B[p, k L + c]`` for ``c < min(L, n - k L)``, 0 beyond.

    B: (P, n) C; panel: (P, L) C, L = ``simd.lanes`` of the dtype.  The vector
    operand of ``packed_rows`` (the params kernel's a_prev, the input kernel's
    w) as one contiguous stream of P vectors.  BLAS twin: ``kernels_blas.pack_panel``.
    """
    n = B.shape[1]
    width = panel.shape[1]
    c0 = k * width
    count = min(width, n - c0)
    for p in range(B.shape[0]):
        vstore(panel[p], 0, vload(B[p], c0, count), width)


@jit
def pack_panel_t(w, k, panel):
    """Panel k of w^T: ``panel[i, c] = w[k L + c, i]`` for ``c < min(L, n_out - k L)``, 0 beyond.

    w: (n_out, n_in) C; panel: (n_in, L) C.  The forward kernel's vector operand
    (B = w^T).  The inputs are taken 16 at a time, so that the 16 rows of the
    panel being written stay in L1 while every unit's row is read.  BLAS twin:
    ``kernels_blas.pack_panel_t``.
    """
    n_out, n_in = w.shape
    width = panel.shape[1]
    c0 = k * width
    count = min(width, n_out - c0)
    for i0 in range(0, n_in, 16):
        i1 = min(i0 + 16, n_in)
        for c in range(count):
            wc = w[c0 + c]
            for i in range(i0, i1):
                panel[i, c] = wc[i]
        for c in range(count, width):
            for i in range(i0, i1):
                panel[i, c] = 0.0


@jit
def pack_tiles(A, r0, r1, At):
    """The broadcast operand of ``packed_rows`` in tiles of 6 rows:
    ``At[t, p, k] = A[p, r0 + 6 t + k]`` where ``r0 + 6 t + k < r1``, else 0.

    A: (P, >= r1), C-contiguous (delta, for the params kernel) or its transpose
    (a C array's ``.T``, for the other two); At: (>= ceil((r1 - r0) / 6), P, 6)
    C.  A is read along its contiguous axis: the 6 values of row p at a time
    when rows are contiguous, else column r (a row of the C array) at a time.
    BLAS twin: ``kernels_blas.pack_tiles``.
    """
    by_rows = A.strides[1] == A.itemsize
    for t in range((r1 - r0 + TILE_ROWS - 1) // TILE_ROWS):
        tile = At[t]
        first = r0 + TILE_ROWS * t
        count = min(TILE_ROWS, r1 - first)
        if by_rows:
            for p in range(A.shape[0]):
                row = A[p]
                for k in range(count):
                    tile[p, k] = row[first + k]
                for k in range(count, TILE_ROWS):
                    tile[p, k] = 0.0
        else:
            for k in range(TILE_ROWS):
                if k < count:
                    for p in range(A.shape[0]):
                        tile[p, k] = A[p, first + k]
                else:
                    for p in range(A.shape[0]):
                        tile[p, k] = 0.0


@jit(inline="always")
def _store_tile_row(C, r, c0, n, s, add):
    """``C[r, c0:c0 + n] = s`` (``+ C[r, c0:c0 + n]`` when ``add``).

    C: (>= r + 1, n_cols) C, n_cols >= c0 + n; s: a vector of L lanes (its first n
    are stored)."""
    if add:
        s = vadd(s, vload(C[r], c0, n))
    vstore(C[r], c0, s, n)


@jit
def packed_tile(tile, panel, C, r0, c0, n, rows, add):
    """``outer_tile`` from packed operands: ``C[r0 + k, c0:c0 + n] (+)= sum_p tile[p, k]
    panel[p, :n]`` for k < rows (<= 6).

    tile: (P, 6) C (``pack_tiles``); panel: (P, L) C (``pack_panel``); C: (>=
    r0 + rows, >= c0 + n) C.  The sums are ``outer_tile``'s, in the same order
    (from zero over p, then C added when ``add``): the same bits.
    """
    width = panel.shape[1]
    s0 = vzero(C[r0])
    s1 = s0
    s2 = s0
    s3 = s0
    s4 = s0
    s5 = s0
    for p in range(panel.shape[0]):
        b = vload(panel[p], 0, width)
        a = tile[p]
        s0 = vfma(vsplat(b, a[0]), b, s0)
        s1 = vfma(vsplat(b, a[1]), b, s1)
        s2 = vfma(vsplat(b, a[2]), b, s2)
        s3 = vfma(vsplat(b, a[3]), b, s3)
        s4 = vfma(vsplat(b, a[4]), b, s4)
        s5 = vfma(vsplat(b, a[5]), b, s5)
    _store_tile_row(C, r0, c0, n, s0, add)
    if rows > 1:
        _store_tile_row(C, r0 + 1, c0, n, s1, add)
    if rows > 2:
        _store_tile_row(C, r0 + 2, c0, n, s2, add)
    if rows > 3:
        _store_tile_row(C, r0 + 3, c0, n, s3, add)
    if rows > 4:
        _store_tile_row(C, r0 + 4, c0, n, s4, add)
    if rows > 5:
        _store_tile_row(C, r0 + 5, c0, n, s5, add)


@jit
def packed_rows(tiles, panels, C, r0, r1, add):
    """Rows r0..r1-1 of ``C (+)= A^T B`` from packed operands:
    ``C[r, c] (+)= sum_p A[p, r] B[p, c]``, with ``tiles = pack_tiles(A, r0, r1)``
    and ``panels[k] = pack_panel(B, k)`` (or ``pack_panel_t``, for B = w^T).

    tiles: (>= ceil((r1 - r0) / 6), P, 6) C; panels: (ceil(n / L), P, L) C; C:
    (>= r1, n) C.  ``outer_rows``' sums in the same order (the same bits for any
    block of rows), from operands that are read as two contiguous streams.  Each
    panel serves every tile of the block while it is in cache.  BLAS twin:
    ``kernels_blas.packed_rows``.
    """
    n = C.shape[1]
    width = panels.shape[2]
    for k in range(panels.shape[0]):
        c0 = k * width
        count = min(width, n - c0)
        for t in range((r1 - r0 + TILE_ROWS - 1) // TILE_ROWS):
            r = r0 + TILE_ROWS * t
            packed_tile(tiles[t], panels[k], C, r, c0, count, min(TILE_ROWS, r1 - r), add)


@jit(inline="always")
def packed_form(rows, columns, work, dtype_of):
    """Whether a dense kernel call takes the packed form (``packed_rows``) for a result
    C: (rows, columns) of ``C[r, c] (+)= sum_p A[p, r] B[p, c]`` from ``work`` multiply-adds:
    ``work >= PACK_MIN_WORK``, ``rows >= PACK_ROWS`` and ``columns >= L`` (a panel
    of one vector of L lanes of dtype_of's type is then mostly full: 10 outputs
    would fill 10 of 32 float64 lanes).  Shapes only, never the thread count."""
    return (work >= PACK_MIN_WORK and rows >= PACK_ROWS
            and columns * dtype_of.itemsize >= LANES_BYTES)


@jit(inline="always")
def _pack_all(B, transposed, panels, parallel):
    """Every panel of B or, ``transposed``, of B^T: ``panels[k] = pack_panel(B, k)``
    (``pack_panel_t``) for k = 0 .. ceil(n / L) - 1.

    B: (P, n) or, transposed, (n, P) C; panels: (ceil(n / L), P, L) C.  Inlined
    into the packed kernels with ``parallel`` = their PARALLEL_TWIN: the panels
    claimed one at a time by the workers of a ``prange`` (``atomic.claim``).
    """
    n_panels = panels.shape[0]
    if parallel and n_panels > 1:
        claimed = np.empty(1, np.int64)  # the next unclaimed panel (np.zeros would be a parfor)
        claimed[0] = 0
        for _ in prange(min(n_panels, MAX_WORKERS)):
            k = claim(claimed)
            while k < n_panels:
                if transposed:
                    pack_panel_t(B, k, panels[k])
                else:
                    pack_panel(B, k, panels[k])
                k = claim(claimed)
    else:
        for k in range(n_panels):
            if transposed:
                pack_panel_t(B, k, panels[k])
            else:
                pack_panel(B, k, panels[k])


@jit(inline="always")
def pack_blocks(rows, parallel):
    """Blocks of the rows of a packed kernel's result C: (rows, n_cols) (units or
    samples), as tile bounds: block b holds the tiles ``t_b <= t < t_{b+1}`` (tiles of
    6 rows, n_t = ceil(rows / 6)).  Serial: 8 tiles a block (PACK_ROWS rows), each
    panel shared by them while it is in cache.  Parallel: 8 tiles while more than 32
    are left, then ``ceil(left / 4)``: the blocks shrink towards the end, so the
    workers, claiming them in turn, finish within about a tile of each other.
    Returns the bounds, (n_b + 1,) int64.

    The packed kernels' bits do not depend on how the rows are split (each row is
    one chain of sums in any tile).  On 2 threads and 256 samples (43 tiles),
    blocks of 8 tiles gave one worker 24 tiles and the other 19.
    """
    n_tiles = (rows + TILE_ROWS - 1) // TILE_ROWS
    per_block = PACK_ROWS // TILE_ROWS
    bounds = np.empty(n_tiles + 1, np.int64)
    bounds[0] = 0
    n_blocks = 0
    t = 0
    while t < n_tiles:
        left = n_tiles - t
        size = min(per_block, (left + 3) // 4) if parallel else per_block
        t += max(1, min(size, left))
        n_blocks += 1
        bounds[n_blocks] = t
    return bounds[:n_blocks + 1]


@jit(inline="always")
def block_range(bounds, b, rows):
    """Rows r0 .. r1 - 1 of block b of ``pack_blocks`` for a result C: (rows, n_cols):
    ``r_0 = 6 t_b`` and ``r_1 = min(6 t_{b+1}, rows)``; bounds: (n_b + 1,) int64."""
    return TILE_ROWS * bounds[b], min(TILE_ROWS * bounds[b + 1], rows)


@jit(inline="always")
def new_tiles(workers, P, dtype_of):
    """Scratch for each worker's tiles (``pack_tiles``) of a block of ``pack_blocks``:
    ``tiles[worker, t, p, k] = A[p, r_0 + 6 t + k]`` once packed, shape (workers,
    n_tiles, P, TILE_ROWS) with n_tiles = PACK_ROWS / TILE_ROWS."""
    return np.empty((workers, PACK_ROWS // TILE_ROWS, P, TILE_ROWS), dtype=dtype_of.dtype)


@jit(inline="always")
def new_panels(n, P, dtype_of):
    """Scratch for the panels of an operand B: (P, n) of dtype_of's type, where
    ``panels[k, p, c] = B[p, k L + c]`` once packed: (n_panels, P, L), n_panels =
    ceil(n / L)."""
    width = LANES_BYTES // dtype_of.itemsize
    return np.empty(((n + width - 1) // width, P, width), dtype=dtype_of.dtype)


@jit
def dot_units(w):
    """Units per block of ``add_block_dots``: a multiple of 3 (the tile's width)
    whose weights take about 256 KiB, a quarter of an L2 cache:
    ``units = max(3, 3 floor(2^18 / (3 n_in s)))`` for s bytes per element.

    w: (n_out, n_in) C.
    """
    per_unit = w.shape[1] * w.itemsize
    return max(3, (262144 // max(per_unit, 1)) // 3 * 3)


@jit
def add_block_dots(w, x, g0, g1, units, a):
    """``a_nj <- a_nj + sum_i w_ji x_ni`` for samples g0..g1-1 (at most 16) and every unit.

    w: (n_out, n_in) C; x: (m, n_in) C; a: (m, n_out) C.  Units in blocks of
    ``units``; each block's rows of w serve the samples 4 at a time
    (``add_row_dots``) while they are in cache.
    """
    n_out = w.shape[0]
    for j0 in range(0, n_out, units):
        j1 = min(j0 + units, n_out)
        for n0 in range(g0, g1, 4):
            add_row_dots(w, x, n0, min(n0 + 4, g1), j0, j1, a)


@jit
def transpose_into(w, wt):
    """``wt_ij = w_ji``.  w: (n_out, n_in) C; wt: (n_in, n_out) C.

    Rows of w read in order, wt written a column at a time: for the small weight
    blocks it serves (``dense_forward``'s outer-product form) both stay in L1.
    BLAS twin: ``kernels_blas.transpose_into``.
    """
    for j in range(w.shape[0]):
        wj = w[j]
        for i in range(w.shape[1]):
            wt[i, j] = wj[i]


@jit(inline="always")
def forward_outer(w, m):
    """Whether ``dense_forward`` takes the outer-product form for m samples:
    ``outer = n_in s_w <= OUTER_FORWARD_MAX_BYTES and m >= OUTER_FORWARD_MIN_ROWS and
    n_out >= OUTER_FORWARD_MIN_UNITS`` for w: (n_out, n_in) of s_w bytes per element."""
    n_out, n_in = w.shape
    return (n_in * w.itemsize <= OUTER_FORWARD_MAX_BYTES and m >= OUTER_FORWARD_MIN_ROWS
            and n_out >= OUTER_FORWARD_MIN_UNITS)


@jit(inline="always")
def forward_rows(w, b, a_prev, wt, outer, units, act, a, g0, g1):
    """Samples g0..g1-1 of ``dense_forward``: ``a_nj = g(sum_i w_ji a_prev_ni + b_j)``
    (its block nb is g0 = 16 nb, g1 = min(g0 + 16, m)).  Each a_nj comes out the same
    for any g0 that is a multiple of 4 (the dot form's tiles start there; the outer
    form computes every row alike).

    Shapes as in ``dense_forward``; wt: (n_in, n_out) C, w transposed when
    ``outer`` (the outer-product form), else unused; units: ``dot_units(w)``.
    """
    for n in range(g0, g1):
        row = a[n]
        for j in range(a.shape[1]):
            row[j] = b[j]
    if outer:
        outer_rows(a_prev.T, wt, a, g0, g1, True)
    else:
        add_block_dots(w, a_prev, g0, g1, units, a)
    for n in range(g0, g1):
        activate_row(a[n], act)


@jit(inline="always")
def forward_packed(b, a_prev, panels, tiles, act, a, g0, g1):
    """A block of ``dense_forward``'s packed form: ``a_nj = g(b_j + sum_i a_prev_ni w_ji)``
    for samples n = g0 .. g1 - 1 (g0 a multiple of 6), the outer-product form's
    sums (``outer_rows`` over w^T), the same bits.

    panels: (n_panels, n_in, L) C, w^T's (``pack_panel_t``); tiles: (n_tiles, n_in,
    TILE_ROWS) C, scratch for the block's rows of a_prev (``pack_tiles`` of
    a_prev^T), n_tiles >= (g1 - g0) / TILE_ROWS.  Shapes as in ``dense_forward``.
    """
    for n in range(g0, g1):
        row = a[n]
        for j in range(a.shape[1]):
            row[j] = b[j]
    pack_tiles(a_prev.T, g0, g1, tiles)
    packed_rows(tiles, panels, a, g0, g1, True)
    for n in range(g0, g1):
        activate_row(a[n], act)


def dense_forward(w, b, a_prev, act, a):
    """Forward through one dense layer: ``z_nj = sum_i w_ji a_ni + b_j``, ``a_nj = g(z_nj)``.

    w: (n_out, n_in) C; b: (n_out,); a_prev: (m, n_in) C; act: activation code;
    a: (m, n_out) C, overwritten with g(z).

    Per block of 16 samples: the rows of a start at b, ``add_row_dots`` adds
    the sums (a 4 x 3 register tile), then g is applied row by row.  The units
    are taken in blocks whose weights fit the L2 cache (``dot_units``), each
    block for all 16 samples before the next: every weight is read from
    further away once per 16 samples, not once per 4.  Short input rows (at
    most ``OUTER_FORWARD_MAX_BYTES``, from ``OUTER_FORWARD_MIN_ROWS`` samples
    and ``OUTER_FORWARD_MIN_UNITS`` units on) take the outer-product form
    instead: w is transposed once per call (``transpose_into``) and
    ``outer_rows`` adds ``sum_i a_ni wt_i`` to the rows (A = a_prev^T, B = w^T).  Parallel over blocks of 16 samples: each
    block writes only its rows of a; the blocks are claimed by the workers
    one at a time (``atomic.claim``).  Wide layers (``packed_form``) take the
    outer-product form from packed operands instead: w^T in panels of one vector
    of units (``pack_panel_t``, once per call, the panels split between the
    workers), and per block of PACK_ROWS samples their inputs in 6-row tiles
    (``forward_packed``).  The form and the blocks depend on the shapes alone,
    never on the thread count.  BLAS twin: ``kernels_blas.dense_forward``.
    """
    m = a.shape[0]
    n_out, n_in = w.shape
    if packed_form(m, n_out, m * n_out * n_in, w):
        panels = new_panels(n_out, n_in, w)
        _pack_all(w, True, panels, PARALLEL_TWIN)
        bounds = pack_blocks(m, PARALLEL_TWIN)
        n_blocks = bounds.shape[0] - 1
        workers = min(n_blocks, MAX_WORKERS) if PARALLEL_TWIN else 1
        scratch = new_tiles(workers, n_in, w)
        if PARALLEL_TWIN and n_blocks > 1:
            claimed = np.empty(1, np.int64)
            claimed[0] = 0
            for worker in prange(workers):
                nb = claim(claimed)
                while nb < n_blocks:
                    g0, g1 = block_range(bounds, nb, m)
                    forward_packed(b, a_prev, panels, scratch[worker], act, a, g0, g1)
                    nb = claim(claimed)
        else:
            for nb in range(n_blocks):
                g0, g1 = block_range(bounds, nb, m)
                forward_packed(b, a_prev, panels, scratch[0], act, a, g0, g1)
        return
    outer = forward_outer(w, m)
    wt = np.empty((n_in if outer else 0, n_out), dtype=w.dtype)
    if outer:
        transpose_into(w, wt)
    units = dot_units(w)
    n_blocks = (m + 15) // 16
    if PARALLEL_TWIN and n_blocks > 1:
        claimed = np.empty(1, np.int64)  # the next unclaimed block (np.zeros would be a parfor)
        claimed[0] = 0
        for _ in prange(min(n_blocks, MAX_WORKERS)):
            nb = claim(claimed)
            while nb < n_blocks:
                forward_rows(w, b, a_prev, wt, outer, units, act, a, 16 * nb,
                             min(16 * nb + 16, m))
                nb = claim(claimed)
    else:
        for nb in range(n_blocks):
            forward_rows(w, b, a_prev, wt, outer, units, act, a, 16 * nb, min(16 * nb + 16, m))


dense_forward_serial, dense_forward_parallel = twins(dense_forward)


@jit(inline="always")
def backward_input_block(w, delta, a_src, act, add, delta_src, nb):
    """Block nb of ``dense_backward_input`` and ``dense_backward_input_acc``:
    ``e_ni (+)= sum_j w_ji delta_nj``, then ``delta_src_ni = g'(z_ni) e_ni``, for
    samples n = 12 nb .. 12 nb + 11.

    w: (n_out, n_in) C; delta: (m, n_out) C; a_src: (m, n_in) C (g' is written
    through it); delta_src: (m, n_in) C, overwritten or added to (``add``).
    """
    n0 = 2 * TILE_ROWS * nb
    n1 = min(n0 + 2 * TILE_ROWS, delta.shape[0])
    outer_rows(delta.T, w, delta_src, n0, n1, add)
    for n in range(n0, n1):
        derivative_row(a_src[n], delta_src[n], act)


@jit(inline="always")
def backward_input_packed(delta, panels, tiles, a_src, act, add, delta_src, n0, n1):
    """A block of the packed form of ``dense_backward_input`` (and ``_acc``):
    ``delta_src_ni = g'(z_ni) ((delta_src_ni if add) + sum_j w_ji delta_nj)``,
    ``backward_input_block``'s bits, for samples n = n0 .. n1 - 1 (n0 a multiple of 6).

    panels: (n_panels, n_out, L) C, w's (``pack_panel``); tiles: (n_tiles, n_out,
    TILE_ROWS) C, scratch for the block's rows of delta (``pack_tiles`` of
    delta^T), n_tiles >= (n1 - n0) / TILE_ROWS.  Shapes as in
    ``dense_backward_input_acc``.
    """
    pack_tiles(delta.T, n0, n1, tiles)
    packed_rows(tiles, panels, delta_src, n0, n1, add)
    for n in range(n0, n1):
        derivative_row(a_src[n], delta_src[n], act)


@jit(inline="always")
def _backward_input_blocks(w, delta, a_src, act, add, delta_src, parallel):
    """Every block of ``dense_backward_input`` / ``dense_backward_input_acc``:
    ``delta_src_ni = g'(z_ni) ((delta_src_ni if add) + sum_j w_ji delta_nj)``.

    Shapes as in ``dense_backward_input_acc``.  Inlined into both kernels, with
    ``parallel`` = their PARALLEL_TWIN: the blocks claimed one at a time by the
    workers of a ``prange`` (``atomic.claim``), else run in order.
    """
    m = delta.shape[0]
    if packed_form(m, w.shape[1], m * w.shape[0] * w.shape[1], w):
        panels = new_panels(w.shape[1], w.shape[0], w)
        _pack_all(w, False, panels, parallel)
        bounds = pack_blocks(m, parallel)
        n_blocks = bounds.shape[0] - 1
        workers = min(n_blocks, MAX_WORKERS) if parallel else 1
        scratch = new_tiles(workers, w.shape[0], w)
        if parallel and n_blocks > 1:
            claimed = np.empty(1, np.int64)
            claimed[0] = 0
            for worker in prange(workers):
                nb = claim(claimed)
                while nb < n_blocks:
                    n0, n1 = block_range(bounds, nb, m)
                    backward_input_packed(delta, panels, scratch[worker], a_src, act, add,
                                          delta_src, n0, n1)
                    nb = claim(claimed)
        else:
            for nb in range(n_blocks):
                n0, n1 = block_range(bounds, nb, m)
                backward_input_packed(delta, panels, scratch[0], a_src, act, add, delta_src,
                                      n0, n1)
        return
    n_blocks = (m + 2 * TILE_ROWS - 1) // (2 * TILE_ROWS)
    if parallel and n_blocks > 1:
        claimed = np.empty(1, np.int64)  # the next unclaimed block (np.zeros would be a parfor)
        claimed[0] = 0
        for _ in prange(min(n_blocks, MAX_WORKERS)):
            nb = claim(claimed)
            while nb < n_blocks:
                backward_input_block(w, delta, a_src, act, add, delta_src, nb)
                nb = claim(claimed)
    else:
        for nb in range(n_blocks):
            backward_input_block(w, delta, a_src, act, add, delta_src, nb)


def dense_backward_input(w, delta, a_prev, act_prev, delta_prev):
    """Propagate the error one layer down: ``delta_prev_ni = g'(z_ni) sum_j w_ji delta_nj``.

    w: (n_out, n_in) C; delta: (m, n_out) C; a_prev: (m, n_in) C, the outputs of
    the layer below (g' is written through them); act_prev: its activation code;
    delta_prev: (m, n_in) C, overwritten.

    For each block of 12 samples, ``outer_rows`` sums the rows w[j, :] scaled by
    delta[n, j] in a register tile of 6 samples x one vector of i (A = delta^T,
    B = w), then g' is applied row by row.  Parallel over blocks of 12 samples
    (disjoint rows of delta_prev), claimed one at a time (``atomic.claim``).
    Wide layers (``packed_form``) pack w into panels once per call and take
    blocks of PACK_ROWS samples (``backward_input_packed``): the same sums in
    the same order, the same bits.  BLAS twin: ``kernels_blas.dense_backward_input``.
    """
    _backward_input_blocks(w, delta, a_prev, act_prev, False, delta_prev, PARALLEL_TWIN)


dense_backward_input_serial, dense_backward_input_parallel = twins(dense_backward_input)


@jit(inline="always")
def _forward_acc_block(w, a_src, units, act, a, nb):
    """Block nb of ``dense_forward_acc``: ``a_nj = g(z_nj + sum_i w_ji a_src_ni)`` for
    samples n = 16 nb .. 16 nb + 15.

    w: (n_out, n_in) C; a_src: (m, n_in) C; a: (m, n_out) C, holds z on entry;
    units: ``dot_units(w)``.
    """
    g0 = 16 * nb
    g1 = min(g0 + 16, a.shape[0])
    add_block_dots(w, a_src, g0, g1, units, a)
    for n in range(g0, g1):
        activate_row(a[n], act)


def dense_forward_acc(w, a_src, act, a):
    """Add a source block to a layer's sums: ``z_nj <- z_nj + sum_i w_ji a_ni``, a = g(z).

    The forward pass of a layer with several sources (``z^t = b^t + sum_s a^s
    W^{s,t}``): ``dense_forward`` with the identity writes the first block's
    ``z = W a + b``; each further source block is added by this kernel, the last
    one with the layer's activation (``act`` = IDENTITY leaves z as it is).

    w: (n_out, n_in) C, the block's weights; a_src: (m, n_in) C, the source
    layer's outputs; act: activation code; a: (m, n_out) C, holds z on entry,
    g(z + a_src w^T) on exit.

    The sums are ``dense_forward``'s (``add_block_dots``, started from z
    instead of b); parallel over blocks of 16 samples (split by m alone),
    claimed one at a time (``atomic.claim``).
    BLAS twin: ``kernels_blas.dense_forward_acc``.
    """
    units = dot_units(w)
    n_blocks = (a.shape[0] + 15) // 16
    if PARALLEL_TWIN and n_blocks > 1:
        claimed = np.empty(1, np.int64)  # the next unclaimed block (np.zeros would be a parfor)
        claimed[0] = 0
        for _ in prange(min(n_blocks, MAX_WORKERS)):
            nb = claim(claimed)
            while nb < n_blocks:
                _forward_acc_block(w, a_src, units, act, a, nb)
                nb = claim(claimed)
    else:
        for nb in range(n_blocks):
            _forward_acc_block(w, a_src, units, act, a, nb)


dense_forward_acc_serial, dense_forward_acc_parallel = twins(dense_forward_acc)


def dense_backward_input_acc(w, delta, a_src, act, add, delta_src):
    """A term of a source's error: ``e_ni (+)= sum_j w_ji delta_nj``, then ``delta_src = g'(z) e``.

    A layer s that feeds several later layers t sums their errors before its
    derivative is applied: ``delta^s = g_s'(z^s) * sum_t delta^t W^{s,t}``.  The
    first term overwrites (``add`` false), the others add (``add`` true), and
    the last one passes s's activation code ``act`` so that g' is applied once
    to the whole sum (``act`` = IDENTITY: g' = 1, the row is left as summed).

    w: (n_out, n_in) C, the block from s to t; delta: (m, n_out) C, t's error;
    a_src: (m, n_in) C, s's outputs (g' is written through them); delta_src:
    (m, n_in) C, s's error, overwritten or added to.

    The sums are ``dense_backward_input``'s (``outer_rows`` with A = delta^T, B =
    w), added to the rows when ``add``; parallel over blocks of 12 samples
    (disjoint rows of delta_src), claimed one at a time (``atomic.claim``).
    BLAS twin: ``kernels_blas.dense_backward_input_acc``.
    """
    _backward_input_blocks(w, delta, a_src, act, add, delta_src, PARALLEL_TWIN)


dense_backward_input_acc_serial, dense_backward_input_acc_parallel = twins(
    dense_backward_input_acc)


def csr_forward_acc(w, Xs, order, start, act, a):
    """Add a block from sparse rows: ``z_nj <- z_nj + sum_{k in row r} w_{j,col_k} x_k``, then g.

    ``csr_forward``'s twin for a shortcut block whose source is the (CSR)
    input: like ``dense_forward_acc``, a holds z on entry and g(z + ...) on
    exit (``act`` = IDENTITY leaves the sums).  Xs, order, start as in
    ``csr_forward``; w: (n_out, n_in) C; a: (m, n_out) C.  Parallel over
    samples n.  BLAS twin: ``kernels_blas.csr_forward_acc``.
    """
    data, indices, indptr = Xs
    n_out = w.shape[0]
    shuffled = order.shape[0] > 0
    for n in prange(a.shape[0]):
        r = order[start + n] if shuffled else start + n
        lo = indptr[r]
        hi = indptr[r + 1]
        row = a[n]
        for j in range(n_out):
            wj = w[j]
            s = row[j]
            for k in range(lo, hi):
                s += wj[indices[k]] * data[k]
            row[j] = s
        activate_row(row, act)


csr_forward_acc_serial, csr_forward_acc_parallel = twins(csr_forward_acc)


@jit
def block_sq_norms(grad, skips, out):
    """``out[k] = sum of grad_q^2`` over shortcut block k's weights (serial, fixed order).

    grad: (n_params,); skips: int64 shortcut-block table (n_skip, S_COLS);
    out: (>= n_skip,), overwritten.  BLAS twin: ``kernels_blas.block_sq_norms``.
    """
    for k in range(skips.shape[0]):
        off = skips[k, S_WOFF]
        size = skips[k, S_NIN] * skips[k, S_NOUT]
        g = grad[off:off + size]
        q = 0.0
        for i in range(size):
            q += g[i] * g[i]
        out[k] = q


@jit
def finish_row(wj, alpha, scale, dwj):
    """``dwj_i <- (dwj_i + alpha wj_i) scale`` for one row; returns
    ``(sum_i wj_i^2, sum_i dwj_i^2)`` (the second of the finished row).

    wj: (n_in,) row j of a layer's weights; dwj: (n_in,) the same row of its
    gradient, overwritten.  In vectors of L = ``simd.lanes`` (the last one
    partial, through masks): a row shorter than LLVM's unrolled vector loop
    (20 inputs, say) no longer runs scalar.  The squares are summed lane by lane
    and then across the lanes in a fixed order (``vsum``).
    """
    n = wj.shape[0]
    width = LANES_BYTES // wj.itemsize
    q = vzero(wj)
    r = vzero(wj)
    a = vsplat(q, alpha)
    s = vsplat(q, scale)
    for i in range(0, n, width):
        count = min(width, n - i)
        v = vload(wj, i, count)
        q = vfma(v, v, q)
        g = vmul(vfma(a, v, vload(dwj, i, count)), s)
        r = vfma(g, g, r)
        vstore(dwj, i, g, count)
    return vsum(q), vsum(r)


@jit
def column_sums(A, c0, c1, add, out):
    """``out[c] (+)= sum_r A[r, c]`` for the columns c = c0..c1-1, summed over r in order.

    A: (m, n) C; out: (>= c1,).  ``add`` false overwrites.  The sums of a vector
    of columns stay in a register while r runs down the rows (row by row: a
    column walk at a stride of n elements would thrash one cache set).  The
    bias gradients of ``dense_backward_params``.
    """
    width = LANES_BYTES // A.itemsize
    for c in range(c0, c1, width):
        count = min(width, c1 - c)
        s = vload(out, c, count) if add else vzero(out)
        for r in range(A.shape[0]):
            s = vadd(s, vload(A[r], c, count))
        vstore(out, c, s, count)


@jit(inline="always")
def params_block(w, delta, a_prev, alpha, scale, accumulate, dw, db, wsq, rows, jb):
    """Block jb of ``dense_backward_params``: ``dw_ji (+)= sum_n delta_nj a_prev_ni``
    (finished with alpha and scale unless ``accumulate``) and ``db_j``, for units
    j = rows jb .. rows jb + rows - 1.

    Shapes as in ``dense_backward_params``.
    """
    j0 = rows * jb
    j1 = min(j0 + rows, w.shape[0])
    column_sums(delta, j0, j1, accumulate, db)
    outer_rows(delta, a_prev, dw, j0, j1, accumulate)
    if not accumulate:
        finish_rows(w, alpha, scale, dw, db, wsq, j0, j1)


@jit(inline="always")
def params_block_packed(w, delta, panels, tiles, alpha, scale, accumulate, dw, db, wsq, j0,
                        j1):
    """A block of ``dense_backward_params``' packed form: ``dw_ji (+)= sum_n delta_nj
    a_prev_ni`` and ``db_j`` for units j = j0 .. j1 - 1 (j0 a multiple of 6),
    ``params_block``'s bits.

    panels: (n_panels, m, L) C, a_prev's (``pack_panel``); tiles: (n_tiles, m,
    TILE_ROWS) C, scratch for the block's columns of delta (``pack_tiles``),
    n_tiles >= (j1 - j0) / TILE_ROWS.  Shapes as in ``dense_backward_params``.
    """
    column_sums(delta, j0, j1, accumulate, db)
    pack_tiles(delta, j0, j1, tiles)
    packed_rows(tiles, panels, dw, j0, j1, accumulate)
    if not accumulate:
        finish_rows(w, alpha, scale, dw, db, wsq, j0, j1)


@jit(inline="always")
def finish_rows(w, alpha, scale, dw, db, wsq, j0, j1):
    """Finish units j0..j1-1 of a gradient: ``db_j *= scale``, ``dw_j <- (dw_j + alpha w_j)
    scale``, ``wsq[j] = |w_j|^2``, ``wsq[n_out + j] = |dw_j|^2 + db_j^2`` (``finish_row``).

    Shapes as in ``dense_backward_params``.
    """
    n_out = w.shape[0]
    for j in range(j0, j1):
        db[j] = db[j] * scale
        wsq[j], gq = finish_row(w[j], alpha, scale, dw[j])
        wsq[n_out + j] = gq + db[j] * db[j]


@jit(inline="always")
def params_rows(n_out):
    """Units per block of ``dense_backward_params`` (rows j of w_ji, w: (n_out, n_in)):
    ``rows = 6`` below 96 units, else 24 (then >= 4 blocks); its block jb holds
    the units from ``j_lo = rows jb`` to ``min(j_lo + rows, n_out) - 1``."""
    return 4 * TILE_ROWS if n_out >= 16 * TILE_ROWS else TILE_ROWS


def dense_backward_params(w, delta, a_prev, alpha, scale, accumulate, dw, db, wsq):
    """Weight and bias gradients of one layer.

    ``dC/dw_ji = (sum_n delta_nj a_ni + alpha w_ji) * scale``,
    ``dC/db_j = sum_n delta_nj * scale``, with scale = 1 / sum_n s_n.

    w, dw: (n_out, n_in) C; delta: (m, n_out) C; a_prev: (m, n_in) C;
    db: (n_out,); wsq: (>= 2 n_out,).  With ``accumulate`` false, dw and db are
    overwritten with the finished gradient, ``wsq[j] = sum_i w_ji^2`` (for the
    L2 term of the loss) and ``wsq[n_out + j] = sum_i dw_ji^2 + db_j^2`` (unit j's
    part of the squared gradient norm, summed while its row is in registers: no
    pass over the gradient for its norm); with it true, the raw sums are *added*
    to dw and db (alpha, scale and wsq are left to ``finalize_params``).

    For each block of 6 output units (24 from 96 units on), ``column_sums`` sums
    the block's columns of delta into db, and ``outer_rows`` sums ``delta_nj a_n``
    over the samples in a register tile of 6 units x one vector of i (A = delta,
    B = a_prev), written once (or added once, when accumulating) per tile;
    ``finish_row`` then scales each row and adds the L2 term.  Parallel
    over the blocks of units, claimed one at a time (``atomic.claim``): each
    block owns its rows of dw and db and sums over n in a fixed order, so there
    is no race and the result does not depend on the thread count.  Wide layers
    (``packed_form``) pack a_prev into panels once per call and take blocks of
    PACK_ROWS units (``params_block_packed``): the same sums in the same order,
    the same bits.  BLAS twin: ``kernels_blas.dense_backward_params``.
    """
    n_out = w.shape[0]
    n_in = w.shape[1]
    m = delta.shape[0]
    if m == 1 and not accumulate:  # stochastic updates: one fused pass per row
        x = a_prev[0]
        for j in prange(n_out):
            d = delta[0, j]
            wj = w[j]
            dwj = dw[j]
            q = 0.0
            r = 0.0
            for i in range(n_in):
                q += wj[i] * wj[i]
                g = (d * x[i] + alpha * wj[i]) * scale
                r += g * g
                dwj[i] = g
            db[j] = d * scale
            wsq[j] = q
            wsq[n_out + j] = r + db[j] * db[j]
        return
    if packed_form(n_out, n_in, m * n_out * n_in, w):
        panels = new_panels(n_in, m, a_prev)
        _pack_all(a_prev, False, panels, PARALLEL_TWIN)
        bounds = pack_blocks(n_out, PARALLEL_TWIN)
        n_blocks = bounds.shape[0] - 1
        workers = min(n_blocks, MAX_WORKERS) if PARALLEL_TWIN else 1
        scratch = new_tiles(workers, m, w)
        if PARALLEL_TWIN and n_blocks > 1:
            claimed = np.empty(1, np.int64)
            claimed[0] = 0
            for worker in prange(workers):
                jb = claim(claimed)
                while jb < n_blocks:
                    j0, j1 = block_range(bounds, jb, n_out)
                    params_block_packed(w, delta, panels, scratch[worker], alpha, scale,
                                        accumulate, dw, db, wsq, j0, j1)
                    jb = claim(claimed)
        else:
            for jb in range(n_blocks):
                j0, j1 = block_range(bounds, jb, n_out)
                params_block_packed(w, delta, panels, scratch[0], alpha, scale, accumulate,
                                    dw, db, wsq, j0, j1)
        return
    rows = params_rows(n_out)
    n_blocks = (n_out + rows - 1) // rows
    if PARALLEL_TWIN and n_blocks > 1:
        claimed = np.empty(1, np.int64)  # the next unclaimed block (np.zeros would be a parfor)
        claimed[0] = 0
        for _ in prange(min(n_blocks, MAX_WORKERS)):
            jb = claim(claimed)
            while jb < n_blocks:
                params_block(w, delta, a_prev, alpha, scale, accumulate, dw, db, wsq, rows, jb)
                jb = claim(claimed)
    else:
        for jb in range(n_blocks):
            params_block(w, delta, a_prev, alpha, scale, accumulate, dw, db, wsq, rows, jb)


dense_backward_params_serial, dense_backward_params_parallel = twins(dense_backward_params)


def csr_forward(w, b, Xs, order, start, act, a):
    """First-layer forward from sparse rows: ``z_nj = sum_{k in row r} w_{j,col_k} x_k + b_j``.

    Xs = (data (nnz,), indices (nnz,) int64, indptr (n_total + 1,) int64), a
    CSR matrix with sorted indices; the batch's row n is ``r = order[start + n]``
    (``start + n`` when order is empty); the matrix is never densified.  w:
    (n_out, n_in) C; b: (n_out,); a: (m, n_out) C, overwritten with g(z).
    Parallel over samples n.  BLAS twin: ``kernels_blas.csr_forward``.
    """
    data, indices, indptr = Xs
    n_out = w.shape[0]
    shuffled = order.shape[0] > 0
    for n in prange(a.shape[0]):
        r = order[start + n] if shuffled else start + n
        lo = indptr[r]
        hi = indptr[r + 1]
        row = a[n]
        for j in range(n_out):
            wj = w[j]
            s = b[j]
            for k in range(lo, hi):
                s += wj[indices[k]] * data[k]
            row[j] = s
        activate_row(row, act)


csr_forward_serial, csr_forward_parallel = twins(csr_forward)


def csr_backward_params(w, delta, Xs, order, start, alpha, scale, accumulate, dw, db, wsq):
    """First-layer gradients from sparse rows: ``dC/dw_{j,col_k} += delta_nj x_k``.

    As ``dense_backward_params`` (same finishing, same ``accumulate`` meaning)
    with the inputs given as CSR rows like ``csr_forward``.  Parallel over
    output units j (each j owns row dw[j]).  BLAS twin:
    ``kernels_blas.csr_backward_params``.
    """
    data, indices, indptr = Xs
    n_out = w.shape[0]
    n_in = w.shape[1]
    m = delta.shape[0]
    shuffled = order.shape[0] > 0
    for j in prange(n_out):
        dwj = dw[j]
        if not accumulate:
            for i in range(n_in):
                dwj[i] = 0.0
            db[j] = 0.0
        sb = db[j]
        for n in range(m):
            d = delta[n, j]
            sb += d
            if d != 0.0:
                r = order[start + n] if shuffled else start + n
                for k in range(indptr[r], indptr[r + 1]):
                    dwj[indices[k]] += d * data[k]
        if accumulate:
            db[j] = sb
        else:
            db[j] = sb * scale
            wsq[j], gq = finish_row(w[j], alpha, scale, dwj)
            wsq[n_out + j] = gq + db[j] * db[j]


csr_backward_params_serial, csr_backward_params_parallel = twins(csr_backward_params)


@jit
def finalize_params(w, alpha, scale, dw, db, wsq):
    """Finish accumulated sums: ``dw <- (dw + alpha w) scale``, ``db <- db scale``,
    ``wsq_j = sum_i w_ji^2``, ``wsq_{n_out + j} = sum_i dw_ji^2 + db_j^2``.

    Shapes as in ``dense_backward_params``; serial (runs once per full-batch
    gradient).  BLAS twin: ``kernels_blas.finalize_params``.
    """
    n_out = w.shape[0]
    for j in range(n_out):
        db[j] = db[j] * scale
        wsq[j], gq = finish_row(w[j], alpha, scale, dw[j])
        wsq[n_out + j] = gq + db[j] * db[j]


@jit
def output_delta(a, Y, sw, order, start, loss, act, huber, eps, mean_outputs, delta):
    """Output error of a batch: ``delta_nk = s_n dC_n/dz_nk`` (``a - y`` for canonical pairs).

    a, delta: (m, n_outputs) C; Y: (n_total, n_outputs) C targets, row of sample
    n is ``order[start + n]`` (``start + n`` when order is empty); sw:
    (n_total,) weights or empty for ones.  Overwrites delta; returns
    ``sum_n s_n C_n`` (see ``losses``).  Serial: O(m n_outputs) work.
    BLAS twin: ``kernels_blas.output_delta``.
    """
    total = 0.0
    shuffled = order.shape[0] > 0
    weighted = sw.shape[0] > 0
    for n in range(a.shape[0]):
        r = order[start + n] if shuffled else start + n
        s = sw[r] if weighted else 1.0
        total += loss_delta_row(a[n], Y[r], s, loss, act, huber, eps, mean_outputs, delta[n])
    return total


def optimizer_step(code, theta, grad, m1, m2, lr, beta1, beta2, eps, nesterov):
    """One optimizer update on the flat parameter vector, element k independent.

    sgd:     ``v_k <- beta1 v_k - lr g_k``; ``theta_k += beta1 v_k - lr g_k`` (Nesterov)
             or ``theta_k += v_k``  (beta1 is the momentum; m1 = v)
    adam:    ``m_k <- b1 m_k + (1-b1) g_k``, ``v_k <- b2 v_k + (1-b2) g_k^2``,
             ``theta_k -= lr m_k / (sqrt(v_k) + eps)`` (lr already bias-corrected)
    rmsprop: ``v_k <- b2 v_k + (1-b2) g_k^2``, ``theta_k -= lr g_k / (sqrt(v_k) + eps)``
    adagrad: ``v_k <- v_k + g_k^2``, ``theta_k -= lr g_k / (sqrt(v_k) + eps)``

    theta, grad, m1, m2: (n_params,) C.  Parallel over k.  The hyper-parameters
    are first rounded to theta's dtype, so a float32 step is float32 arithmetic
    throughout (as its NumPy twin's is), with no conversions in the loop; compiled
    without FMA contraction or reassociation (``config.FASTMATH_EXACT``), so every
    process computes the same bits.
    BLAS twin: ``kernels_blas.optimizer_step``.
    """
    p = theta.shape[0]
    real = theta.dtype.type
    lr, eps, c1, c2 = real(lr), real(eps), real(1.0 - beta1), real(1.0 - beta2)
    beta1, beta2 = real(beta1), real(beta2)
    if code == OPT_SGD and nesterov:  # branch outside the loop: it vectorises
        for k in prange(p):
            g = grad[k]
            v = beta1 * m1[k] - lr * g
            m1[k] = v
            theta[k] += beta1 * v - lr * g
    elif code == OPT_SGD:
        for k in prange(p):
            v = beta1 * m1[k] - lr * grad[k]
            m1[k] = v
            theta[k] += v
    elif code == OPT_ADAM:
        for k in prange(p):
            g = grad[k]
            mk = beta1 * m1[k] + c1 * g
            vk = beta2 * m2[k] + c2 * (g * g)
            m1[k] = mk
            m2[k] = vk
            theta[k] += -lr * mk / (np.sqrt(vk) + eps)
    elif code == OPT_RMSPROP:
        for k in prange(p):
            g = grad[k]
            vk = beta2 * m2[k] + c2 * (g * g)
            m2[k] = vk
            theta[k] -= lr * g / (np.sqrt(vk) + eps)
    elif code == OPT_ADAGRAD:
        for k in prange(p):
            g = grad[k]
            vk = m2[k] + g * g
            m2[k] = vk
            theta[k] -= lr * g / (np.sqrt(vk) + eps)


optimizer_step_serial, optimizer_step_parallel = twins(optimizer_step, exact=True)


def rprop_step(theta, grad, step, prev, step_min, step_max):
    """One iRPROP- update (Igel & Huesken 2000) of the flat parameters, element k independent.

    With ``s = grad_k * prev_k`` (this and the previous full-batch gradient):
    ``s > 0``: ``step_k <- min(1.2 step_k, step_max)``; ``s < 0``: ``step_k <-
    max(0.5 step_k, step_min)`` and ``grad_k <- 0`` (no move now, and no sign
    comparison next time); then ``theta_k -= sign(grad_k) step_k`` and
    ``prev_k <- grad_k``.  (eta+ = 1.2, eta- = 0.5: Riedmiller's and FANN's.)

    theta, grad, step (per-weight step sizes, > 0), prev: (n_params,) C; theta,
    step and prev are updated in place (grad is read only).  Parallel over k.
    BLAS twin: ``kernels_blas.rprop_step``.
    """
    p = theta.shape[0]
    for k in prange(p):
        g = grad[k]
        s = g * prev[k]
        d = step[k]
        if s > 0.0:
            d = min(d * 1.2, step_max)
        elif s < 0.0:
            d = max(d * 0.5, step_min)
            g = 0.0
        step[k] = d
        prev[k] = g
        if g > 0.0:
            theta[k] -= d
        elif g < 0.0:
            theta[k] += d


rprop_step_serial, rprop_step_parallel = twins(rprop_step)


@jit
def layer_sq_norms(grad, layers, out):
    """``out[l] = sum of grad_k^2`` over layer l's weights and biases (serial, fixed order).

    grad: (n_params,); layers: int64 layer table; out: (n_layers,), overwritten.
    BLAS twin: ``kernels_blas.layer_sq_norms``.
    """
    for l in range(layers.shape[0]):
        off = layers[l, L_WOFF]
        size = layers[l, L_NIN] * layers[l, L_NOUT] + layers[l, L_NOUT]
        g = grad[off:off + size]
        q = 0.0
        for k in range(size):
            q += g[k] * g[k]
        out[l] = q


@jit(inline="always")
def _rows_within_range(X, low, high, n0, n1):
    """``within = AND_{n,j} (low_j <= X_nj <= high_j)`` over rows n = n0..n1-1 of X:
    (m, d) C; low, high: (d,) (see ``rows_within``)."""
    d = X.shape[1]
    for n in range(n0, n1):
        row = X[n]
        inside = 0
        for j in range(d):
            v = row[j]
            inside += (v >= low[j]) & (v <= high[j])
        if inside != d:
            return False
    return True


def rows_within(X, low, high):
    """Whether X lies inside per-column limits: ``within = AND_{n,j} (low_j <= X_nj <= high_j)``.

    False at the first row with a NaN or a value out.  X: (m, d) C; low, high:
    (d,), of X's dtype.  One pass over X that both ``predict``'s finiteness
    check and its training-range check can stand on
    (NaN and +-inf fail the comparisons with finite limits).  Vectorised over j
    (a count, not a branch, per row); parallel over blocks of ROWS_WITHIN_BLOCK
    rows (each block stops at its first row out; the answer is the AND of the
    blocks').  BLAS twin: ``kernels_blas.rows_within``.
    """
    m = X.shape[0]
    n_blocks = (m + ROWS_WITHIN_BLOCK - 1) // ROWS_WITHIN_BLOCK
    if PARALLEL_TWIN and n_blocks > 1:
        ok = np.empty(n_blocks, np.bool_)
        for nb in prange(n_blocks):
            n0 = nb * ROWS_WITHIN_BLOCK
            ok[nb] = _rows_within_range(X, low, high, n0, min(n0 + ROWS_WITHIN_BLOCK, m))
        for nb in range(n_blocks):
            if not ok[nb]:
                return False
        return True
    return _rows_within_range(X, low, high, 0, m)


rows_within_serial, rows_within_parallel = twins(rows_within)


@jit
def column_stats(X, out):
    """Per column j of X (n rows): ``out[0, j] = mu_j = (1/n) sum_r X_rj``,
    ``out[1, j] = sigma_j = sqrt((1/n) sum_r (X_rj - mu_j)^2)``,
    ``out[2, j] = min_r X_rj``, ``out[3, j] = max_r X_rj``.

    X: (n, d) C, n >= 1, finite; out: (4, d) float64.  One pass over X in memory
    order, in blocks of rows of about 256 KiB: each block is summed twice while it
    is in cache (its mean, then its squared deviations from that mean, so no sum of
    squares cancels), and merged into the running mean and sum of squared
    deviations in block order (Chan et al.'s pairwise update).  Sums in float64,
    vectorised over j.  Serial (it reads X at memory speed).  BLAS twin:
    ``kernels_blas.column_stats``.
    """
    n, d = X.shape
    rows = max(1, 262144 // max(1, d * X.itemsize))
    mean = out[0]
    m2 = out[1]
    lo = out[2]
    hi = out[3]
    part = np.empty((2, d))
    s = part[0]
    q = part[1]
    for j in range(d):
        mean[j] = 0.0
        m2[j] = 0.0
        lo[j] = X[0, j]
        hi[j] = X[0, j]
    seen = 0
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        for j in range(d):
            s[j] = 0.0
            q[j] = 0.0
        for r in range(r0, r1):
            row = X[r]
            for j in range(d):
                v = row[j]
                s[j] += v
                lo[j] = min(lo[j], v)
                hi[j] = max(hi[j], v)
        size = r1 - r0
        for j in range(d):
            s[j] = s[j] / size
        for r in range(r0, r1):
            row = X[r]
            for j in range(d):
                e = row[j] - s[j]
                q[j] += e * e
        total = seen + size
        for j in range(d):
            delta = s[j] - mean[j]
            mean[j] += delta * (size / total)
            m2[j] += q[j] + delta * delta * (seen * (size / total))
        seen = total
    for j in range(d):
        m2[j] = np.sqrt(m2[j] / n)


@jit
def scale_vector(v, factor):
    """In place ``v_k <- v_k * factor`` (gradient clipping).  BLAS twin: same name.

    v: (n_params,) the flat gradient; factor: a scalar.
    """
    for k in range(v.shape[0]):
        v[k] = v[k] * factor


@jit
def copy_rows(src, out, start):
    """``out[start + n, k] = src[n, k]`` for the rows of src.  BLAS twin: same name.

    src: (m, n_out) C, a block of outputs; out: (n_total, n_out) C with
    start + m <= n_total.
    """
    for n in range(src.shape[0]):
        for k in range(src.shape[1]):
            out[start + n, k] = src[n, k]


# -- dropout -----------------------------------------------------------------------
# The masks are drawn from a counter-based generator: the bit of unit j of layer l for
# the sample in row r of the data set at step t is a pure function of (seed, t, r, l, j),
# so every thread split, every backend and a re-run draw the same masks.  The mixing
# is murmur3's 32-bit finaliser applied to 32-bit words held in uint64 (every product
# fits in 64 bits: no wrap-around, so the same source runs compiled and as plain
# Python/NumPy without overflow); ``kernels_blas.dropout_uniform`` is its vectorised twin.
_M32 = np.uint64(0xFFFFFFFF)
_C1 = np.uint64(0x85EBCA6B)
_C2 = np.uint64(0xC2B2AE35)
_GOLDEN = np.uint64(0x9E3779B9)
_S13 = np.uint64(13)
_S16 = np.uint64(16)
_S32 = np.uint64(32)
_TWO_M32 = 2.0 ** -32


@jit
def mix32(h):
    """murmur3's finaliser of a 32-bit word h (a uint64 < 2**32); a bijection on [0, 2**32).

    ``h_a = h ^ (h >> 16)``, ``h_b = h_a * 0x85ebca6b mod 2**32``, ``h_c = h_b ^ (h_b >> 13)``,
    ``h_d = h_c * 0xc2b2ae35 mod 2**32``, returns ``h_d ^ (h_d >> 16)``.  h: a uint64
    scalar here; the twin takes a uint64 array of any shape, e.g. (m, n_units).
    BLAS twin: ``kernels_blas.mix32``.
    """
    h = h ^ (h >> _S16)
    h = (h * _C1) & _M32
    h = h ^ (h >> _S13)
    h = (h * _C2) & _M32
    return h ^ (h >> _S16)


@jit
def dropout_key(seed, step, row, layer):
    """The 32-bit key of one (seed, step, sample row, layer): chained ``mix32``.

    ``k = mix32(seed_lo ^ golden)``, then ``k = mix32(k ^ x)`` for x = seed_hi,
    step_lo, step_hi, row_lo, row_hi, layer (``_lo``/``_hi``: the low and high 32
    bits).  seed, step, row, layer: non-negative int64 scalars (the twin takes the
    rows as an int64 array (m,) and returns the keys (m,)).  Unit j's uniform is
    ``dropout_uniform(key, j)``.  BLAS twin: ``kernels_blas.dropout_key``.
    """
    s = np.uint64(seed)
    t = np.uint64(step)
    r = np.uint64(row)
    k = mix32((s & _M32) ^ _GOLDEN)
    k = mix32(k ^ (s >> _S32))
    k = mix32(k ^ (t & _M32))
    k = mix32(k ^ (t >> _S32))
    k = mix32(k ^ (r & _M32))
    k = mix32(k ^ (r >> _S32))
    return mix32(k ^ np.uint64(layer))


@jit
def dropout_uniform(key, unit):
    """``u_j = mix32(key ^ j) / 2**32`` in [0, 1), exact in float64: unit j's draw.

    key: a ``dropout_key`` (uint64 scalar); unit: the unit index j, 0 <= j < 2**32.
    A unit is kept when ``u_j < 1 - rate``.  The twin takes (seed, step, rows,
    layer, n_units) and returns all the draws of a block, (m, n_units) float64.
    BLAS twin: ``kernels_blas.dropout_uniform``.
    """
    return float(mix32(key ^ np.uint64(unit))) * _TWO_M32


@jit
def dropout_threshold(rate):
    """The integer form of the keep test: ``t = ceil((1 - rate) 2**32)``, uint64.

    ``u_j < 1 - rate`` (``dropout_uniform``) holds exactly when ``h_j = mix32(key ^ j)``
    is below t ((1 - rate) 2**32 is exact in float64): the kernels' blocks (m,
    n_units) compare integers and skip the conversion to float.  rate: float,
    0 <= rate < 1.
    BLAS twin: ``kernels_blas.dropout_threshold``.
    """
    return np.uint64(np.ceil((1.0 - rate) * 4294967296.0))


def dropout_forward(a, order, start, seed, step, layer, rate):
    """Inverted dropout of one layer's outputs: ``a_nj <- a_nj m_nj / (1 - rate)``.

    ``m_nj = [u(seed, step, r_n, layer, j) < 1 - rate]`` (``dropout_key``,
    ``dropout_uniform``) with ``r_n = order[start + n]`` the sample's row in the
    data set (``start + n`` when order is empty); dropped units are set to 0.

    a: (m, n_units) C, the layer's outputs g(z), overwritten; order: (n_total,)
    int64 or empty; start, seed, step, layer: int64; rate: float, 0 <= rate < 1.
    Parallel over samples n (each n writes its own row; the mask is a pure
    function of its indices, so the split does not matter).
    BLAS twin: ``kernels_blas.dropout_forward``.
    """
    scale = 1.0 / (1.0 - rate)
    thr = dropout_threshold(rate)
    n_units = a.shape[1]
    shuffled = order.shape[0] > 0
    for n in prange(a.shape[0]):
        r = order[start + n] if shuffled else start + n
        key = dropout_key(seed, step, r, layer)
        row = a[n]
        for j in range(n_units):
            if mix32(key ^ np.uint64(j)) < thr:  # dropout_uniform(key, j) < 1 - rate
                row[j] = float(row[j]) * scale  # in float64, rounded once (as the twin)
            else:
                row[j] = 0.0


dropout_forward_serial, dropout_forward_parallel = twins(dropout_forward)


def dropout_backward(a, delta, order, start, seed, step, layer, rate, act):
    """Error of a dropped-out layer: ``delta_nj <- g'(z_nj) e_nj m_nj / (1 - rate)``.

    On entry ``delta`` holds ``e_nj = sum_t (delta^t W^t)_nj``, the error summed
    over every layer this one feeds (``dense_backward_input*`` with the identity)
    and ``a`` the outputs after ``dropout_forward`` (the same mask: same seed,
    step, rows, layer, rate).  Kept units' outputs are scaled back by
    ``1 - rate`` (g(z) up to rounding: g' is written through it, as in
    ``derivative_row``), dropped ones' errors are set to 0.  The forward outputs
    must no longer be needed: every weight gradient fed by them is computed
    before (the engine's backward order guarantees it).

    a, delta: (m, n_units) C, both overwritten; order, start, seed, step, layer,
    rate as in ``dropout_forward``; act: the layer's activation code.  Parallel
    over samples n (disjoint rows).  BLAS twin: ``kernels_blas.dropout_backward``.
    """
    keep = 1.0 - rate
    scale = 1.0 / keep
    thr = dropout_threshold(rate)
    n_units = a.shape[1]
    shuffled = order.shape[0] > 0
    for n in prange(a.shape[0]):
        r = order[start + n] if shuffled else start + n
        key = dropout_key(seed, step, r, layer)
        row = a[n]
        d = delta[n]
        for j in range(n_units):
            if mix32(key ^ np.uint64(j)) < thr:  # dropout_uniform(key, j) < 1 - rate
                row[j] = float(row[j]) * keep
                d[j] = float(d[j]) * scale
            else:
                d[j] = 0.0
        derivative_row(row, d, act)


dropout_backward_serial, dropout_backward_parallel = twins(dropout_backward)
