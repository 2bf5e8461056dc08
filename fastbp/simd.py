"""Explicit SIMD vectors for the register-tiled kernels (``kernels_loop.outer_*``).

LLVM vectorises a loop on its own only where it can keep the sums of a dot
product in registers; for the other forms of the backward pass (a row of the
result updated from many rows of the input) it keeps the sums in memory and
spends a load and a store on every multiply-add.  A register tile of the
result, as the micro-kernels of BLAS libraries (BLIS, OpenBLAS) hold it, needs
vectors that live across a loop: these functions give Numba code such values.

A vector is ``LANES_BYTES`` bytes of one float type (``lanes(dtype)``
elements): 256 bytes on a CPU with AVX-512 (four 512-bit registers per vector),
64 bytes elsewhere (two AVX2 registers, or four SSE ones).  LLVM splits a wide
vector into the machine's registers, so one source serves every CPU, and a
tile of 6 rows x 1 vector takes 24 of AVX-512's 32 registers or 12 of AVX2's 16.
Numba's on-disk cache is keyed on the CPU, so a cache built on one kind of CPU
is never loaded on another.

Each function is plain Python over NumPy (the ``python`` backend and
``NUMBA_DISABLE_JIT`` run that) and, compiled, a few LLVM instructions
(``type_callable``/``lower_builtin``); loads and stores are masked (AVX-512's
mask registers, AVX2's ``vmaskmov``), so a partial vector costs what a full one
does:

* ``vload(row, i, n)`` -- ``row[i:i + n]`` in the first n lanes, zeros in the
  others (L = ``lanes``; row 1-D C-contiguous; nothing past ``row[i + n - 1]``
  is read, so a tile can end anywhere; no bounds check: callers stay within
  bounds);
* ``vstore(row, i, v, n)`` -- ``row[i:i + n] = v[:n]`` (nothing else written);
* ``vsplat(v, x)`` -- a vector like v with every lane x;
* ``vzero(row)`` -- a vector of zeros of row's dtype;
* ``vfma(a, b, c)`` -- ``a * b + c`` lane by lane, fused (one rounding) when
  compiled;
* ``vadd(a, b)`` -- ``a + b`` lane by lane;
* ``vmul(a, b)`` -- ``a * b`` lane by lane;
* ``vsum(v)`` -- the sum of the lanes, as a scalar, added in a fixed tree order
  (the two halves lane by lane, then the halves of that, ...) in every form.

And one memory hint, ``prefetch(row, i)``: ask for the cache line holding
``row[i]`` to be brought into the L2 cache (LLVM's ``llvm.prefetch``, read,
locality 2: the x86 ``prefetcht1``).  It never faults and changes no result;
its Python form does nothing.
"""
import os

import llvmlite.binding as llb
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models, register_default
from numba.core.imputils import lower_builtin
from numba.extending import type_callable


def _vector_bytes():
    """256 with AVX-512 on the CPU Numba compiles for, else 64 (FASTBP_SIMD_BYTES overrides)."""
    forced = os.environ.get("FASTBP_SIMD_BYTES")
    if forced:
        return int(forced)
    if numba.config.CPU_FEATURES:
        features = numba.config.CPU_FEATURES
    elif numba.config.CPU_NAME and numba.config.CPU_NAME != "host":
        features = ""  # a named (portable) target: assume no AVX-512
    else:
        features = llb.get_host_cpu_features().flatten()
    return 256 if "+avx512f" in features.split(",") else 64


LANES_BYTES = _vector_bytes()


def lanes(dtype):
    """Elements of one vector of ``dtype``."""
    return LANES_BYTES // np.dtype(dtype).itemsize


class Vector(types.Type):
    """Numba type of a SIMD vector: ``count`` lanes of float type ``dtype``."""

    def __init__(self, dtype, count):
        self.dtype = dtype
        self.count = count
        super().__init__(name=f"Vector({dtype} x {count})")


@register_default(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.count))


