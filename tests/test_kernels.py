"""Each loop kernel against its BLAS twin (``kernels_blas``, the oracle).

Every loop kernel is run in three forms -- the serial twin, the parallel twin
and the plain-Python source (``.py_func``, what ``NUMBA_DISABLE_JIT`` and the
'python' backend execute) -- over activation x dtype x shapes.  Shapes include
one sample, one unit, and sizes that two threads cannot split evenly.

Tolerances are normwise: ``max|got - ref| <= tol * max(max|ref|, tiny)`` with
tol = 1e-12 (float64) and 1e-5 (float32).  Copies must be exact.  Where an
output is a sum that may cancel (a pre-activation of a handful of terms can be
1e-3 of its terms), the scale also includes the largest sum of the terms'
magnitudes (``|a_prev| |w|^T + |b|``): that is the size rounding errors are
proportional to, and |g'| <= 1 carries it through every activation.

Only C-contiguous arrays, int64 order arrays and one dtype per call are used,
so no kernel is compiled for a variant the engine never passes.
"""
import inspect
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from fastbp import backends, engine, simd
from fastbp import kernels_blas as kb
from fastbp import kernels_loop as kl
from fastbp.codes import ACTIVATION_CODES, HIDDEN_ACTIVATIONS, LOSS_CODES, OUTPUT_ACTIVATIONS
from fastbp.activations import activate, activate_row, derivative, derivative_row
from fastbp.losses import check_pair
from fastbp.params import Layout

import reference
from helpers import assert_close, targets, tol_for

# Tiny shapes: CI also runs this module with NUMBA_DISABLE_JIT=1 (kernel bodies as Python).
pytestmark = pytest.mark.nojit

DTYPES = [np.float32, np.float64]
TWIN_FORMS = ["serial", "parallel", "python"]
SINGLE_FORMS = ["compiled", "python"]

# (m samples, n_in, n_out): one sample, one unit, odd sizes, a larger batch; the
# loop kernels work in tiles of 4 samples x 3 or 4 units (the forward pass) and of 6
# rows x one SIMD vector of columns (the backward passes: 16-64 elements), so also
# exactly one tile, tiles with leftover rows and columns, and blocks of several tiles.
SHAPES = [(1, 1, 1), (1, 5, 3), (7, 1, 5), (9, 6, 1), (4, 1, 4), (10, 9, 6), (13, 11, 7),
          (33, 17, 3), (64, 32, 16), (25, 100, 100)]

VALID_PAIRS = []
for _loss in LOSS_CODES:
    for _act in OUTPUT_ACTIVATIONS:
        try:
            check_pair(LOSS_CODES[_loss], ACTIVATION_CODES[_act])
        except ValueError:
            continue
        VALID_PAIRS.append((_loss, _act))


def plain(func):
    """The plain-Python source of a compiled function (itself under NUMBA_DISABLE_JIT)."""
    return getattr(func, "py_func", func)


def twin(name, form):
    """The loop kernel ``name`` in one of its forms."""
    if form == "python":
        return plain(getattr(kl, name + "_serial"))
    return getattr(kl, f"{name}_{form}")


def single(name, form):
    func = getattr(kl, name)
    return plain(func) if form == "python" else func


def random_layer(rng, shape, act_name, dtype):
    """(z, a = g(z)) of a layer with activation ``act_name``; a is what g' is written through.

    z is returned in float64 (for the reference), a in ``dtype``.
    """
    z = rng.standard_normal(shape) * 2.0
    a = np.array([reference.g(act_name, row) for row in z])
    return z, np.ascontiguousarray(a, dtype=dtype)


def nan_like(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# ---- gather_rows -------------------------------------------------------------------

@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,d,start", [(1, 1, 0), (1, 4, 6), (5, 3, 2), (7, 9, 0)])
def test_gather_rows(rng, form, dtype, m, d, start):
    n_total = m + start + 3
    X = rng.standard_normal((n_total, d)).astype(dtype)
    order = rng.permutation(n_total).astype(np.int64)
    out = nan_like((m, d), dtype)
    ref = nan_like((m, d), dtype)
    twin("gather_rows", form)(X, order, start, out)
    kb.gather_rows(X, order, start, ref)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out, X[order[start:start + m]])



@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,d,start", [(1, 1, 0), (3, 7, 2), (10, 784, 5)])
def test_prefetch_rows_changes_nothing(rng, form, dtype, m, d, start):
    """A cache hint only: every row of the batch (a row's last line too), nothing written."""
    X = rng.standard_normal((m + start + 3, d)).astype(dtype)
    order = rng.permutation(X.shape[0]).astype(np.int64)
    before, order_before = X.copy(), order.copy()
    assert single("prefetch_rows", form)(X, order, start, m) is None
    assert kb.prefetch_rows(X, order, start, m) is None
    assert np.array_equal(X, before) and np.array_equal(order, order_before)


# ---- dense_forward / dense_backward_input ----------------------------------------

@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTIVATION_CODES))
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_forward(rng, form, dtype, act, shape):
    m, n_in, n_out = shape
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    a_prev = rng.standard_normal((m, n_in)).astype(dtype)
    code = ACTIVATION_CODES[act]
    a = nan_like((m, n_out), dtype)
    ref = nan_like((m, n_out), dtype)
    twin("dense_forward", form)(w, b, a_prev, code, a)
    kb.dense_forward(w, b, a_prev, code, ref)
    assert a.dtype == dtype
    terms = np.abs(a_prev.astype(np.float64)) @ np.abs(w.T.astype(np.float64)) + np.abs(b)
    if act == "exp":  # an error e in z is an error e exp(z) in a: exp's condition number
        terms = terms * np.abs(ref.astype(np.float64))
    assert_close(a, ref, tol_for(dtype), f"dense_forward {act}", terms)
    if dtype == np.float64:
        # And against the formula itself, independently of both twins.
        z = a_prev.astype(np.float64) @ w.T.astype(np.float64) + b
        expect = np.array([reference.g(act, row) for row in z])
        assert_close(a, expect, 1e-12, "dense_forward vs formula")


