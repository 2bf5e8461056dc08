"""Backends: the one engine source bound to loop kernels (compiled or plain
Python) or to their BLAS twin.  ``get_engine(name)`` returns an object with
``train_epoch``, ``loss_grad`` and ``predict`` (see ``engine``), its parallel
threshold ``par_min``, and ``serial``: the same engine for calls whose every
kernel would take its serial twin (itself when the backend has no parallel
kernels)."""
import functools
import types

from . import engine, kernels_blas
from .config import PARALLEL_MIN_WORK
from .jit import pure_python, serial_copy, start_threads
from .kernel_cache import announce_compiles, guarded

BACKENDS = ("loops", "loops-serial", "blas", "python")

_NEVER = 1 << 62

# The compiled functions Python calls; get_engine is the only way to reach them,
# so that the threading layer is started first (a test keeps this list whole).
ENTRY_POINTS = ("train_epoch", "loss_grad", "predict", "rprop_epoch")

_BLAS_NAMES = {}
for _name in ("gather_rows", "dense_forward", "dense_backward_input",
              "dense_backward_params", "optimizer_step", "csr_forward",
              "csr_backward_params", "dense_forward_acc", "dense_backward_input_acc",
              "csr_forward_acc", "rprop_step"):
    _BLAS_NAMES[_name + "_serial"] = getattr(kernels_blas, _name)
    _BLAS_NAMES[_name + "_parallel"] = getattr(kernels_blas, _name)
for _name in ("finalize_params", "output_delta", "layer_sq_norms", "scale_vector",
              "copy_rows", "block_sq_norms"):
    _BLAS_NAMES[_name] = getattr(kernels_blas, _name)


@functools.lru_cache(maxsize=None)
def _serial_engine():
    """The compiled entry points with every kernel bound to its serial twin.

    They link no parallel region, so a process that only ever trains small
    networks never compiles a ``parallel=True`` kernel (``jit.serial_copy``).
    """
    memo = {}
    funcs = {n: guarded(serial_copy(getattr(engine, n), memo)) for n in ENTRY_POINTS}
    return types.SimpleNamespace(name="loops-serial", par_min=_NEVER, **funcs)


@functools.lru_cache(maxsize=None)
def get_engine(backend):
    """The engine functions for ``backend``, its parallel threshold and its serial engine."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend in ("loops", "loops-serial"):
        start_threads()  # before any cached compiled code runs: see start_threads
        announce_compiles()
        serial = _serial_engine()
        if backend == "loops-serial":
            serial.serial = serial
            return serial
        funcs = {n: guarded(getattr(engine, n)) for n in ENTRY_POINTS}
        return types.SimpleNamespace(name=backend, par_min=PARALLEL_MIN_WORK, serial=serial,
                                     **funcs)
    memo = {}
    ns = _BLAS_NAMES if backend == "blas" else None
    funcs = {n: pure_python(getattr(engine, n), ns, memo) for n in ENTRY_POINTS}
    eng = types.SimpleNamespace(name=backend, par_min=_NEVER, **funcs)
    eng.serial = eng
    return eng