def _vector_of(dtype):
    return Vector(dtype, LANES_BYTES // (dtype.bitwidth // 8))


def _row_pointer(context, builder, aryty, ary, index, vecty):
    """Pointer to ``ary[index]`` as a pointer to a vector (ary 1-D, contiguous)."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [index]), vecty.as_pointer())


def _is_float_row(row):
    return (isinstance(row, types.Array) and row.ndim == 1 and row.layout == "C"
            and isinstance(row.dtype, types.Float))


# ---- plain-Python forms ------------------------------------------------------------

def vload(row, i, n):
    """``row[i:i + n]`` in the first n lanes of a vector, zeros in the others."""
    v = np.zeros(lanes(row.dtype), dtype=row.dtype)
    part = row[i:i + min(n, v.shape[0])]
    v[:part.shape[0]] = part
    return v


def vstore(row, i, v, n):
    """``row[i:i + n] = v[:n]``."""
    n = min(n, v.shape[0])
    row[i:i + n] = v[:n]


def vsplat(v, x):
    """A vector like ``v`` with every lane ``x``."""
    return np.full(v.shape[0], x, dtype=v.dtype)


def vzero(row):
    """A vector of zeros of ``row``'s dtype."""
    return np.zeros(lanes(row.dtype), dtype=row.dtype)


def vfma(a, b, c):
    """``a * b + c`` lane by lane (fused when compiled)."""
    return a * b + c


def vadd(a, b):
    """``a + b`` lane by lane."""
    return a + b


def vmul(a, b):
    """``a * b`` lane by lane."""
    return a * b


def vsum(v):
    """The sum of v's lanes: the halves added lane by lane until one lane is left."""
    while v.shape[0] > 1:
        half = v.shape[0] // 2
        v = v[:half] + v[half:]
    return v[0]


# ---- compiled forms ----------------------------------------------------------------

def _first_lanes(builder, count, n):
    """The mask ``<lane k < n>`` of a vector of ``count`` lanes (n an int64)."""
    index = ir.VectorType(ir.IntType(64), count)
    one = builder.insert_element(ir.Constant(index, ir.Undefined), n,
                                 ir.Constant(ir.IntType(32), 0))
    limit = builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), count),
                                                         [0] * count))
    return builder.icmp_signed("<", ir.Constant(index, list(range(count))), limit)


def _masked_access(context, builder, sig, args, vecty):
    """What ``vload``/``vstore`` share: (pointer to the row's element i as a vector
    pointer, mask of its first n lanes, alignment) from ``(row, i, ..., n)``."""
    ptr = _row_pointer(context, builder, sig.args[0], args[0], args[1], vecty)
    mask = _first_lanes(builder, vecty.count,
                        context.cast(builder, args[-1], sig.args[-1], types.int64))
    return ptr, mask, ir.Constant(ir.IntType(32), sig.args[0].dtype.bitwidth // 8)


def _masked(builder, name, vecty, fnty):
    """LLVM's ``llvm.masked.<name>`` intrinsic for vectors of type ``vecty``."""
    bits = 32 if isinstance(vecty.element, ir.FloatType) else 64
    return cgutils.get_or_insert_function(builder.module, fnty,
                                          f"llvm.masked.{name}.v{vecty.count}f{bits}.p0")


@type_callable(vload)
def _vload_typer(context):
    def typer(row, i, n):
        if _is_float_row(row) and isinstance(i, types.Integer) and isinstance(n, types.Integer):
            return _vector_of(row.dtype)
    return typer


@lower_builtin(vload, types.Array, types.Integer, types.Integer)
def _vload_lower(context, builder, sig, args):
    vecty = context.get_value_type(sig.return_type)
    ptr, mask, align = _masked_access(context, builder, sig, args, vecty)
    load = _masked(builder, "load", vecty,
                   ir.FunctionType(vecty, [vecty.as_pointer(), align.type, mask.type, vecty]))
    return builder.call(load, [ptr, align, mask, ir.Constant(vecty, None)])


@type_callable(vstore)
def _vstore_typer(context):
    def typer(row, i, v, n):
        if (_is_float_row(row) and isinstance(i, types.Integer) and isinstance(v, Vector)
                and v.dtype == row.dtype and isinstance(n, types.Integer)):
            return types.none
    return typer


@lower_builtin(vstore, types.Array, types.Integer, Vector, types.Integer)
def _vstore_lower(context, builder, sig, args):
    vecty = args[2].type
    ptr, mask, align = _masked_access(context, builder, sig, args, vecty)
    store = _masked(builder, "store", vecty,
                    ir.FunctionType(ir.VoidType(), [vecty, vecty.as_pointer(), align.type,
                                                    mask.type]))
    builder.call(store, [args[2], ptr, align, mask])
    return context.get_dummy_value()


@type_callable(vsplat)
def _vsplat_typer(context):
    def typer(v, x):
        if isinstance(v, Vector) and isinstance(x, (types.Float, types.Integer)):
            return v
    return typer


@lower_builtin(vsplat, Vector, types.Number)
def _vsplat_lower(context, builder, sig, args):
    vecty = args[0].type
    x = context.cast(builder, args[1], sig.args[1], sig.args[0].dtype)
    one = builder.insert_element(ir.Constant(vecty, ir.Undefined), x,
                                 ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vecty.count), [0] * vecty.count)
    return builder.shuffle_vector(one, one, mask)


