"""fastbp's on-disk cache of compiled kernels: where it is, clearing it, and
calling cached engine code so that a broken cache never takes a process down.

Numba writes each compiled function to an index (``.nbi``) and data files
(``.nbc``) in one directory per package: ``fastbp/__pycache__`` next to the
sources, or a ``fastbp_<hash>`` folder under ``NUMBA_CACHE_DIR`` when that is
set (or under the user's cache directory when the package folder is read-only).

Two ways a cache can hurt, and what fastbp does about each:

* Numba issue #8578: cached serial code that calls parallel code can run before
  the threading layer is started and segfault.  ``jit.start_threads`` (called by
  ``backends.get_engine`` before any compiled engine function is handed out)
  makes that impossible whatever the cache holds.
* A damaged cache (a truncated or foreign file: a full disk, a copied
  ``__pycache__``, two Numba versions writing one folder) makes Numba's loader
  raise a bare unpickling error.  :func:`guarded` catches errors raised while
  Numba *loads* cached code (never errors of the computation), deletes the
  broken function's cache files, warns, and recompiles.

``fastbp cache info`` and ``fastbp cache clear`` expose :func:`cache_dirs` and
:func:`clear_cache` on the command line.

A first call that has to compile (nothing cached yet: a fresh install, a new
fastbp or Numba version, another dtype) pauses for seconds; :func:`announce_compiles`
makes that visible with one line on stderr per dtype and process
(``FASTBP_COMPILE_NOTICE=0`` silences it).
"""
import contextlib
import functools
import glob
import os
import sys
import traceback
import warnings

from numba.core import event, types
from numba.core.registry import CPUDispatcher

from . import activations, engine, kernels_loop, losses, vecmath

CACHE_SUFFIXES = (".nbi", ".nbc")
LOCK_SUFFIX = ".nbi.lock"  # cachefile's per-function lock files (empty)


class KernelCacheWarning(UserWarning):
    """An entry of fastbp's compiled-kernel cache was unreadable; it was deleted and is
    being recompiled."""


def cache_dirs():
    """The directories where Numba keeps fastbp's compiled kernels (usually one)."""
    dirs = []
    for module in (engine, kernels_loop, activations, losses, vecmath):
        for obj in vars(module).values():
            cache = getattr(obj, "_cache", None) if isinstance(obj, CPUDispatcher) else None
            path = getattr(cache, "cache_path", None)
            if path and path not in dirs:
                dirs.append(path)
    return dirs


def cache_files():
    """Every ``.nbi``/``.nbc`` file in :func:`cache_dirs` (sorted paths)."""
    files = []
    for d in cache_dirs():
        for suffix in CACHE_SUFFIXES:
            files.extend(glob.glob(os.path.join(glob.escape(d), "*" + suffix)))
    return sorted(files)


def clear_cache():
    """Delete fastbp's compiled-kernel cache files; returns (files, bytes) removed.

    The next call of each kernel compiles it again (seconds per dtype).  Only
    Numba's ``.nbi``/``.nbc`` files and :mod:`fastbp.cachefile`'s empty
    ``.nbi.lock`` files beside them are touched, never ``.pyc`` files; the lock
    files are removed but not counted.
    """
    n = size = 0
    for path in cache_files():
        try:
            st = os.stat(path)
            os.remove(path)
        except FileNotFoundError:
            continue
        n += 1
        size += st.st_size
    for d in cache_dirs():
        for path in glob.glob(os.path.join(glob.escape(d), "*" + LOCK_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return n, size


def _broken_cache_file(exc):
    """Numba's cache-file object whose loading raised ``exc``, or None if ``exc`` did
    not come out of Numba's cache loader (then it is an error of the computation)."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename.endswith(os.path.join("numba", "core", "caching.py")):
            owner = frame.f_locals.get("self")
            if hasattr(owner, "_index_path") and hasattr(owner, "_cache_path"):
                return owner
    return None


def _remove_function_files(cache_file):
    """Delete one compiled function's index and data files; returns how many."""
    stem = os.path.basename(cache_file._index_path)[:-len(".nbi")]
    paths = [cache_file._index_path]
    paths += glob.glob(os.path.join(glob.escape(cache_file._cache_path),
                                    glob.escape(stem) + ".*.nbc"))
    n = 0
    for path in paths:
        try:
            os.remove(path)
            n += 1
        except FileNotFoundError:
            pass
    return n


def guarded(dispatcher):
    """``dispatcher`` behind a check that turns a damaged cache into a recompile.

    When Numba fails to *load* a cached function (and only then), that
    function's files are deleted, a :class:`KernelCacheWarning` says so, and the
    call is retried, which compiles it again; a damaged callee met while
    recompiling is handled the same way, each file once.  Costs one Python call
    per engine call (an epoch, a predict of up to 1,024 rows...), never per batch.
    """
    @functools.wraps(getattr(dispatcher, "py_func", dispatcher))  # plain under NUMBA_DISABLE_JIT
    def call(*args):
        removed = set()
        while True:
            try:
                return dispatcher(*args)
            except Exception as exc:
                cache_file = _broken_cache_file(exc)
                if cache_file is None or cache_file._index_path in removed:
                    raise
                removed.add(cache_file._index_path)
                _remove_function_files(cache_file)
                warnings.warn(
                    f"fastbp's compiled-kernel cache could not be read ({type(exc).__name__}: "
                    f"{exc}) in {cache_file._index_path}: deleted that entry, recompiling it "
                    "(can take a minute)", KernelCacheWarning, stacklevel=2)

    call.dispatcher = dispatcher
    return call


NOTICE_ENV = "FASTBP_COMPILE_NOTICE"


class _CompileNotice(event.Listener):
    """Prints one line on stderr when Numba starts compiling a fastbp function for a
    dtype this process has not compiled for yet (a cache hit compiles nothing)."""

    def __init__(self, stream=None):
        self.stream = stream
        self.said = set()

    def on_start(self, ev):
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        if func is None or not func.__module__.startswith("fastbp."):
            return
        if os.environ.get(NOTICE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            return
        dtypes = sorted({str(t.dtype) for t in _flat(ev.data.get("args", ()))
                         if isinstance(t, types.Array) and isinstance(t.dtype, types.Float)})
        key = "/".join(dtypes) or "-"
        if key in self.said or (key == "-" and self.said):
            return  # no float array (an index helper): part of a compile already announced
        self.said.add(key)
        where = ", ".join(cache_dirs()) or "Numba's cache"
        what = f"for {key} " if dtypes else ""
        print(f"fastbp: compiling kernels {what}(first use of this fastbp version on this "
              f"machine: about 10-40 s, once; cached in {where})",
              file=self.stream or sys.stderr, flush=True)

    def on_end(self, ev):
        pass


def _flat(tys):
    for t in tys:
        if isinstance(t, types.BaseTuple):
            yield from _flat(t.types)
        else:
            yield t


_NOTICE = _CompileNotice()


@functools.lru_cache(maxsize=None)
def announce_compiles():
    """Install the compile notice (once per process; ``backends.get_engine`` does)."""
    event.register("numba:compile", _NOTICE)