@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("shape", [(8, 32, 70), (8, 33, 70), (7, 20, 70), (16, 64, 40),
                                   (40, 1, 16), (40, 1, 15), (23, 20, 64)])
def test_dense_forward_at_the_edges_of_its_two_forms(rng, form, dtype, act, shape):
    """Both sides of the switch to the outer-product form (input rows of at most
    ``OUTER_FORWARD_MAX_BYTES``, at least ``OUTER_FORWARD_MIN_ROWS`` samples and
    ``OUTER_FORWARD_MIN_UNITS`` units): 32 inputs are the last float64 row in it, 64
    the last float32 one, 7 samples and 15 units too few."""
    m, n_in, n_out = shape
    outer = (n_in * np.dtype(dtype).itemsize <= kl.OUTER_FORWARD_MAX_BYTES
             and m >= kl.OUTER_FORWARD_MIN_ROWS and n_out >= kl.OUTER_FORWARD_MIN_UNITS)
    assert outer == ((n_in <= (32 if dtype == np.float64 else 64)) and m >= 8 and n_out >= 16)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    a_prev = rng.standard_normal((m, n_in)).astype(dtype)
    a, ref = nan_like((m, n_out), dtype), nan_like((m, n_out), dtype)
    twin("dense_forward", form)(w, b, a_prev, ACTIVATION_CODES[act], a)
    kb.dense_forward(w, b, a_prev, ACTIVATION_CODES[act], ref)
    terms = np.abs(a_prev.astype(np.float64)) @ np.abs(w.T.astype(np.float64)) + np.abs(b)
    assert_close(a, ref, tol_for(dtype), f"dense_forward {shape}", terms)


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_into(rng, form, dtype):
    for shape in [(1, 1), (64, 20), (7, 33)]:
        w = rng.standard_normal(shape).astype(dtype)
        wt = nan_like(shape[::-1], dtype)
        single("transpose_into", form)(w, wt)
        np.testing.assert_array_equal(wt, w.T)


@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["dense_forward", "dense_forward_acc"])
def test_dense_forward_in_several_unit_blocks(rng, form, dtype, kernel):
    """Inputs wide enough that the units come in several L2-sized blocks
    (``dot_units``), the last one short, and 16-sample blocks with a remainder;
    in float64 with AVX-512 the blocks of 21 units take three 4 x 6 tiles and
    one 4 x 3 (``WIDE_DOT_TILE``)."""
    m, n_in, n_out = 21, 1500, 50
    assert plain(kl.dot_units)(np.empty((1, n_in), dtype)) < n_out
    assert n_in * 8 > kl.WIDE_DOT_MIN_BYTES
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    a_prev = rng.standard_normal((m, n_in)).astype(dtype)
    code = ACTIVATION_CODES["tanh"]
    a = rng.standard_normal((m, n_out)).astype(dtype)  # z on entry for the _acc form
    ref = a.copy()
    args = (w, b, a_prev, code) if kernel == "dense_forward" else (w, a_prev, code)
    twin(kernel, form)(*args, a)
    getattr(kb, kernel)(*args, ref)
    terms = np.abs(a_prev.astype(np.float64)) @ np.abs(w.T.astype(np.float64)) + 3.0
    assert_close(a, ref, tol_for(dtype), kernel, terms)


# ---- outer_rows: the register tiles of both backward passes -------------------------

# (P terms, rows, columns) and a block of rows r0..r1: whole, a middle block of several
# 6-row tiles with leftover rows; columns below, at and around one SIMD vector (16-64
# elements) and several vectors with a tail.
OUTER_CASES = [((1, 1, 1), (0, 1)), ((5, 7, 3), (0, 7)), ((9, 13, 70), (1, 13)),
               ((40, 31, 129), (2, 29)), ((17, 30, 16), (6, 30)), ((3, 12, 64), (0, 12))]


def check_outer_rows(outer_rows, rng, dtype, layout, add, case):
    """``outer_rows`` against its BLAS twin; rows outside the block are left alone."""
    (n_p, n_rows, n_cols), (r0, r1) = case
    A = rng.standard_normal((n_p, n_rows)).astype(dtype)
    A = np.asfortranarray(A) if layout == "F" else A  # the backward input pass's delta^T
    B = rng.standard_normal((n_p, n_cols)).astype(dtype)
    C0 = rng.standard_normal((n_rows, n_cols)).astype(dtype)
    got, ref = C0.copy(), C0.copy()
    outer_rows(A, B, got, r0, r1, add)
    kb.outer_rows(A, B, ref, r0, r1, add)
    terms = np.abs(A.astype(np.float64)).T @ np.abs(B.astype(np.float64)) + add * np.abs(C0)
    assert_close(got, ref, tol_for(dtype), "outer_rows", terms)
    assert np.array_equal(got[:r0], C0[:r0]) and np.array_equal(got[r1:], C0[r1:])


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("case", OUTER_CASES)
def test_outer_rows(rng, form, dtype, layout, add, case):
    run = kl.outer_rows if form == "compiled" else plain(kl.outer_rows)
    check_outer_rows(run, rng, dtype, layout, add, case)


# ---- the packed form: panels, tiles and packed_rows ----------------------------------

