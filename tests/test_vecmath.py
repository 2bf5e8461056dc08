"""vecmath's exp, expm1, tanh, logistic and log1p (and softplus written with them)
against NumPy's (the C library's), in ulp, over the whole float64 range and its special
values, compiled and as plain Python; and a check that the compiled loops that call them
really vectorise."""
import re

import numpy as np
import pytest

from fastbp import vecmath
from fastbp.jit import jit, pure_python

def _logistic(x):
    """The BLAS twin's overflow-free form (subnormal results below -709, not 0)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log1p(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log1p(x)


def _softplus(x):
    """The BLAS twin's form."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@jit(cache=False)
def _softplus_loop_form(z):
    """softplus as ``activations.activate_row`` writes it with vecmath's exp and log1p."""
    return (z if z > 0.0 else 0.0) + vecmath.log1p(vecmath.exp(-abs(z)))


FUNCTIONS = {
    "exp": (vecmath.exp, np.exp, 1),
    "expm1": (vecmath.expm1, np.expm1, 2),
    "tanh": (vecmath.tanh, np.tanh, 3),
    "logistic": (vecmath.logistic, lambda x: _logistic(x), 3),
    "log1p": (vecmath.log1p, _log1p, 2),
    "softplus": (_softplus_loop_form, _softplus, 2),
}
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-310, -1e-310, 5e-324,
                    709.78, 709.79, 710.0, -708.39, -708.4, -720.0, -745.13, -745.14, -746.0,
                    19.06, 19.07, 22.0, 23.0, -22.0, 0.34657359, -0.34657359, 1e300, -1e300,
                    # log1p: the pole, just beside it, the edges of its reduction
                    # (1 + x = sqrt(2)/2, sqrt(2)) and of float64
                    -1.0, -1.0000000000000002, -0.9999999999999999, -0.5, -0.2928932188134524,
                    0.41421356237309503, 1e-17, -1e-17, 2.0 ** 53, 1.7976931348623157e308])


def _loop(func):
    """A compiled ``out[i] = func(x[i])`` loop; not cached: the vectorisation test reads
    the machine code, which Numba keeps only for functions compiled in this process."""
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = func(x[i])
    return jit(cache=False)(apply)


LOOPS = {name: _loop(func) for name, (func, _, _) in FUNCTIONS.items()}


@jit(cache=False)
def _softplus_loop(x, out):
    """softplus's loop as ``activations.activate_row`` has it (exp and log1p inlined)."""
    for i in range(x.shape[0]):
        z = x[i]
        out[i] = (z if z > 0.0 else 0.0) + vecmath.log1p(vecmath.exp(-abs(z)))


LOOPS["softplus"] = _softplus_loop


