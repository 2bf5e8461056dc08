"""exp, expm1, tanh, the logistic function and log1p in a form LLVM can vectorise.

Numba compiles ``np.exp``/``np.tanh`` to calls of the C library, one element at
a time: LLVM vectorises such calls only with Intel's SVML, which the
``llvmlite`` wheels on the package index are not built with.  In a loop over a
row of activations that makes tanh cost ~15 ns per element against ~0.3 ns for
relu.  Here the same functions are written with nothing but arithmetic,
comparisons and bit moves, as SLEEF and Eigen write theirs, so the loops that
call them vectorise:

* range reduction ``x = k ln2 + r``, ``|r| <= ln2 / 2``, with ln2 split in a
  high part exact in 33 bits and a low part (Cody and Waite), so ``k ln2_hi`` is
  exact for every ``|k| <= 1100``;
* ``e^r - 1 = r + r^2/2! + ... + r^13/13!`` by Horner's rule: the truncation
  error is below ``0.347^14 / 14! = 4e-18``, far under one ulp;
* ``2^k`` built from the exponent bits (``(k + 1023) << 52`` read as a
  float64), applied as two factors ``2^(k//2) 2^(k - k//2)`` so that results
  overflow to inf and underflow through the subnormals to 0 exactly where the C
  library's do.

Compiled without ``reassoc`` (``jit.jit_ordered``): reassociation would
fold the two halves of ln2 into one and multiply the two scale factors first
(overflowing where the result is finite).  LLVM inlines these small functions
into the kernels with their own flags, and the kernels' loops still vectorise.

Accuracy: within 2 ulp of the C library over the whole float64 range (tested),
NaN in gives NaN out, so the 1e-12 agreement with the NumPy (BLAS) twin and
the 1e-9 agreement with scikit-learn hold.  These take and return float64
scalars; ``expf``, ``expm1f``, ``tanhf``, ``logisticf`` and ``log1pf`` (end of the
module) are the same in float32, twice the lanes and half the series, within 1-3
float32 ulp.  Kernels call ``exp_any`` & co., which pick the form of their
argument's width when compiled.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.imputils import lower_builtin
from numba.extending import intrinsic, overload, type_callable

from .jit import jit_ordered, pure_python

LOG2E = 1.4426950408889634
LN2_HI = 0.6931471803691238  # 33 significant bits: k * LN2_HI is exact for |k| < 2^20
LN2_LO = 1.9082149292705877e-10
EXP_MAX = 709.782712893384  # log(DBL_MAX): above, exp is inf
EXP_MIN = -745.1332191019412  # log of half the smallest subnormal: below, exp is 0
TANH_LARGE = 22.0  # tanh(x) == 1.0 in float64 for x > 19.06

# 1/n! (Taylor coefficients of e^r), exact to the last bit as float64 constants
(_F2, _F3, _F4, _F5, _F6, _F7, _F8, _F9, _F10, _F11, _F12,
 _F13) = (1.0 / math.factorial(n) for n in range(2, 14))


def pow2(k):
    """``2.0 ** k`` for an integer ``-1022 <= k <= 1023`` (Python form; the compiled form
    builds the float from its exponent bits)."""
    return float(np.int64((int(k) + 1023) << 52).view(np.float64))


_FLOAT_OF_WIDTH = {32: (types.float32, ir.FloatType()), 64: (types.float64, ir.DoubleType())}


@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret an int32's (int64's) bits as a float32 (float64): one bitcast."""
    if not isinstance(bits, types.Integer) or bits.bitwidth not in _FLOAT_OF_WIDTH:
        return None
    ftype, lltype = _FLOAT_OF_WIDTH[bits.bitwidth]

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], lltype)

    return ftype(bits), codegen


@intrinsic
def _float_as_bits(typingctx, x):
    """Reinterpret a float32's (float64's) bits as an int32 (int64): one bitcast."""
    if not isinstance(x, types.Float) or x.bitwidth not in _FLOAT_OF_WIDTH:
        return None
    itype = types.int32 if x.bitwidth == 32 else types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(x.bitwidth))

    return itype(x), codegen


def float64_bits(x):
    """The bits of a float64 as an int64 (Python form; compiled: one bitcast)."""
    return int(np.float64(x).view(np.int64))


def bits_float64(b):
    """The float64 whose bits are the int64 ``b`` (Python form; compiled: one bitcast)."""
    return float(np.int64(b).view(np.float64))