def packed_operands(A, B, r0, r1, form):
    """(tiles, panels) of ``C = A^T B``'s rows r0..r1-1 as the packed kernels build them."""
    width = simd.lanes(B.dtype)
    n_panels = -(-B.shape[1] // width)
    panels = nan_like((n_panels, B.shape[0], width), B.dtype)
    for k in range(n_panels):
        single("pack_panel", form)(B, k, panels[k])
    tiles = nan_like((-(-(r1 - r0) // kl.TILE_ROWS), A.shape[0], kl.TILE_ROWS), A.dtype)
    single("pack_tiles", form)(A, r0, r1, tiles)
    return tiles, panels


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 70), (12, 129), (40, 64)])
def test_pack_helpers(rng, form, dtype, shape):
    """Panels of B and of w^T (zeros past the last column) and 6-row tiles of A (zeros
    past row r1 - 1), from a C array and from a transposed view: copies, exact."""
    n_p, n = shape
    width = simd.lanes(dtype)
    B = rng.standard_normal((n_p, n)).astype(dtype)
    for k in range(-(-n // width)):
        for name, src in (("pack_panel", B), ("pack_panel_t", np.ascontiguousarray(B.T))):
            got, ref = nan_like((n_p, width), dtype), nan_like((n_p, width), dtype)
            single(name, form)(src, k, got)
            getattr(kb, name)(src, k, ref)
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_array_equal(got[:, :min(width, n - k * width)],
                                          B[:, k * width:(k + 1) * width])
    for A in (B, np.ascontiguousarray(B.T).T):  # rows contiguous, or columns
        for r0, r1 in ((0, n), (n // 3, n), (0, 1)):
            n_t = -(-(r1 - r0) // kl.TILE_ROWS)
            got, ref = nan_like((n_t + 1, n_p, 6), dtype), nan_like((n_t + 1, n_p, 6), dtype)
            single("pack_tiles", form)(A, r0, r1, got)
            kb.pack_tiles(A, r0, r1, ref)
            np.testing.assert_array_equal(got[:n_t], ref[:n_t])
            assert np.isnan(got[n_t:]).all()  # no tile past the block written
            flat = got[:n_t].transpose(1, 0, 2).reshape(n_p, -1)
            np.testing.assert_array_equal(flat[:, :r1 - r0], A[:, r0:r1])
            assert (flat[:, r1 - r0:] == 0).all()


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("case", OUTER_CASES)
def test_packed_rows(rng, form, dtype, layout, add, case):
    """``packed_rows`` against its BLAS twin and, compiled, bit for bit against
    ``outer_rows`` on the unpacked operands (the wide kernels' packed form changes
    the memory layout, never the bits); rows outside the block are left alone."""
    (n_p, n_rows, n_cols), (r0, r1) = case
    A = rng.standard_normal((n_p, n_rows)).astype(dtype)
    A = np.asfortranarray(A) if layout == "F" else A
    B = rng.standard_normal((n_p, n_cols)).astype(dtype)
    C0 = rng.standard_normal((n_rows, n_cols)).astype(dtype)
    tiles, panels = packed_operands(A, B, r0, r1, form)
    got, ref, unpacked = C0.copy(), C0.copy(), C0.copy()
    single("packed_rows", form)(tiles, panels, got, r0, r1, add)
    kb.packed_rows(tiles, panels, ref, r0, r1, add)
    terms = np.abs(A.astype(np.float64)).T @ np.abs(B.astype(np.float64)) + add * np.abs(C0)
    assert_close(got, ref, tol_for(dtype), "packed_rows", terms)
    assert np.array_equal(got[:r0], C0[:r0]) and np.array_equal(got[r1:], C0[r1:])
    single("outer_rows", form)(A, B, unpacked, r0, r1, add)
    if form == "compiled":
        np.testing.assert_array_equal(got, unpacked)


# Above PACK_MIN_WORK: the packed form of all three kernels (forward: 101 samples in
# blocks of 48, 48, 5; params: 97 units, the last block one unit; 130 inputs, the
# last panel partial), and 600 units from 40 inputs (in float32, 40 inputs fill less
# than one vector: the backward kernels take the unpacked form).
PACKED_SHAPES = [(101, 130, 97), (48, 40, 600)]


@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PACKED_SHAPES)
def test_dense_kernels_in_the_packed_form(rng, form, dtype, shape):
    """The three dense kernels on wide layers (``packed_form``) against their BLAS
    twins; compiled, the serial and parallel twins give the same bits."""
    m, n_in, n_out = shape
    itemsize = np.dtype(dtype).itemsize
    assert m * n_in * n_out >= kl.PACK_MIN_WORK
    tol = tol_for(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    _, a_prev = random_layer(rng, (m, n_in), "tanh", dtype)
    tanh = ACTIVATION_CODES["tanh"]
    d64, a64, w64 = (np.abs(x.astype(np.float64)) for x in (delta, a_prev, w))
    packed = plain(kl.packed_form)
    wide_rows = n_in * itemsize >= simd.LANES_BYTES  # of w and of a_prev
    assert packed(m, n_out, m * n_in * n_out, w)  # forward
    assert packed(m, n_in, m * n_in * n_out, w) == wide_rows  # backward input
    assert packed(n_out, n_in, m * n_in * n_out, w) == wide_rows  # params

    def run(name, *args):
        outs = {}
        for f in ([twin(name, "serial"), twin(name, "parallel")] if form != "python"
                  else [twin(name, "python")]):
            copies = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
            f(*copies)
            outs[f] = copies
        results = list(outs.values())
        for other in results[1:]:
            for x, y in zip(results[0], other):
                if isinstance(x, np.ndarray):
                    np.testing.assert_array_equal(x, y)
        return results[0]

    a = run("dense_forward", w, b, a_prev, tanh, nan_like((m, n_out), dtype))[-1]
    ref = nan_like((m, n_out), dtype)
    kb.dense_forward(w, b, a_prev, tanh, ref)
    assert_close(a, ref, tol, "dense_forward", a64 @ w64.T + np.abs(b))

    out = run("dense_backward_input", w, delta, a_prev, tanh, nan_like((m, n_in), dtype))[-1]
    ref = nan_like((m, n_in), dtype)
    kb.dense_backward_input(w, delta, a_prev, tanh, ref)
    assert_close(out, ref, tol, "dense_backward_input", d64 @ w64)

    e0 = rng.standard_normal((m, n_in)).astype(dtype)
    out = run("dense_backward_input_acc", w, delta, a_prev, tanh, True, e0)[-1]
    ref = e0.copy()
    kb.dense_backward_input_acc(w, delta, a_prev, tanh, True, ref)
    assert_close(out, ref, tol, "dense_backward_input_acc", d64 @ w64 + np.abs(e0))

    for accumulate in (False, True):
        dw0 = rng.standard_normal((n_out, n_in)).astype(dtype)
        db0 = rng.standard_normal(n_out).astype(dtype)
        args = (w, delta, a_prev, 0.3, 1.0 / m, accumulate, dw0, db0,
                np.zeros(2 * n_out, dtype))
        dw, db, wsq = run("dense_backward_params", *args)[-3:]
        rdw, rdb, rwsq = dw0.copy(), db0.copy(), np.zeros(2 * n_out, dtype)
        kb.dense_backward_params(*args[:6], rdw, rdb, rwsq)
        scale = 1.0 if accumulate else 1.0 / m
        dw_terms = (d64.T @ a64 + 0.3 * w64) * scale + accumulate * np.abs(dw0)
        assert_close(dw, rdw, tol, "dw", dw_terms)
        assert_close(db, rdb, tol, "db", d64.sum(axis=0) * scale + accumulate * np.abs(db0))
        assert_close(wsq, rwsq, tol, "wsq", np.abs(rwsq))


# ---- finish_row and column_sums: the vector helpers of the weight gradients -----------

# lengths below, at and around one SIMD vector (16-64 elements) and several with a tail
ROW_LENGTHS = [1, 3, 8, 20, 31, 32, 33, 64, 65, 100, 129]


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", ROW_LENGTHS)
def test_finish_row(rng, form, dtype, n):
    """``dw <- (dw + alpha w) scale`` and the returned ``(sum w^2, sum dw^2)`` of the
    finished row, nothing past the row."""
    run = kl.finish_row if form == "compiled" else plain(kl.finish_row)
    w = rng.standard_normal(n + 3).astype(dtype)
    dw = rng.standard_normal(n + 3).astype(dtype)
    ref = dw.copy()
    ref[:n] = (dw[:n].astype(np.float64) + 0.3 * w[:n]) * 0.125
    q, r = run(w[:n], 0.3, 0.125, dw[:n])
    assert_close(dw[:n], ref[:n], tol_for(dtype), "finish_row", np.abs(ref[:n]) + 1.0)
    assert np.array_equal(dw[n:], ref[n:])
    assert_close(r, float((ref[:n].astype(np.float64) ** 2).sum()), tol_for(dtype), "sum dw^2")
    sq = float(np.sum(w[:n].astype(np.float64) ** 2))
    assert abs(float(q) - sq) <= tol_for(dtype) * sq


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("shape, c0, c1", [((1, 1), 0, 1), ((5, 7), 2, 7), ((33, 70), 3, 69),
                                           ((9, 129), 0, 129), ((4, 24), 6, 12)])
def test_column_sums(rng, form, dtype, add, shape, c0, c1):
    """``out[c0:c1] (+)= A[:, c0:c1].sum(0)``, the rest of out untouched."""
    run = kl.column_sums if form == "compiled" else plain(kl.column_sums)
    A = rng.standard_normal(shape).astype(dtype)
    out = rng.standard_normal(shape[1]).astype(dtype)
    ref = out.copy()
    ref[c0:c1] = A[:, c0:c1].astype(np.float64).sum(axis=0) + (ref[c0:c1] if add else 0.0)
    run(A, c0, c1, np.bool_(add), out)
    assert_close(out[c0:c1], ref[c0:c1], tol_for(dtype), "column_sums",
                 np.abs(A).sum(axis=0)[c0:c1] + np.abs(ref[c0:c1]))
    assert np.array_equal(out[:c0], ref[:c0]) and np.array_equal(out[c1:], ref[c1:])


def test_vsum_adds_in_the_same_order_compiled_and_in_python():
    """``simd.vsum``'s fixed tree order: the compiled sum has the Python form's bits."""
    from numba import njit
    from fastbp import simd

    @njit
    def total(row):
        return simd.vsum(simd.vload(row, 0, row.shape[0]))

    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        n = simd.lanes(dtype)
        for _ in range(200):  # magnitudes 1e-8..1e8, so another order would round otherwise
            row = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)).astype(dtype)
            tree = row.copy()
            while tree.shape[0] > 1:
                tree = tree[:tree.shape[0] // 2] + tree[tree.shape[0] // 2:]
            want = simd.vsum(simd.vload(row, 0, n))
            assert want.dtype == dtype and want == tree[0]
            if hasattr(kl.outer_rows, "py_func"):  # boxed as a Python float: compare values
                assert dtype(total(row)) == want


def test_claim_hands_out_every_block_once_compiled_parallel_and_in_python():
    """``atomic.claim``: counter[0] += 1 returning the old value.  Compiled in a
    parallel loop of 64 workers on every thread, each of 20,000 blocks is claimed
    exactly once (a lost update would hand one out twice) and the counter ends at
    blocks + workers (each worker's last, empty claim).  Which thread takes which
    block is up to the threads: on a busy machine one may take them all."""
    import numba
    from numba import njit, prange
    from fastbp.atomic import MAX_WORKERS, claim

    def take_all(counter, taken):
        n_blocks = taken.shape[0]
        for _ in prange(min(n_blocks, MAX_WORKERS)):
            b = claim(counter)
            while b < n_blocks:
                taken[b] += 1
                b = claim(counter)

    counter = np.zeros(1, np.int64)
    assert [claim(counter) for _ in range(3)] == [0, 1, 2] and counter[0] == 3
    forms = [take_all]
    if not numba.config.DISABLE_JIT:
        forms += [njit(take_all), njit(parallel=True)(take_all)]
    for f in forms:
        for n_blocks in (1, 5, 20000):
            counter = np.zeros(1, np.int64)
            taken = np.zeros(n_blocks, np.int64)
            f(counter, taken)
            assert (taken == 1).all()
            assert counter[0] == n_blocks + min(n_blocks, MAX_WORKERS)


def test_matrix_view_is_the_reshaped_slice_compiled_and_in_python():
    """``views.matrix_view``: the (r, c) view of flat[off:off + r c] sharing flat's
    memory, in both forms; out of bounds raises ValueError in both."""
    from numba import njit
    from fastbp.views import matrix_view

    @njit
    def view(flat, off, r, c):
        return matrix_view(flat, off, r, c)

    @njit
    def write_through(flat, off, r, c):
        v = matrix_view(flat, off, r, c)
        v[r - 1, c - 1] = -1.0
        return v.strides

    forms = [matrix_view] + ([view] if hasattr(view, "py_func") else [])
    for dtype in DTYPES + [np.int64]:
        flat = np.arange(30).astype(dtype)
        for f in forms:
            for off, r, c in [(0, 5, 6), (3, 4, 5), (7, 0, 4), (30, 0, 0), (29, 1, 1), (2, 7, 4)]:
                got = f(flat, off, r, c)
                want = flat[off:off + r * c].reshape((r, c))
                assert got.shape == (r, c) and got.dtype == dtype
                assert got.flags.c_contiguous and np.array_equal(got, want)
                if r * c:
                    assert np.shares_memory(got, flat)
            for off, r, c in [(-1, 1, 1), (0, -1, 2), (0, 2, -1), (1, 5, 6), (25, 2, 3)]:
                with pytest.raises(ValueError, match="outside the buffer"):
                    f(flat, off, r, c)
    flat = np.zeros(12)
    assert write_through(flat, 2, 2, 5) == (5 * 8, 8)
    assert flat[11] == -1.0 and flat.sum() == -1.0  # wrote through to flat's memory



def test_borrowed_arrays_read_and_write_like_the_array_in_every_form():
    """``views.borrowed``: the array itself in Python; compiled, the same memory without
    a reference count.  Views of it, in serial and parallel loops and through
    ``matrix_view``, read and write the caller's array."""
    from numba import njit, prange
    from fastbp.views import borrowed, matrix_view

    flat = np.arange(24.0)
    assert borrowed(flat) is flat

    @njit
    def row_sums(flat, r, c, out):
        m = matrix_view(borrowed(flat), 0, r, c)
        for j in range(r):
            row = m[j]
            s = 0.0
            for i in range(c):
                s += row[i]
            out[j] = s
            row[0] = -row[0]

    @njit(parallel=True)
    def scale_rows(flat, r, c):
        m = matrix_view(borrowed(flat), 0, r, c)
        for j in prange(r):
            m[j][:] *= 2.0

    if not hasattr(row_sums, "py_func"):
        pytest.skip("needs the JIT")
    out = np.empty(4)
    for _ in range(3):
        x = np.arange(24.0)
        row_sums(x, 4, 6, out)
        assert np.array_equal(out, np.arange(24.0).reshape(4, 6).sum(1))
        assert np.array_equal(x[::6], -np.arange(0.0, 24.0, 6.0))  # wrote through
        scale_rows(x, 4, 6)
        assert x[1] == 2.0 and x[6] == -12.0
    assert sys.getrefcount(x) == sys.getrefcount(out)  # no reference held back

@pytest.mark.slow
@pytest.mark.skipif(not hasattr(kl.outer_rows, "py_func"), reason="needs the JIT")
@pytest.mark.parametrize("vector_bytes", [64, 16])
def test_outer_rows_at_other_vector_widths(tmp_path, vector_bytes):
    """The tiles with AVX2's (64-byte vectors) and SSE's widths, forced on this CPU."""
    code = (
        "import numpy as np, sys\n"
        "sys.path.insert(0, %r)\n"
        "from fastbp import kernels_loop as kl, simd\n"
        "from test_kernels import OUTER_CASES, check_outer_rows\n"
        "assert simd.LANES_BYTES == %d\n"
        "rng = np.random.default_rng(0)\n"
        "for dtype in (np.float32, np.float64):\n"
        "    for layout in 'CF':\n"
        "        for case in OUTER_CASES:\n"
        "            check_outer_rows(kl.outer_rows, rng, dtype, layout, True, case)\n"
        "print('ok')\n") % (str(pathlib.Path(__file__).parent), vector_bytes)
    env = dict(os.environ, FASTBP_SIMD_BYTES=str(vector_bytes),
               NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act_prev", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_backward_input(rng, form, dtype, act_prev, shape):
    m, n_in, n_out = shape
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    delta[rng.random((m, n_out)) < 0.2] = 0.0          # exercise the d == 0 skip
    _, a_prev = random_layer(rng, (m, n_in), act_prev, dtype)
    code = ACTIVATION_CODES[act_prev]
    out = nan_like((m, n_in), dtype)
    ref = nan_like((m, n_in), dtype)
    twin("dense_backward_input", form)(w, delta, a_prev, code, out)
    kb.dense_backward_input(w, delta, a_prev, code, ref)
    terms = np.abs(delta.astype(np.float64)) @ np.abs(w.astype(np.float64))
    assert_close(out, ref, tol_for(dtype), f"dense_backward_input {act_prev}", terms)


# ---- the BLAS backend really swaps every kernel -----------------------------------

def test_blas_backend_replaces_every_loop_kernel():
    """Every compiled kernel the engine calls has a BLAS twin with the same arguments.

    A kernel missing from the substitution table would make the 'blas' backend
    silently run the plain-Python loop kernel, and every loops-vs-blas comparison
    in this suite would compare the loop code with itself.
    """
    used = {name: obj for name, obj in vars(engine).items()
            if inspect.isfunction(plain(obj)) and plain(obj).__module__ == kl.__name__}
    assert used, "found no kernels in the engine"
    for name, kernel in used.items():
        assert name in backends._BLAS_NAMES, f"{name} has no BLAS substitute"
        twin_func = backends._BLAS_NAMES[name]
        assert twin_func.__module__ == kb.__name__
        base = name.removesuffix("_serial").removesuffix("_parallel")
        assert twin_func.__name__ == base
        assert (list(inspect.signature(plain(kernel)).parameters)
                == list(inspect.signature(twin_func).parameters)), name


# ---- CSR first layer --------------------------------------------------------------

def csr_batch(rng, m, n_in, dtype, shuffled, start=2):
    """A batch of m sparse rows from a CSR matrix of m + start + 3 rows.

    The matrix has ~60% zeros and an empty row, sorted int64 indices.  Returns
    (Xs triplet, order (empty when not shuffled), start, the batch's rows dense).
    """
    n_total = m + start + 3
    dense = rng.standard_normal((n_total, n_in))
    dense[rng.random((n_total, n_in)) < 0.6] = 0.0
    dense[n_total // 2] = 0.0
    dense = dense.astype(dtype)
    X = sp.csr_matrix(dense)
    X.sort_indices()
    Xs = (np.ascontiguousarray(X.data, dtype=dtype), X.indices.astype(np.int64),
          X.indptr.astype(np.int64))
    order = rng.permutation(n_total).astype(np.int64) if shuffled else np.empty(0, np.int64)
    rows = order[start:start + m] if shuffled else np.arange(start, start + m)
    return Xs, order, start, np.ascontiguousarray(dense[rows])


@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 6, 3), (9, 7, 5), (13, 11, 4)])
def test_csr_forward(rng, form, dtype, shuffled, shape):
    m, n_in, n_out = shape
    Xs, order, start, batch = csr_batch(rng, m, n_in, dtype, shuffled)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    code = ACTIVATION_CODES["tanh"]
    a = nan_like((m, n_out), dtype)
    ref = nan_like((m, n_out), dtype)
    dense_ref = nan_like((m, n_out), dtype)
    twin("csr_forward", form)(w, b, Xs, order, start, code, a)
    kb.csr_forward(w, b, Xs, order, start, code, ref)
    kb.dense_forward(w, b, batch, code, dense_ref)
    tol = tol_for(dtype)
    assert_close(a, ref, tol, "csr_forward")
    assert_close(a, dense_ref, tol, "csr_forward vs dense")


@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 6, 3), (9, 7, 5), (13, 11, 4)])
def test_csr_backward_params(rng, form, dtype, accumulate, shuffled, shape):
    m, n_in, n_out = shape
    Xs, order, start, batch = csr_batch(rng, m, n_in, dtype, shuffled)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    alpha, scale = 0.3, 1.0 / (m + 0.5)
    if accumulate:
        dw0 = rng.standard_normal((n_out, n_in)).astype(dtype)
        db0 = rng.standard_normal(n_out).astype(dtype)
    else:
        dw0, db0 = nan_like((n_out, n_in), dtype), nan_like(n_out, dtype)
    outs = {}
    for name in ("loop", "blas", "dense"):
        dw, db, wsq = dw0.copy(), db0.copy(), np.full(2 * n_out + 1, -7.0, dtype=dtype)
        if name == "loop":
            twin("csr_backward_params", form)(w, delta, Xs, order, start, alpha, scale,
                                              accumulate, dw, db, wsq)
        elif name == "blas":
            kb.csr_backward_params(w, delta, Xs, order, start, alpha, scale, accumulate,
                                   dw, db, wsq)
        else:
            kb.dense_backward_params(w, delta, batch, alpha, scale, accumulate, dw, db, wsq)
        outs[name] = (dw, db, wsq)
    tol = tol_for(dtype)
    for other in ("blas", "dense"):
        for got, want, what in zip(outs["loop"], outs[other], ("dw", "db", "wsq")):
            assert_close(got, want, tol, f"csr_backward_params {what} vs {other}")
    assert outs["loop"][2][-1] == -7.0


# ---- small helpers: scale_vector, copy_rows -----------------------------------------

@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_vector_and_copy_rows(rng, form, dtype):
    v = rng.standard_normal(7).astype(dtype)
    rv = v.copy()
    single("scale_vector", form)(v, 0.37)
    kb.scale_vector(rv, 0.37)
    assert_close(v, rv, tol_for(dtype), "scale_vector")
    src = rng.standard_normal((3, 4)).astype(dtype)
    out = nan_like((8, 4), dtype)
    ref = nan_like((8, 4), dtype)
    single("copy_rows", form)(src, out, 2)
    kb.copy_rows(src, ref, 2)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out[2:5], src)
    assert np.isnan(out[:2]).all() and np.isnan(out[5:]).all()


