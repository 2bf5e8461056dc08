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

from numba.core.caching import IndexDataCacheFile

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


def lock_cache(dispatcher):
    """Make ``dispatcher``'s on-disk cache (if it has one) process-safe; returns it."""
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if type(cache_file) is IndexDataCacheFile:
        cache_file.__class__ = LockedIndexDataCacheFile
    return dispatcher
