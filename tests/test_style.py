"""Project conventions that a reviewer would otherwise have to remember (README's Contributing section and the kernel docstrings)."""
import inspect
import pathlib
import re

import pytest
from numba.core.registry import CPUDispatcher

from fastbp import kernels_blas, kernels_loop

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fastbp"


def test_fastmath_is_chosen_in_config_only():
    offenders = [str(p) for p in ROOT.glob("*.py")
                 if p.name != "jit.py" and re.search(r"fastmath\s*=", p.read_text())]
    assert offenders == []


def test_fastmath_flags_never_let_numba_delete_nan_checks():
    from fastbp.config import FASTMATH, FASTMATH_EXACT, FASTMATH_ORDERED
    assert not FASTMATH & {"nnan", "ninf", "fast"}
    assert not FASTMATH_ORDERED & {"nnan", "ninf", "fast", "reassoc", "afn"}
    assert not FASTMATH_EXACT & {"nnan", "ninf", "fast", "reassoc", "afn", "contract"}


# ---- every loop kernel documents itself ----------------------------
def _loop_kernels():
    """{name: plain function} of every compiled function defined in kernels_loop."""
    return {name: obj.py_func for name, obj in sorted(vars(kernels_loop).items())
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == kernels_loop.__name__}


def _base(name):
    return name.removesuffix("_serial").removesuffix("_parallel")


# A formula: an assignment (=, +=, <-) on a line with a subscripted symbol (z_nj, w[j, i]),
# or a sum written out (sum_i, Σ).
_SUBSCRIPTED = r"(?:\b[A-Za-z]+_(?:[A-Za-z]{1,3}\b|\{)|\w\[[^\]\n]+\])"
_ASSIGN = r"(?:(?<![=<>!])=(?!=)|<-)"
FORMULA = re.compile(rf"{_SUBSCRIPTED}[^\n]*{_ASSIGN}|{_ASSIGN}[^\n]*{_SUBSCRIPTED}|\bsum_\w|Σ")
# A shape: a tuple of sizes, "(n_out, n_in)", "(n_params,)", "(>= n_out,)", "(n_total + 1,)".
_SIZE = r"\s*(?:>=\s*)?[A-Za-z_]\w*(?:\s*[+-]\s*\d+)?\s*"
SHAPE = re.compile(rf"\((?:{_SIZE},)+(?:{_SIZE})?\)")
# ... or a pointer to the kernel whose shapes these are.
SHAPES_OF = re.compile(r"\b(?:Shapes as in|As) ``(\w+)``")
TWIN = re.compile(r"BLAS twin:\s*(?:``kernels_blas\.(\w+)``|(same name))")

# Compiled into other kernels' row loops, never called by the engine: no twin.
NO_TWIN = {"finish_row", "column_sums", "add_row_dots", "add_block_dots", "dot_units", "outer_tile",
           "outer_row", "forward_rows", "backward_input_block", "_backward_input_blocks",
           "_forward_acc_block", "params_block", "forward_outer", "params_rows",
           "_rows_within_range", "packed_tile", "_store_tile_row", "packed_form", "_pack_all",
           "new_panels", "params_block_packed", "finish_rows", "backward_input_packed",
           "forward_packed", "pack_blocks", "block_range", "new_tiles"}
# Kernels whose docstrings state no argument shapes yet (strict xfail: a fixed
# docstring fails here until its name is removed).  Empty: keep it so.
NO_SHAPES_YET = set()


@pytest.mark.parametrize("name", list(_loop_kernels()))
def test_every_loop_kernel_states_its_formula(name):
    doc = inspect.getdoc(_loop_kernels()[name]) or ""
    assert doc, f"{name} has no docstring"
    assert FORMULA.search(doc), f"{name}: no formula (an = with subscripts, or a sum)"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="docstring states no shapes"))
    if _base(n) in NO_SHAPES_YET else n for n in _loop_kernels()])
def test_every_loop_kernel_states_its_argument_shapes(name):
    doc = inspect.getdoc(_loop_kernels()[name]) or ""
    ref = SHAPES_OF.search(doc)
    if ref and not SHAPE.search(doc):
        other = getattr(kernels_loop, ref.group(1), None)
        assert other is not None, f"{name} refers to the shapes of unknown {ref.group(1)}"
        doc = inspect.getdoc(getattr(other, "py_func", other)) or ""
    assert SHAPE.search(doc), f"{name}: no argument shapes such as (n_out, n_in)"


@pytest.mark.parametrize("name", list(_loop_kernels()))
def test_every_loop_kernel_names_its_blas_twin(name):
    doc = inspect.getdoc(_loop_kernels()[name]) or ""
    base = _base(name)
    twin = TWIN.search(doc)
    if base in NO_TWIN:
        assert twin is None and not hasattr(kernels_blas, base), f"{name} has a twin after all"
        return
    assert twin, f"{name} names no BLAS twin ('BLAS twin: ``kernels_blas.{base}``')"
    named = twin.group(1) or base
    assert named == base, f"{name} names kernels_blas.{named} as its twin, not {base}"
    assert callable(getattr(kernels_blas, named, None)), f"kernels_blas.{named} does not exist"


def test_the_docstring_checks_reject_prose():
    """The checks above are not satisfied by words alone."""
    prose = ("One layer's forward pass, in blocks of four samples (same order, same "
             "``accumulate`` meaning).  See its twin.")
    assert not FORMULA.search(prose)
    assert not SHAPE.search(prose)
    assert not TWIN.search(prose)
    assert FORMULA.search("``z_nj = sum_i w_ji a_ni + b_j``") and SHAPE.search("w: (n_out, n_in)")
