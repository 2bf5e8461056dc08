"""fastbp.cachefile: processes that compile one function at once keep the cache sound."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastbp import kernels_loop
from fastbp.cachefile import LockedIndexDataCacheFile

pytestmark = pytest.mark.slow

# A process that compiles (or loads) copy_rows for one dtype and prints what it copied and
# whether it compiled.  With SLOW_INDEX, Numba's index write waits first: two such processes
# started together then both read the index before either writes it, the race of Numba
# issue #4807, made certain instead of rare.
CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from numba.core import caching
    if os.environ.get("SLOW_INDEX"):
        save_index = caching.IndexDataCacheFile._save_index
        def slow(self, overloads):
            time.sleep(float(os.environ["SLOW_INDEX"]))
            save_index(self, overloads)
        caching.IndexDataCacheFile._save_index = slow
    from fastbp.kernels_loop import copy_rows
    dtype = np.dtype(sys.argv[1])
    src = (np.arange(12, dtype=np.float64).reshape(3, 4) / 7).astype(dtype)
    out = np.zeros((5, 4), dtype=dtype)
    copy_rows(src, out, 1)
    loaded = copy_rows.stats.cache_hits
    print(json.dumps({"out": out.tolist(), "src": src.tolist(),
                      "from_cache": sum(loaded.values()) > 0}))
""")


def _child(cache, dtype, slow=None):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("NUMBA_DISABLE_JIT", None)
    if slow:
        env["SLOW_INDEX"] = str(slow)
    return subprocess.Popen([sys.executable, "-c", CHILD, dtype], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_fastbp_functions_use_the_locked_cache_file():
    assert type(kernels_loop.copy_rows._cache._cache_file) is LockedIndexDataCacheFile


def test_two_processes_compiling_two_signatures_at_once_both_land_in_the_cache(tmp_path):
    # Both processes read the (empty) index before either has written it, unless the lock
    # makes the second wait for the first's index and data.  Without the lock both take
    # data file number 1: the index then names one signature, or names it with the
    # other's machine code.
    procs = [_child(tmp_path, dtype, slow=2.0) for dtype in ("float32", "float64")]
    for proc in procs:
        res = _result(proc)
        assert res["out"][1:4] == res["src"]
    # A fresh process finds both signatures, each with its own code.
    for dtype in ("float32", "float64"):
        res = _result(_child(tmp_path, dtype))
        assert res["from_cache"], f"{dtype} was compiled again: the index lost it"
        assert res["out"][1:4] == res["src"], f"{dtype} loaded another signature's code"
        assert res["out"][0] == [0.0] * 4 and res["out"][4] == [0.0] * 4