# ---- dense_backward_params / finalize_params --------------------------------------

@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_backward_params(rng, form, dtype, accumulate, shape):
    m, n_in, n_out = shape
    tol = tol_for(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    delta[rng.random((m, n_out)) < 0.2] = 0.0
    a_prev = rng.standard_normal((m, n_in)).astype(dtype)
    alpha, scale = 0.3, 1.0 / (m + 0.5)
    sentinel = -7.0
    if accumulate:
        dw0 = rng.standard_normal((n_out, n_in)).astype(dtype)
        db0 = rng.standard_normal(n_out).astype(dtype)
    else:
        dw0 = nan_like((n_out, n_in), dtype)
        db0 = nan_like(n_out, dtype)
    dw, db, wsq = dw0.copy(), db0.copy(), np.full(2 * n_out + 2, sentinel, dtype=dtype)
    rdw, rdb, rwsq = dw0.copy(), db0.copy(), np.full(2 * n_out + 2, sentinel, dtype=dtype)
    twin("dense_backward_params", form)(w, delta, a_prev, alpha, scale, accumulate,
                                        dw, db, wsq)
    kb.dense_backward_params(w, delta, a_prev, alpha, scale, accumulate, rdw, rdb, rwsq)
    d64, a64 = np.abs(delta.astype(np.float64)), np.abs(a_prev.astype(np.float64))
    dw_terms = (d64.T @ a64 + alpha * np.abs(w)) * scale + np.abs(dw0)
    db_terms = d64.sum(axis=0) * scale + np.abs(db0)
    assert_close(dw, rdw, tol, "dw", np.nan_to_num(dw_terms))
    assert_close(db, rdb, tol, "db", np.nan_to_num(db_terms))
    # wsq beyond 2 n_out is never touched; when accumulating it is not touched at all.
    assert (wsq[2 * n_out:] == sentinel).all() and (rwsq[2 * n_out:] == sentinel).all()
    if accumulate:
        assert (wsq == sentinel).all() and (rwsq == sentinel).all()
        raw = delta.T.astype(np.float64) @ a_prev.astype(np.float64)
        if dtype == np.float64:
            assert_close(dw, dw0 + raw, 1e-12, "dw accumulated vs formula")
    else:
        assert_close(wsq[:2 * n_out], rwsq[:2 * n_out], tol, "wsq")
        if dtype == np.float64:
            expect = (delta.T @ a_prev + alpha * w) * scale
            assert_close(dw, expect, 1e-12, "dw vs formula")
            assert_close(wsq[:n_out], (w * w).sum(axis=1), 1e-12, "wsq vs formula")
            # unit j's share of the squared gradient norm: its row and its bias
            assert_close(wsq[n_out:2 * n_out], (dw * dw).sum(axis=1) + db * db, 1e-12,
                         "row sums of the squared gradient vs formula")


@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 1), (7, 13)])
def test_finalize_params(rng, form, dtype, shape):
    n_out, n_in = shape
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    dw = rng.standard_normal((n_out, n_in)).astype(dtype)
    db = rng.standard_normal(n_out).astype(dtype)
    wsq = np.full(2 * n_out + 1, -7.0, dtype=dtype)
    rdw, rdb, rwsq = dw.copy(), db.copy(), wsq.copy()
    alpha, scale = 0.25, 1.0 / 3.0
    single("finalize_params", form)(w, alpha, scale, dw, db, wsq)
    kb.finalize_params(w, alpha, scale, rdw, rdb, rwsq)
    tol = tol_for(dtype)
    assert_close(dw, rdw, tol, "dw")
    assert_close(db, rdb, tol, "db")
    assert_close(wsq, rwsq, tol, "wsq")
    assert_close(wsq[n_out:2 * n_out], (dw.astype(np.float64) ** 2).sum(axis=1) + db * db.astype(
        np.float64), tol, "row sums of the squared gradient")
    assert wsq[-1] == -7.0



