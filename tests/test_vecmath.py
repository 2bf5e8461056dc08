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


@pytest.mark.parametrize("name", FUNCTIONS)
def test_compiled_functions_are_within_a_few_ulp_of_the_c_library(rng, name):
    _, reference, bound = FUNCTIONS[name]
    x = _inputs(rng, 100_000)
    out = np.empty_like(x)
    LOOPS[name](x, out)
    with np.errstate(over="ignore"):
        want = reference(x)
    _assert_ulp(out, want, bound)


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
