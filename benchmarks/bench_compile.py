"""Start-up benchmarks: a fresh interpreter imports fastbp and fits a tiny net.

``timeraw_`` benchmarks time code run in a new Python process (asv times the
code itself, not the interpreter start).  ``WarmCache``: numba's on-disk cache
already holds the compiled kernels (``setup`` runs the code once to fill it),
so this is the start-up every user sees after the first run.  ``ColdCompile``:
NUMBA_CACHE_DIR points at a fresh empty directory (removed at exit), so every
kernel the tiny fit needs is compiled: the very first run after installing.
"""
import subprocess
import sys

from .common import COLD_CACHE_SETUP, TINY_FIT_CODE, Benchmark


class WarmCache(Benchmark):
    """Import, and import plus first fit, with the numba cache filled."""

    timeout = 300.0
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0

    def setup(self):
        subprocess.run([sys.executable, "-c", TINY_FIT_CODE], check=True)

    def timeraw_import(self):
        return "import fastbp"

    def timeraw_import_and_first_fit(self):
        return TINY_FIT_CODE


class ColdCompile(Benchmark):
    """Import plus first fit with an empty numba cache (everything compiled)."""

    timeout = 900.0
    number = 1
    repeat = (1, 3, 300.0)
    warmup_time = 0.0

    def timeraw_import_and_first_fit(self):
        return TINY_FIT_CODE, COLD_CACHE_SETUP