@type_callable(vzero)
def _vzero_typer(context):
    def typer(row):
        if _is_float_row(row):
            return _vector_of(row.dtype)
    return typer


@lower_builtin(vzero, types.Array)
def _vzero_lower(context, builder, sig, args):
    return ir.Constant(context.get_value_type(sig.return_type), None)


@type_callable(vfma)
def _vfma_typer(context):
    def typer(a, b, c):
        if isinstance(a, Vector) and a == b == c:
            return a
    return typer


@lower_builtin(vfma, Vector, Vector, Vector)
def _vfma_lower(context, builder, sig, args):
    vecty = args[0].type
    bits = sig.args[0].dtype.bitwidth
    fnty = ir.FunctionType(vecty, [vecty] * 3)
    fma = cgutils.get_or_insert_function(builder.module, fnty,
                                         f"llvm.fma.v{vecty.count}f{bits}")
    return builder.call(fma, args)


def _lane_wise(func, instruction):
    """Compile ``func(a, b)`` on two vectors of one type as one LLVM ``instruction``
    (an IRBuilder method: ``fadd``, ``fmul``) on them."""
    @type_callable(func)
    def _typer(context):
        def typer(a, b):
            if isinstance(a, Vector) and a == b:
                return a
        return typer

    @lower_builtin(func, Vector, Vector)
    def _lower(context, builder, sig, args):
        return getattr(builder, instruction)(args[0], args[1])


_lane_wise(vadd, "fadd")
_lane_wise(vmul, "fmul")


@type_callable(vsum)
def _vsum_typer(context):
    def typer(v):
        if isinstance(v, Vector):
            return v.dtype
    return typer


@lower_builtin(vsum, Vector)
def _vsum_lower(context, builder, sig, args):
    v = args[0]
    count = v.type.count
    while count > 1:  # the halves, as the Python form adds them
        half = count // 2
        lanes_of = lambda start: ir.Constant(ir.VectorType(ir.IntType(32), half),
                                             list(range(start, start + half)))
        v = builder.fadd(builder.shuffle_vector(v, v, lanes_of(0)),
                         builder.shuffle_vector(v, v, lanes_of(half)))
        count = half
    return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))


def prefetch(row, i):
    """Hint: bring the cache line of ``row[i]`` into L2 (compiled); nothing in Python."""


@type_callable(prefetch)
def _prefetch_typer(context):
    def typer(row, i):
        if (isinstance(row, types.Array) and row.ndim == 1 and row.layout == "C"
                and isinstance(i, types.Integer)):
            return types.none
    return typer


@lower_builtin(prefetch, types.Array, types.Integer)
def _prefetch_lower(context, builder, sig, args):
    data = context.make_array(sig.args[0])(context, builder, args[0]).data
    ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
        "llvm.prefetch.p0")
    builder.call(fn, [ptr, i32(0), i32(2), i32(1)])  # read, locality 2 (L2), data
    return context.get_dummy_value()