# ---- output_delta ----------------------------------------------------------------

@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,act", VALID_PAIRS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("m,k", [(1, 1), (1, 3), (6, 1), (9, 4)])
def test_output_delta(rng, form, dtype, loss, act, weighted, shuffled, m, k):
    if act == "softmax" and k == 1:
        k = 2
    start = 3
    n_total = m + start + 2
    z, a = random_layer(rng, (m, k), act, dtype)
    Y = targets(rng, loss, act, n_total, k, dtype)
    sw = (rng.random(n_total) * 2).astype(dtype) if weighted else np.empty(0, dtype)
    order = rng.permutation(n_total).astype(np.int64) if shuffled else np.empty(0, np.int64)
    huber, eps = 0.5, float(np.finfo(dtype).eps)
    lc, ac = LOSS_CODES[loss], ACTIVATION_CODES[act]
    tol = tol_for(dtype)
    totals = {}
    for mean_outputs in (False, True):
        delta = nan_like((m, k), dtype)
        ref = nan_like((m, k), dtype)
        total = single("output_delta", form)(a, Y, sw, order, start, lc, ac, huber, eps,
                                             mean_outputs, delta)
        rtotal = kb.output_delta(a, Y, sw, order, start, lc, ac, huber, eps, mean_outputs, ref)
        assert_close(delta, ref, tol, f"delta {loss}+{act}")
        assert_close(total, rtotal, tol, f"loss {loss}+{act}")
        totals[mean_outputs] = total
    assert_close(totals[True] * k, totals[False], tol, "mean_outputs divides by n_outputs")

    # Independent check (float64): the per-sample reference loss and dC/dz.
    if dtype == np.float64:
        rows = order[start:start + m] if shuffled else np.arange(start, start + m)
        s = sw[rows] if weighted else np.ones(m)
        exp_total = sum(s[n] * reference.sample_loss(loss, act, a[n], Y[rows[n]], huber)
                        for n in range(m))
        exp_delta = np.array([s[n] * reference.output_delta(loss, act, z[n], a[n],
                                                            Y[rows[n]], huber)
                              for n in range(m)])
        assert_close(totals[False], exp_total, 1e-12, "total vs reference")
        assert_close(delta, exp_delta, 1e-12, "delta vs reference")


