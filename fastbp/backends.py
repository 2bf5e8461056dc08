"""Backends: the one engine source bound to loop kernels (compiled or plain
Python) or to their BLAS twin.

``get_engine(name)`` returns an engine: ``train_epoch``, ``loss_grad`` and
``predict`` (see ``engine``), its parallel threshold ``par_min``, and
``variant(parallel, shortcuts, dropout=False, sparse=True)``: the same engine
specialised at compile time for calls that may (or never) reach the parallel
threshold, on networks with (or without) shortcut blocks, with dropout compiled
in or not, on input that may be CSR or is dense (``jit.specialised_copy``;
``engine.DROPOUT``, ``engine.SPARSE``).  A variant gives bitwise
the results of the full engine on the calls it is chosen for
(``network.Network.engine_for``) and compiles only the kernels they can reach:
a small chain network never compiles a ``parallel=True`` kernel nor a shortcut
kernel, a dense fit no CSR kernel.  Backends without compiled code are their own variants, but for dropout: the
plain-Python engines with ``DROPOUT`` on are separate copies.
"""
import functools
import types

from . import engine, kernels_blas
from .config import PARALLEL_MIN_WORK
from .jit import pure_python, specialised_copy, start_threads
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
              "csr_forward_acc", "rprop_step", "dropout_forward", "dropout_backward"):
    _BLAS_NAMES[_name + "_serial"] = getattr(kernels_blas, _name)
    _BLAS_NAMES[_name + "_parallel"] = getattr(kernels_blas, _name)
for _name in ("finalize_params", "output_delta", "layer_sq_norms", "scale_vector",
              "copy_rows", "block_sq_norms", "prefetch_rows"):
    _BLAS_NAMES[_name] = getattr(kernels_blas, _name)


class Engine(types.SimpleNamespace):
    """An engine's entry points, ``name``, ``par_min`` and its specialisations."""

    def variant(self, parallel, shortcuts, dropout=False, sparse=True):
        """The engine for calls that may reach the parallel threshold (``parallel``)
        on a network with shortcut blocks (``shortcuts``), with dropout compiled in
        (``dropout``: training with a rate > 0) or not, on input that may be CSR
        (``sparse``) or is dense (then only dense input may be passed)."""
        if self.name in ("loops", "loops-serial"):
            return _loops_variant(parallel and self.name == "loops", bool(shortcuts),
                                  bool(dropout), bool(sparse))
        if dropout:
            return _python_engine(self.name, True)
        return self


@functools.lru_cache(maxsize=None)
def _loops_variant(parallel, shortcuts, dropout=False, sparse=True):
    """The compiled entry points specialised for (``parallel``, ``shortcuts``,
    ``dropout``, ``sparse``)."""
    constants = {} if shortcuts else {"SHORTCUTS": False}
    if dropout:
        constants["DROPOUT"] = True
    if not sparse:
        constants["SPARSE"] = False  # prunes the CSR kernels: dense input only
    memo = {}
    funcs = {n: guarded(specialised_copy(getattr(engine, n), serial=not parallel,
                                         constants=constants, _memo=memo))
             for n in ENTRY_POINTS}
    name = "loops" if parallel else "loops-serial"
    return Engine(name=name, par_min=PARALLEL_MIN_WORK if parallel else _NEVER, **funcs)


@functools.lru_cache(maxsize=None)
def get_engine(backend):
    """The engine of ``backend`` (its full form: any network, any work size)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend in ("loops", "loops-serial"):
        start_threads()  # before any cached compiled code runs: see start_threads
        announce_compiles()
        return _loops_variant(backend == "loops", True, False, True)
    return _python_engine(backend, False)


@functools.lru_cache(maxsize=None)
def get_team_epoch():
    """The compiled team epoch (``team.train_epoch_team``) of the ``loops`` backend.

    ``team`` is imported here, at the first fit that takes team epochs: importing it
    defines its compiled functions (about 4 ms), which a cold start need not pay."""
    from . import team
    start_threads()  # as get_engine: before any cached compiled code runs
    announce_compiles()
    return guarded(team.train_epoch_team)


@functools.lru_cache(maxsize=None)
def _python_engine(backend, dropout):
    """The plain-Python engine of ``backend`` ("blas" or "python"), DROPOUT on or off."""
    memo = {}
    ns = dict(_BLAS_NAMES) if backend == "blas" else {}
    if dropout:
        ns["DROPOUT"] = True
    funcs = {n: pure_python(getattr(engine, n), ns, memo) for n in ENTRY_POINTS}
    return Engine(name=backend, par_min=_NEVER, **funcs)