def _bitcast_overloads(to_bits, to_float, int_type):
    """Compiled forms of a width's ``*_bits``/``bits_*`` pair: the bitcast intrinsics
    (the integer first cast to ``int_type``: Numba widens int32 arithmetic to int64)."""
    overload(to_bits, jit_options=dict(inline="always"))(lambda x: lambda x: _float_as_bits(x))
    overload(to_float, jit_options=dict(inline="always"))(
        lambda b: lambda b: _bits_as_float(int_type(b)))


_bitcast_overloads(float64_bits, bits_float64, np.int64)


@overload(pow2, jit_options=dict(inline="always"))
def _pow2_compiled(k):
    def impl(k):
        return bits_float64((k + 1023) << 52)
    return impl


@jit_ordered
def _reduce(x):
    """(k, r) with ``x = k ln2 + r``, ``|r| <= ln2 / 2``, for x clamped to about
    [EXP_MIN, EXP_MAX].  NaN gives k = 0 (never a NaN cast to int) and r = NaN."""
    kf = np.floor(x * LOG2E + 0.5)
    r = (x - kf * LN2_HI) - kf * LN2_LO
    kf = kf if kf == kf else 0.0
    return int(kf), r


@jit_ordered
def _expm1_reduced(r):
    """``e^r - 1`` for ``|r| <= ln2 / 2``: the Taylor series to degree 13 by Horner."""
    p = _F13 * r + _F12
    p = p * r + _F11
    p = p * r + _F10
    p = p * r + _F9
    p = p * r + _F8
    p = p * r + _F7
    p = p * r + _F6
    p = p * r + _F5
    p = p * r + _F4
    p = p * r + _F3
    p = p * r + _F2
    return (p * r + 1.0) * r


@jit_ordered
def _clamp(x):
    """x limited to [EXP_MIN - 1, EXP_MAX + 1]; NaN stays NaN (its comparisons are false)."""
    x = EXP_MAX + 1.0 if x > EXP_MAX + 1.0 else x
    return EXP_MIN - 1.0 if x < EXP_MIN - 1.0 else x


@jit_ordered
def exp(x):
    """``e^x`` for a float64 scalar, vectorisable (see the module docstring)."""
    k, r = _reduce(_clamp(x))
    half = k >> 1
    s1 = pow2(half)
    s2 = pow2(k - half)
    return (s1 * (_expm1_reduced(r) + 1.0)) * s2


@jit_ordered
def expm1(x):
    """``e^x - 1`` for a float64 scalar, accurate also near 0, vectorisable.

    ``e^x - 1 = 2^k (e^r - 1) + (2^k - 1)``: for ``k = 0`` the series itself; for
    ``|k| >= 1`` the result is at least 0.29 in size, so the sum loses nothing.
    """
    k, r = _reduce(_clamp(x))
    half = k >> 1
    s1 = pow2(half)
    s2 = pow2(k - half)
    s = s1 * s2
    em1 = _expm1_reduced(r)
    large = (s1 * (em1 + 1.0)) * s2  # k > 1000: the -1 is lost to rounding; s may overflow
    if k > 1000:
        return large
    return em1 if k == 0 else s * em1 + (s - 1.0)  # k == 0: keeps the sign of -0.0


@jit_ordered
def tanh(x):
    """``tanh x = -expm1(-2|x|) / (2 + expm1(-2|x|))`` with the sign of x, vectorisable.

    ``|x|`` is capped at 22 (tanh is 1.0 in float64 beyond 19.1), so
    ``y = -2|x|`` has ``k`` in [-64, 0] and ``2^k`` needs one factor; expm1(y)
    as in :func:`expm1`, written out so that LLVM inlines one level only.
    """
    ax = abs(x)
    ax = TANH_LARGE if ax > TANH_LARGE else ax  # NaN passes (the comparison is false)
    k, r = _reduce(-2.0 * ax)
    s = pow2(k)
    e = s * _expm1_reduced(r) + (s - 1.0)
    return math.copysign(-e / (2.0 + e), x)


@jit_ordered
def logistic(x):
    """``1 / (1 + e^-x)`` as ``1 / (1 + e)`` (x >= 0) or ``e / (1 + e)`` (x < 0) with
    ``e = e^-|x|`` in (0, 1]: nothing overflows for any x, vectorisable (a select, not
    a branch).  ``e^-|x|`` as in :func:`exp`, written out so LLVM inlines one level only.
    """
    k, r = _reduce(_clamp(-abs(x)))
    half = k >> 1
    e = (pow2(half) * (_expm1_reduced(r) + 1.0)) * pow2(k - half)
    p = 1.0 / (1.0 + e)
    return p if x >= 0 else e * p  # NaN: the comparison is false and e * p is NaN