# ---- layer_sq_norms ------------------------------------------------------------------

@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[1, 1], [3, 1, 2], [5, 7, 4, 3], [2, 40, 1, 9, 3]])
def test_layer_sq_norms(rng, form, dtype, sizes):
    layout = Layout(sizes, [ACTIVATION_CODES["tanh"]] * (len(sizes) - 1))
    grad = rng.standard_normal(layout.n_params).astype(dtype)
    out = nan_like(layout.n_layers, dtype)
    ref = nan_like(layout.n_layers, dtype)
    single("layer_sq_norms", form)(grad, layout.table, out)
    kb.layer_sq_norms(grad, layout.table, ref)
    tol = tol_for(dtype)
    assert_close(out, ref, tol, "layer_sq_norms")
    g64 = grad.astype(np.float64)
    expect = [np.sum(w.astype(np.float64) ** 2) + np.sum(b.astype(np.float64) ** 2)
              for w, b in zip(layout.weights(g64), layout.biases(g64))]
    assert_close(out, expect, tol, "layer_sq_norms vs formula")


# ---- numerical stability of the activations -------------------------------------------

EXTREME = np.array([-1e4, -1e3, -745.5, -50.0, -1.0, 0.0, 1.0, 50.0, 745.5, 1e3, 1e4])