def _inputs(rng, n):
    return np.concatenate([rng.uniform(-750, 750, n), rng.standard_normal(n) * 3,
                           rng.standard_normal(n) * 1e-6, 10.0 ** rng.uniform(-320, 3, n)
                           * rng.choice([-1, 1], n), rng.uniform(-1, 1, n),
                           10.0 ** rng.uniform(3, 308, n // 10), SPECIAL])


def _assert_ulp(got, want, bound):
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(want) & (want != 0)
        err = np.abs(got[finite] - want[finite]) / np.spacing(np.abs(want[finite]))
    # zeros, infinities and NaN exactly where the C library has them (the sign of 0 too)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    np.testing.assert_array_equal(np.signbit(got[want == 0]), np.signbit(want[want == 0]))
    assert err.max() <= bound, f"max error {err.max()} ulp at x where want={want[finite][err.argmax()]}"


@pytest.mark.parametrize("name", list(FUNCTIONS) + ["expf", "expm1f", "tanhf", "logisticf",
                                                     "log1pf"])
def test_compiled_functions_are_within_a_few_ulp_of_the_c_library(rng, name):
    # float64 forms against NumPy's; float32 forms (below) against the correctly rounded
    # result, over the whole range of their type
    if name in FUNCTIONS:
        _, reference, bound = FUNCTIONS[name]
        x = _inputs(rng, 100_000)
    else:
        _, reference, bound = FUNCTIONS_F32[name]
        x = _inputs_f32(rng, 100_000)
    out = np.empty_like(x)
    (LOOPS.get(name) or LOOPS_F32[name])(x, out)
    if name in FUNCTIONS:
        with np.errstate(over="ignore"):
            _assert_ulp(out, reference(x), bound)
    else:
        _assert_ulp_f32(out, x, reference, bound)


@pytest.mark.nojit
@pytest.mark.parametrize("name", FUNCTIONS)
def test_python_forms_agree_with_the_c_library(rng, name):
    # the same source run as Python (backend="python", NUMBA_DISABLE_JIT)
    func, reference, bound = FUNCTIONS[name]
    x = _inputs(rng, 200)
    py = pure_python(func) if hasattr(func, "py_func") else func
    with np.errstate(over="ignore"):
        got = np.array([py(float(v)) for v in x])
        want = reference(x)
    _assert_ulp(got, want, bound)


@pytest.mark.parametrize("k", [-1022, -1, 0, 1, 52, 1023])
def test_pow2_builds_exact_powers_of_two(k):
    @jit
    def compiled(k):
        return vecmath.pow2(k)
    assert compiled(k) == vecmath.pow2(k) == 2.0 ** k


@pytest.mark.parametrize("name", FUNCTIONS)
def test_loops_calling_them_vectorise(name):
    # what the module exists for: no call per element, packed FMAs in the loop
    loop = LOOPS[name]
    loop(np.zeros(4), np.zeros(4))
    asm = loop.inspect_asm(loop.signatures[0])
    assert not re.search(r"call\w*\s+\w*(exp|tanh|log)", asm)
    assert re.search(r"vfmadd\w*\s+%[yz]mm", asm), "no packed FMA: the loop did not vectorise"


# ---- float32 forms ---------------------------------------------------------------

def _logistic64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# name: (float32 form, float64 reference (rounded to float32 it is the correctly rounded
# result, or within half an ulp of it), bound in float32 ulp)
FUNCTIONS_F32 = {
    "expf": (vecmath.expf, np.exp, 1),
    "expm1f": (vecmath.expm1f, np.expm1, 2),
    "tanhf": (vecmath.tanhf, np.tanh, 2),
    "logisticf": (vecmath.logisticf, _logistic64, 3),  # NumPy's float32 form: 3 too
    "log1pf": (vecmath.log1pf, _log1p, 1),
}
SPECIAL_F32 = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, -1e-40, 1.1754944e-38,
     88.72283, 88.72284, 89.0, -87.33654, -87.3366, -103.97207, -103.9721, -104.0, -200.0,
     9.0, 9.02, -9.02, 0.34657359, -0.34657359, 3.4028235e38, -3.4028235e38,
     -1.0, -1.0000001, -0.99999994, -0.5, -0.29289323, 0.41421354, 1e-9, -1e-9, 2.0 ** 24],
    dtype=np.float32)
LOOPS_F32 = {name: _loop(func) for name, (func, _, _) in FUNCTIONS_F32.items()}


def _inputs_f32(rng, n):
    x = np.concatenate([rng.uniform(-110, 110, n), rng.standard_normal(n) * 3,
                        rng.standard_normal(n) * 1e-4, 10.0 ** rng.uniform(-45, 38, n)
                        * rng.choice([-1, 1], n), rng.uniform(-1, 1, n)])
    return np.concatenate([x.astype(np.float32), SPECIAL_F32])


def _assert_ulp_f32(got, x, reference, bound):
    """:func:`_assert_ulp` in float32 ulp, against the float64 reference rounded to float32."""
    assert got.dtype == np.float32
    with np.errstate(all="ignore"):
        want = reference(x.astype(np.float64)).astype(np.float32)
    _assert_ulp(got, want, bound)




@pytest.mark.nojit
@pytest.mark.parametrize("name", FUNCTIONS_F32)
def test_float32_python_forms_compute_in_float32(rng, name):
    # the python backend's (and NUMBA_DISABLE_JIT's) form: float32 arithmetic, same bound
    func, reference, bound = FUNCTIONS_F32[name]
    py = pure_python(func)
    x = _inputs_f32(rng, 200)
    with np.errstate(all="ignore"):  # NumPy scalars warn where the compiled form is silent
        got = np.array([py(v) for v in x], dtype=np.float32)
    _assert_ulp_f32(got, x, reference, bound)


@pytest.mark.parametrize("name", FUNCTIONS_F32)
def test_float32_loops_vectorise_in_single_precision(name):
    loop = LOOPS_F32[name]
    loop(np.zeros(4, np.float32), np.zeros(4, np.float32))
    asm = loop.inspect_asm(loop.signatures[0])
    assert not re.search(r"call\w*\s+\w*(exp|tanh|log)", asm)
    # packed single-precision FMAs, no double-precision arithmetic in the loop
    assert re.search(r"vfmadd\w*ps\s+%[yz]mm", asm), "no packed float32 FMA"
    assert not re.search(r"v(fmadd\w*|mul|add|div)pd\s", asm), "float64 arithmetic inside"


ANY = {"exp_any": (vecmath.exp_any, vecmath.exp, vecmath.expf),
       "expm1_any": (vecmath.expm1_any, vecmath.expm1, vecmath.expm1f),
       "tanh_any": (vecmath.tanh_any, vecmath.tanh, vecmath.tanhf),
       "logistic_any": (vecmath.logistic_any, vecmath.logistic, vecmath.logisticf),
       "log1p_any": (vecmath.log1p_any, vecmath.log1p, vecmath.log1pf)}


@pytest.mark.parametrize("name", ANY)
def test_any_width_forms_pick_the_argument_precision(rng, name):
    generic, f64, f32 = ANY[name]
    x = rng.uniform(-5, 5, 64)
    if name == "log1p_any":
        x = np.abs(x)
    for dtype, exact in ((np.float64, f64), (np.float32, f32)):
        xs = x.astype(dtype)
        got, want = np.empty_like(xs), np.empty_like(xs)
        _loop(generic)(xs, got)
        _loop(exact)(xs, want)
        # the form of that width (to 1 ulp: LLVM may fuse a multiply-add differently
        # once the call is inlined into another loop)
        np.testing.assert_array_max_ulp(got, want, maxulp=1)
        # and as Python, by the scalar's type: the plain-Python copy of that form
        py = np.array([pure_python(exact)(v) for v in xs], dtype=dtype)
        np.testing.assert_array_equal(np.array([generic(v) for v in xs], dtype=dtype), py)


@pytest.mark.parametrize("name", ["tanh_any", "exp_any"])
def test_any_width_forms_compile_only_the_width_used(name):
    # an overload: a float32 loop types the float32 form only (a float64 kernel never
    # compiles the float32 forms, nor the reverse)
    generic, f64, f32 = ANY[name]
    f32_before = set(f32.signatures)
    f64_before = set(f64.signatures)

    @jit(cache=False)
    def loop(x, out):
        for i in range(x.shape[0]):
            out[i] = generic(x[i])
    loop(np.zeros(3, np.float32), np.zeros(3, np.float32))
    assert set(f64.signatures) == f64_before
    assert any(s[0] == np.float32 or str(s[0]) == "float32" for s in f32.signatures)
    assert f32_before <= set(f32.signatures)