# 2 / (2n + 1), n = 1..10: the series 2 atanh(s) = 2s + s R(s^2), R(z) = sum_n 2 z^n / (2n + 1)
(_A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10) = (2.0 / (2 * n + 1) for n in range(1, 11))
_SQRT2_HALF_HI = 0x3FE6A09E  # high word of sqrt(2)/2
# 1.5 2^52: for |k| < 2^51 the float64 with bits _MAGIC_BITS + k is exactly _MAGIC + k
_MAGIC = 6755399441055744.0
_MAGIC_BITS = 0x4338000000000000


@jit_ordered
def log1p(x):
    """``log(1 + x)`` for a float64 scalar, accurate also near 0, vectorisable.

    The reduction of fdlibm/musl's log1p written as selects: ``u = 1 + x =
    2^k f'`` with ``f'`` in [sqrt(2)/2, sqrt(2)), found by adding
    ``0x3ff00000 - 0x3fe6a09e`` to the high word of u's bits; the rounding
    error of ``1 + x`` is kept as the correction ``c = (x - (u - 1)) / u``
    (``(1 - (u - x)) / u`` from k = 2 on; from k = 54 on it is 1/u, far
    below half an ulp of the result).  Then with ``f = f' - 1`` (exact),
    ``s = f / (2 + f)``,
    ``z = s^2``: ``log(1 + f) = f - f^2/2 + s (f^2/2 + R(z))`` with
    ``R(z) = sum_{n=1..10} 2 z^n / (2n + 1)``, the Taylor series of
    ``2 atanh(s) - 2s`` (``|s| <= 0.1716``, so the first term left out is
    below ``2 z^11 / 23 < 1e-18`` relative), and ``k ln2`` added in two parts.

    ``x = -1`` gives -inf, ``x < -1`` and NaN give NaN, +inf gives +inf and
    +-0 itself, as the C library's.  Within 2 ulp of it over the whole range
    (tested; 1 ulp seen).  No branch: a loop calling it vectorises (2.8-3.2
    ns per element on a loaded core against 9.7 for the C library's).
    """
    u = 1.0 + x
    bits = float64_bits(u)
    hu = (bits >> 32) + (0x3FF00000 - _SQRT2_HALF_HI)
    k = (hu >> 20) - 0x3FF
    c = (1.0 - (u - x)) if k >= 2 else (x - (u - 1.0))
    c = c / (u + (u == 0.0))  # u = 0 (x = -1, selected below): no 0/0, also in Python
    hu = (hu & 0x000FFFFF) + _SQRT2_HALF_HI
    f = bits_float64((hu << 32) | (bits & 0xFFFFFFFF)) - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    r = _A10 * z + _A9
    r = r * z + _A8
    r = r * z + _A7
    r = r * z + _A6
    r = r * z + _A5
    r = r * z + _A4
    r = r * z + _A3
    r = r * z + _A2
    r = r * z + _A1
    r = r * z
    dk = bits_float64(k + _MAGIC_BITS) - _MAGIC  # float(k) without a 64-bit int conversion
    y = s * (hfsq + r) + (dk * LN2_LO + c) - hfsq + f + dk * LN2_HI
    y = x if x == np.inf or x == 0.0 else y  # +inf; +-0 keeps its sign
    y = -np.inf if x == -1.0 else y
    return np.nan if not x >= -1.0 else y  # x < -1 and NaN


# ---- float32: the same functions in single precision --------------------------
#
# A float32 network's activations computed through the float64 functions above
# run 4 lanes to an AVX2 register and a degree-13 series; in float32 they run 8
# lanes and need a degree-7 series (the first term left out, ``r^8 / 8!`` at
# ``|r| <= ln2 / 2``, is below 2e-8 relative: a third of a float32 ulp).  Every
# float constant is a float32, so no arithmetic is promoted to float64 (integers
# are int32 constants; Numba widens their arithmetic to int64 and the bit casts
# narrow it back).  The reductions are fdlibm's expf/log1pf: ln2 split as
# 0x3f317200 (15 significant bits: ``k ln2_hi`` is exact for |k| < 512) plus its
# rest.  Callers reach them through the ``*_any`` functions below, which pick
# the float32 or float64 form by the argument's type when compiled.