def _expected(act, z):
    """float64 values of g at z, written directly (no overflow-prone formula)."""
    if act == "softmax":
        e = np.zeros_like(z)
        e[np.argmax(z)] = 1.0         # 1e4 dominates every other entry completely
        return e
    return reference.g(act, z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTIVATION_CODES))
@pytest.mark.parametrize("form", ["loop-compiled", "loop-python", "numpy"])
def test_activations_stable_for_large_z(dtype, act, form):
    if act == "exp":
        pytest.skip("exp (Poisson output) overflows above z = 709 by definition; the "
                    "engine's divergence check stops such a fit")
    code = ACTIVATION_CODES[act]
    z = EXTREME.astype(dtype)
    a = z.copy()
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise",
                                                invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        if form == "loop-compiled":
            activate_row(a, code)
        elif form == "loop-python":
            plain(activate_row)(a, code)
        else:
            a2 = a[None, :].copy()
            activate(a2, code)
            a = a2[0]
        assert np.isfinite(a).all(), f"{act}: non-finite outputs {a}"
        expect = _expected(act, EXTREME)
        tol = 1e-6 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(a.astype(np.float64), expect, rtol=tol, atol=tol)
        if act != "softmax":
            delta = np.ones_like(a)
            if form == "loop-compiled":
                derivative_row(a, delta, code)
            elif form == "loop-python":
                plain(derivative_row)(a, delta, code)
            else:
                d2 = delta[None, :].copy()
                derivative(a[None, :].copy(), d2, code)
                delta = d2[0]
            assert np.isfinite(delta).all(), f"{act}: non-finite derivative {delta}"
            # g' is bounded by 1 for all our activations and >= 0
            assert (delta >= 0).all() and (delta <= 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["logistic", "softmax"])
