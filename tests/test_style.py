"""Project conventions that a reviewer would otherwise have to remember (STYLE.md sections 3-4)."""
import inspect
import pathlib
import re

from numba.core.registry import CPUDispatcher

from fastbp import kernels_blas, kernels_loop

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fastbp"


def test_fastmath_is_chosen_in_config_only():
    offenders = [str(p) for p in ROOT.glob("*.py")
                 if p.name != "jit.py" and re.search(r"fastmath\s*=", p.read_text())]
    assert offenders == []


def test_fastmath_flags_never_let_numba_delete_nan_checks():
    from fastbp.config import FASTMATH, FASTMATH_ORDERED
    assert not FASTMATH & {"nnan", "ninf", "fast"}
    assert not FASTMATH_ORDERED & {"nnan", "ninf", "fast", "reassoc", "afn"}


def test_every_loop_kernel_documents_formula_shapes_and_twin():
    for name, obj in vars(kernels_loop).items():
        if not isinstance(obj, CPUDispatcher) or obj.py_func.__module__ != kernels_loop.__name__:
            continue
        doc = inspect.getdoc(obj.py_func) or ""
        assert doc, f"{name} has no docstring"
        base = name.removesuffix("_serial").removesuffix("_parallel")
        if hasattr(kernels_blas, base):
            assert "twin" in doc.lower() or base in ("finish_row",), f"{name} names no BLAS twin"