_f32 = np.float32
_i32 = np.int32
LOG2E_F = _f32(LOG2E)
LN2_HI_F = _f32(0.693145751953125)
LN2_LO_F = _f32(1.428606765330187e-06)
EXP_MAX_F = _f32(88.72283)  # log(FLT_MAX): above, expf is inf
EXP_MIN_F = _f32(-103.97208)  # log of half the smallest float32 subnormal: below, 0
TANH_LARGE_F = _f32(9.0)  # tanh(x) rounds to 1 in float32 from x = 9.01 on
_F_ONE, _F_TWO, _F_HALF = _f32(1.0), _f32(2.0), _f32(0.5)
(_G2, _G3, _G4, _G5, _G6, _G7) = (_f32(1.0 / math.factorial(n)) for n in range(2, 8))
_I1, _I23, _I127 = _i32(1), _i32(23), _i32(127)


def pow2f(k):
    """``2 ** k`` as a float32 for an integer ``-126 <= k <= 127`` (Python form;
    compiled: built from the exponent bits)."""
    return np.int32((int(k) + 127) << 23).view(np.float32)


def float32_bits(x):
    """The bits of a float32 as an int32 (Python form; compiled: one bitcast)."""
    return np.float32(x).view(np.int32)


def bits_float32(b):
    """The float32 whose bits are the int32 ``b`` (Python form; compiled: one bitcast)."""
    return np.int32(b).view(np.float32)


_bitcast_overloads(float32_bits, bits_float32, np.int32)


@overload(pow2f, jit_options=dict(inline="always"))
def _pow2f_compiled(k):
    def impl(k):
        return bits_float32((k + _I127) << _I23)
    return impl


@jit_ordered
def _reducef(x):
    """(k, r) with ``x = k ln2 + r``, ``|r| <= ln2 / 2``, in float32 and int32, for x
    clamped to about [EXP_MIN_F, EXP_MAX_F]; NaN gives k = 0 and r = NaN."""
    kf = np.floor(x * LOG2E_F + _F_HALF)
    r = (x - kf * LN2_HI_F) - kf * LN2_LO_F
    kf = kf if kf == kf else _f32(0.0)
    return np.int32(kf), r


@jit_ordered
def _expm1_reducedf(r):
    """``e^r - 1`` for ``|r| <= ln2 / 2`` in float32: the Taylor series to degree 7."""
    p = _G7 * r + _G6
    p = p * r + _G5
    p = p * r + _G4
    p = p * r + _G3
    p = p * r + _G2
    return (p * r + _F_ONE) * r


@jit_ordered
def _clampf(x):
    """x limited to [EXP_MIN_F - 1, EXP_MAX_F + 1]; NaN stays NaN."""
    x = EXP_MAX_F + _F_ONE if x > EXP_MAX_F + _F_ONE else x
    return EXP_MIN_F - _F_ONE if x < EXP_MIN_F - _F_ONE else x


@jit_ordered
def expf(x):
    """``e^x`` for a float32 scalar, in float32, vectorisable (see :func:`exp`)."""
    k, r = _reducef(_clampf(x))
    half = k >> _I1
    return (pow2f(half) * (_expm1_reducedf(r) + _F_ONE)) * pow2f(k - half)


@jit_ordered
def expm1f(x):
    """``e^x - 1`` for a float32 scalar, in float32, accurate also near 0 (see
    :func:`expm1`)."""
    k, r = _reducef(_clampf(x))
    half = k >> _I1
    s1 = pow2f(half)
    s2 = pow2f(k - half)
    s = s1 * s2
    em1 = _expm1_reducedf(r)
    large = (s1 * (em1 + _F_ONE)) * s2  # k > 100: the -1 is lost to rounding
    if k > _i32(100):
        return large
    return em1 if k == _i32(0) else s * em1 + (s - _F_ONE)


@jit_ordered
def tanhf(x):
    """``tanh x`` for a float32 scalar, in float32 (see :func:`tanh`; |x| capped at 9)."""
    ax = abs(x)
    ax = TANH_LARGE_F if ax > TANH_LARGE_F else ax  # NaN passes
    k, r = _reducef(-_F_TWO * ax)
    s = pow2f(k)
    e = s * _expm1_reducedf(r) + (s - _F_ONE)
    return math.copysign(-e / (_F_TWO + e), x)


