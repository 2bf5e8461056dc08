"""Shared fixtures.

Randomness comes only from the ``rng`` fixture: a fresh ``numpy.random.Generator``
per test, seeded from the test's node id, so every test (and every parametrized
case) sees its own reproducible stream and no state leaks between tests.  Nothing
random happens at import and nothing is seeded globally.
"""
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

# Every process of the suite runs this checkout's fastbp: the test process (first on
# sys.path, whether pytest was started as `pytest` or `python -m pytest`) and the
# processes tests start (CLI, examples, cache lifecycle: PYTHONPATH).  Otherwise an
# installed copy served the subprocesses: stale code for a developer who edited without
# reinstalling, and in CI a second source path, hence a second kernel cache compiled
# from scratch (and lifecycle tests whose seeded cache did not match their processes).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture
def rng(request):
    """A Generator seeded from the test node id (stable across runs and processes)."""
    seed = zlib.crc32(request.node.nodeid.encode("utf-8"))
    return np.random.default_rng(seed)


@pytest.fixture
def blobs(rng):
    """90 samples, 4 features, 3 unbalanced classes (about 50% / 40% / 10%)."""
    X = rng.standard_normal((90, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8).astype(int)
    return X, y


def pytest_sessionstart(session):
    import fastbp
    assert Path(fastbp.__file__).resolve().parent == ROOT / "fastbp", (
        f"the suite imported fastbp from {fastbp.__file__}, not from this checkout {ROOT}")


# The ``form`` parameter values that name a compiled form of a kernel (its serial or
# parallel twin, its dispatcher); the plain-Python form is "python" / "loop-python".
COMPILED_FORMS = {"serial", "parallel", "compiled", "loop-compiled"}


def pytest_collection_modifyitems(config, items):
    """The cache-lifecycle tests run last: their private cache is seeded with the kernels
    the rest of the suite compiled, so their processes compile only the entry points
    (the part the tests are about) instead of every kernel again.

    Under ``NUMBA_DISABLE_JIT`` (CI's nojit pass) a kernel's compiled forms are the very
    Python function its "python" form runs, so their cases would repeat those line for
    line: the nojit tests run the python form only (the compiled forms ran in the main pass).
    """
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_cache_lifecycle.py"))
    from numba.core import config as numba_config
    if not numba_config.DISABLE_JIT:
        return
    repeated = [item for item in items if item.get_closest_marker("nojit")
                and getattr(item, "callspec", None) is not None
                and item.callspec.params.get("form") in COMPILED_FORMS]
    if repeated:
        config.hook.pytest_deselected(items=repeated)
        drop = set(map(id, repeated))
        items[:] = [item for item in items if id(item) not in drop]
