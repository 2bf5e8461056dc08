"""Backends: the one engine source bound to loop kernels (compiled or plain
Python) or to their BLAS twin.  ``get_engine(name)`` returns an object with
``train_epoch``, ``loss_grad`` and ``predict`` (see ``engine``)."""
import functools
import types

from . import engine, kernels_blas
from .config import PARALLEL_MIN_WORK
from .jit import pure_python, start_threads
from .kernel_cache import guarded

BACKENDS = ("loops", "loops-serial", "blas", "python")

_NEVER = 1 << 62

# The compiled functions Python calls; get_engine is the only way to reach them,
# so that the threading layer is started first (a test keeps this list whole).
ENTRY_POINTS = ("train_epoch", "loss_grad", "predict", "rprop_epoch")

_BLAS_NAMES = {}
for _name in ("gather_rows", "dense_forward", "dense_backward_input",
              "dense_backward_params", "optimizer_step", "csr_forward",
              "csr_backward_params", "rprop_step"):
    _BLAS_NAMES[_name + "_serial"] = getattr(kernels_blas, _name)
    _BLAS_NAMES[_name + "_parallel"] = getattr(kernels_blas, _name)
for _name in ("finalize_params", "output_delta", "layer_sq_norms", "scale_vector",
              "copy_rows"):
    _BLAS_NAMES[_name] = getattr(kernels_blas, _name)


@functools.lru_cache(maxsize=None)
def get_engine(backend):
    """The engine functions for ``backend`` and its parallel threshold."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend in ("loops", "loops-serial"):
        start_threads()  # before any cached compiled code runs: see start_threads
        funcs = {n: guarded(getattr(engine, n)) for n in ENTRY_POINTS}
    else:
        memo = {}
        ns = _BLAS_NAMES if backend == "blas" else None
        funcs = {n: pure_python(getattr(engine, n), ns, memo) for n in ENTRY_POINTS}
    par_min = PARALLEL_MIN_WORK if backend == "loops" else _NEVER
    return types.SimpleNamespace(name=backend, par_min=par_min, **funcs)