@jit_ordered
def logisticf(x):
    """``1 / (1 + e^-x)`` for a float32 scalar, in float32 (see :func:`logistic`)."""
    k, r = _reducef(_clampf(-abs(x)))
    half = k >> _I1
    e = (pow2f(half) * (_expm1_reducedf(r) + _F_ONE)) * pow2f(k - half)
    p = _F_ONE / (_F_ONE + e)
    return p if x >= _f32(0.0) else e * p


# 2 / (2n + 1), n = 1..5: |s| <= 0.1716, so the first term left out is below 3e-9 relative
(_B1, _B2, _B3, _B4, _B5) = (_f32(2.0 / (2 * n + 1)) for n in range(1, 6))
_SQRT2_HALF_BITS_F = _i32(0x3F3504F3)  # sqrt(2)/2 as float32 bits
_ONE_BITS_F = _i32(0x3F800000)
_MANT_F = _i32(0x007FFFFF)


@jit_ordered
def log1pf(x):
    """``log(1 + x)`` for a float32 scalar, in float32, accurate also near 0: :func:`log1p`'s
    reduction on the float32 bits (fdlibm's log1pf) and 5 terms of the series."""
    u = _F_ONE + x
    # (NaN: bits of 1 instead, so the int32 sum cannot overflow; the result is NaN below)
    hu = float32_bits(u if u == u else _F_ONE) + (_ONE_BITS_F - _SQRT2_HALF_BITS_F)
    k = (hu >> _I23) - _I127
    c = (_F_ONE - (u - x)) if k >= _i32(2) else (x - (u - _F_ONE))
    c = c / (u + _f32(u == _f32(0.0)))  # u = 0 (x = -1, selected below): no 0/0
    f = bits_float32((hu & _MANT_F) + _SQRT2_HALF_BITS_F) - _F_ONE
    hfsq = _F_HALF * f * f
    s = f / (_F_TWO + f)
    z = s * s
    r = _B5 * z + _B4
    r = r * z + _B3
    r = r * z + _B2
    r = r * z + _B1
    r = r * z
    dk = _f32(k)
    y = s * (hfsq + r) + (dk * LN2_LO_F + c) - hfsq + f + dk * LN2_HI_F
    y = x if x == _f32(np.inf) or x == _f32(0.0) else y
    y = _f32(-np.inf) if x == -_F_ONE else y
    return _f32(np.nan) if not x >= -_F_ONE else y


# ---- either width: what the kernels call ---------------------------------------

def _width_generic(f64, f32, name):
    """``name(x)``: ``f32(x)`` for a float32 x, else ``f64(x)``.

    Compiled, the call is typed and lowered as a direct call of the form for x's
    width (Numba's ``type_callable``/``lower_builtin``): only that form is ever
    typed and compiled, and no function of its own stands between a kernel and it
    (an ``overload`` would compile one, and a level of linking, per call site).  As
    Python, it picks by the scalar's type (plain-Python copies of both, as
    ``jit.pure_python`` makes them).
    """
    py = {}

    def generic(x):
        if not py:
            py.update(f64=pure_python(f64), f32=pure_python(f32))
        if isinstance(x, np.float32):
            return py["f32"](x)
        return py["f64"](float(x))

    def _form(x):
        return f32 if x == types.float32 else f64

    @type_callable(generic)
    def _typer(context):
        def typer(x):
            if isinstance(x, types.Float):
                fnty = context.resolve_value_type(_form(x))
                return context.resolve_function_type(fnty, (x,), {}).return_type
        return typer

    @lower_builtin(generic, types.Float)
    def _lower(context, builder, sig, args):
        fnty = context.typing_context.resolve_value_type(_form(sig.args[0]))
        inner = fnty.get_call_type(context.typing_context, sig.args, {})
        return context.get_function(fnty, inner)(builder, args)

    generic.__name__ = generic.__qualname__ = name
    generic.__doc__ = (f"``{f64.__name__}`` of x in x's own precision: the float32 form "
                       f"``{f32.__name__}`` for a float32, else the float64 one.")
    return generic


exp_any = _width_generic(exp, expf, "exp_any")
expm1_any = _width_generic(expm1, expm1f, "expm1_any")
tanh_any = _width_generic(tanh, tanhf, "tanh_any")
logistic_any = _width_generic(logistic, logisticf, "logistic_any")
log1p_any = _width_generic(log1p, log1pf, "log1p_any")