@pytest.mark.parametrize("form", ["loop-compiled", "loop-python", "numpy"])
def test_log_loss_finite_for_saturated_outputs(dtype, act, form):
    """Probabilities of exactly 0 and 1 (saturated outputs) give a finite, clipped loss."""
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    Y = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    sw = np.empty(0, dtype)
    order = np.empty(0, np.int64)
    eps = float(np.finfo(dtype).eps)
    delta = nan_like(a.shape, dtype)
    args = (a, Y, sw, order, 0, LOSS_CODES["log_loss"], ACTIVATION_CODES[act], 1.0, eps,
            False, delta)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise",
                                                invalid="raise", under="ignore"):
        warnings.simplefilter("error")
        if form == "loop-compiled":
            total = kl.output_delta(*args)
        elif form == "loop-python":
            total = plain(kl.output_delta)(*args)
        else:
            total = kb.output_delta(*args)
    assert np.isfinite(total)
    # sample 0 puts probability 0 on its true class: -log(eps) (plus, for logistic,
    # -log(eps) again for the wrong class at probability 1); sample 1 is right: ~0.
    n_clipped = 1 if act == "softmax" else 2
    np.testing.assert_allclose(total, -n_clipped * np.log(eps), rtol=1e-5)
    np.testing.assert_array_equal(delta, a - Y)


# ---- column_stats ----------------------------------------------------------------------

@pytest.mark.parametrize("form", SINGLE_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 3), (50, 2000), (300, 784)])
def test_column_stats(rng, form, dtype, shape):
    """Against NumPy's mean/std/min/max in float64; the last two shapes span several
    blocks of rows (a short last one), so the merge of blocks is exercised."""
    X = (rng.standard_normal(shape) * rng.uniform(0.1, 10.0, shape[1])
         + rng.uniform(-5.0, 5.0, shape[1])).astype(dtype)
    got, want = nan_like((4, shape[1]), np.float64), nan_like((4, shape[1]), np.float64)
    single("column_stats", form)(X, got)
    kb.column_stats(X, want)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(got[2:], want[2:])


@pytest.mark.parametrize("form", SINGLE_FORMS)
def test_column_stats_keeps_a_small_spread_on_a_large_offset(rng, form):
    """Deviations from block means, never sums of squares: a spread of 1e-3 on values
    near 1e8 keeps its digits (a one-pass sum of squares would lose them all)."""
    X = 1e8 + rng.standard_normal((5000, 3)) * 1e-3
    got, want = np.empty((4, 3)), np.empty((4, 3))
    single("column_stats", form)(X, got)
    kb.column_stats(X, want)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-15)


# ---- rows_within ---------------------------------------------------------------------

@pytest.mark.parametrize("form", TWIN_FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [9, 2 * kl.ROWS_WITHIN_BLOCK + 3])
def test_rows_within(rng, form, dtype, m):
    """Every row's place: the first, the last, in the middle (with more rows than a
    block of the parallel twin: in the first, a middle and the last, partial, block)."""
    X = rng.standard_normal((m, 6)).astype(dtype)
    low, high = np.full(6, -5.0), np.full(6, 5.0)
    kernel = twin("rows_within", form)
    assert kernel(X, low, high) is kb.rows_within(X, low, high) is True
    for value in (np.nan, np.inf, -np.inf, 6.0, -6.0):
        for n, j in ((0, 0), (m - 1, 5), (m // 2, 2)):
            bad = X.copy()
            bad[n, j] = value
            assert kernel(bad, low, high) is kb.rows_within(bad, low, high) is False
    edge = X.copy()
    edge[3] = 5.0  # the limits themselves are inside
    assert kernel(edge, low, high) and kb.rows_within(edge, low, high)
    assert kernel(X[:0], low, high) and kb.rows_within(X[:0], low, high)


def test_twins_mark_the_parallel_copy_and_refuse_late_globals():
    """``jit.twins``: PARALLEL_TWIN is True in the parallel twin's globals only (the
    serial twin and the Python form run their blocks in order, without a block
    counter); a kernel reading a global defined after its ``twins`` call is
    refused at import, since the parallel copy's globals are a snapshot."""
    import numba
    from fastbp.jit import twins
    for name in ("dense_forward", "dense_backward_input", "dense_backward_params",
                 "dense_forward_acc", "dense_backward_input_acc"):
        serial, parallel = getattr(kl, name + "_serial"), getattr(kl, name + "_parallel")
        if numba.config.DISABLE_JIT:
            continue
        assert parallel.py_func.__globals__["PARALLEL_TWIN"] is True, name
        assert serial.py_func.__globals__["PARALLEL_TWIN"] is False, name
        assert parallel.py_func.__globals__["transpose_into"] is kl.transpose_into
    assert kl.PARALLEL_TWIN is False

    namespace = {"prange": range}
    exec("def late(x):\n    for i in prange(x.shape[0]):\n        x[i] = later(i)\n", namespace)
    with pytest.raises(NameError, match="define later before the twins"):
        twins(namespace["late"])
