"""Numba's on-disk cache files, made safe for processes that compile at the same time.

Numba keeps each compiled function in an index (``<name>.nbi``: signature ->
data file name) and numbered data files (``<name>.<k>.nbc``).  Saving a new
signature reads the index, takes the first free number, writes the index, then
the data file, with no lock (Numba issues #4807 and #10128).  Two processes
that compile two signatures of one function at the same time (two dtypes; a
serial and a parallel engine variant share no file, but a kernel's float32 and
float64 forms do) can both read the same index, both take number 1, and one
process's index can end up naming the other's data: a later process then loads
machine code compiled for other argument types.  That happens to fastbp users
whose first fit runs in several processes at once (``GridSearchCV(n_jobs=2)``,
dask workers, ``pytest -n``) with an empty cache.

:func:`lock_cache` gives a dispatcher's cache file an advisory ``flock`` on a
lock file beside its index: exclusive from reading the index to writing the
data, shared while loading, so an index never names a data file another
process is about to reuse, and a loader never reads a half-updated pair.
Where ``fcntl`` is missing (Windows) or the lock file cannot be opened (a
read-only cache), Numba's own behaviour is kept.
"""
import contextlib
import os

from numba.core.caching import FunctionCache, IndexDataCacheFile
from numba.core.runtime import rtsys

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LockedIndexDataCacheFile", "lock_cache"]


@contextlib.contextmanager
def _flock(index_path, mode):
    """Hold ``flock(mode)`` on ``<index_path>.lock`` (nothing where it cannot)."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, mode)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


class LockedIndexDataCacheFile(IndexDataCacheFile):
    """Numba's index and data files with the read-modify-write of a save, and the
    index-then-data read of a load, each done under a lock of the function's own."""

    def save(self, key, data):
        with _flock(self._index_path, fcntl.LOCK_EX if fcntl else 0):
            super().save(key, data)

    def load(self, key):
        with _flock(self._index_path, fcntl.LOCK_SH if fcntl else 0):
            return super().load(key)


class QuickLoadFunctionCache(FunctionCache):
    """Numba's function cache, without the refresh of every typing and lowering
    registry before a load.

    Numba refreshes the target context before it loads a cached function: it imports
    and installs the implementations of all of Numba's built-ins, NumPy support,
    typed containers... (about 0.5 s, the largest part of a warm-cache process's
    first call into fastbp).  Loading machine code needs none of them, only the
    runtime (NRT) the code calls into; compiling does need them, and Numba's
    compiler refreshes the context itself before it types anything
    (``compiler.compile_extra``), so a cache miss still compiles as before.
    """

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)  # NRT: what loaded code needs of the refresh
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def lock_cache(dispatcher):
    """Make ``dispatcher``'s on-disk cache (if it has one) process-safe, and quick to
    load from (:class:`QuickLoadFunctionCache`); returns it."""
    cache = getattr(dispatcher, "_cache", None)
    if type(cache) is FunctionCache:
        cache.__class__ = QuickLoadFunctionCache
    cache_file = getattr(cache, "_cache_file", None)
    if type(cache_file) is IndexDataCacheFile:
        cache_file.__class__ = LockedIndexDataCacheFile
    return dispatcher
