"""Threads: results that do not depend on the thread count, ``n_jobs``, and concurrency.

* A fit whose kernels take their parallel twins gives the same bits under 1 and
  2 threads: in this process (``n_jobs``), and in fresh processes that load the
  compiled engine from Numba's on-disk cache under ``NUMBA_NUM_THREADS`` 1 and 2.
* ``n_jobs`` sets Numba's thread count for the fit and restores it after, also
  when the fit fails.
* Two Python threads fitting and predicting at once (Numba's threading layer
  must be thread-safe), and spawned worker processes after a parallel region.
"""
import json
import os
import subprocess
import sys
import textwrap
import zlib

import numba
import numpy as np
import pytest

import fastbp
from fastbp.config import PARALLEL_MIN_WORK
from helpers import run_python

# A problem large enough for the parallel twins (see the first test): two 1024-wide
# layers, batches of 128, Adam (the optimizer step over > PARALLEL_MIN_WORK parameters).
_BIG_FIT = textwrap.dedent("""
    import warnings
    import numpy as np
    import fastbp

    BIG_SIZES = (64, 1024, 1024, 10)
    BIG_BATCH = 128
    BIG_N = 3 * BIG_BATCH

    def big_fit(seed, n_jobs=None):
        '''Two epochs; returns (the flat parameters, the loss curve, the model).'''
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((BIG_N, BIG_SIZES[0]))
        y = rng.integers(0, BIG_SIZES[-1], BIG_N)
        model = fastbp.MLPClassifier(BIG_SIZES[1:-1], activation=["relu", "tanh"],
                                     solver="adam", learning_rate_init=1e-3, alpha=1e-4,
                                     batch_size=BIG_BATCH, max_iter=2, tol=0.0,
                                     random_state=seed, n_jobs=n_jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        theta = np.concatenate([a.ravel() for a in model.coefs_ + model.intercepts_])
        return theta, list(model.loss_curve_), model
""")

_SUBPROCESS_MAIN = _BIG_FIT + textwrap.dedent("""
    import json, sys
    import numba
    seed, path = int(sys.argv[1]), sys.argv[2]
    theta, losses, _ = big_fit(seed)
    np.save(path, theta)
    print(json.dumps({"threads": numba.get_num_threads(), "losses": losses}))
""")

_namespace = {}
exec(compile(_BIG_FIT, "<big_fit>", "exec"), _namespace)
big_fit = _namespace["big_fit"]
BIG_SIZES, BIG_BATCH = _namespace["BIG_SIZES"], _namespace["BIG_BATCH"]


@pytest.fixture(scope="module")
def big_runs(request):
    """In this process: n_jobs 1, 2 and 2 again with one seed, and n_jobs 2 with another.

    Also writes the compiled engine to Numba's cache for the subprocess test.
    """
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs a Numba thread pool of at least 2 threads")
    seed = zlib.crc32(request.node.nodeid.encode())
    runs = {n_jobs: big_fit(seed, n_jobs) for n_jobs in (1, 2)}
    return seed, runs, big_fit(seed, 2), big_fit(seed + 1, 2)


def test_big_fit_uses_the_parallel_twins():
    """The tests below are only meaningful if the kernels and the step run in parallel."""
    s = BIG_SIZES
    for n_in, n_out in zip(s, s[1:]):      # the work of each layer's kernels per batch
        assert BIG_BATCH * n_in * n_out >= PARALLEL_MIN_WORK
    assert sum(a * b + b for a, b in zip(s, s[1:])) >= PARALLEL_MIN_WORK  # the Adam step


def test_bitwise_identical_for_1_and_2_threads_and_repeats(big_runs):
    seed, runs, repeat, other = big_runs
    (t1, l1, _), (t2, l2, _) = runs[1], runs[2]
    assert np.isfinite(t1).all()
    assert t1.tobytes() == t2.tobytes() == repeat[0].tobytes()
    assert l1 == l2 == repeat[1]
    assert l1[1] < l1[0]
    # a different seed gives a different run (the comparison above is not vacuous)
    assert other[0].tobytes() != t1.tobytes()


@pytest.mark.slow
def test_bitwise_identical_from_the_cache_under_1_and_2_threads(big_runs, tmp_path):
    """Fresh processes load the engine from the cache and get this process's bits."""
    seed, runs, _, _ = big_runs
    procs = {}
    for threads in (1, 2):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        path = tmp_path / f"theta_{threads}.npy"
        procs[threads] = (path, subprocess.Popen(
            [sys.executable, "-c", _SUBPROCESS_MAIN, str(seed), str(path)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for threads, (path, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        info = json.loads(out.strip().splitlines()[-1])
        assert info["threads"] == threads
        assert np.load(path).tobytes() == runs[1][0].tobytes(), f"{threads} threads"
        assert info["losses"] == runs[1][1]


# ---- n_jobs --------------------------------------------------------------------------

def test_n_jobs_sets_and_restores_numba_threads(blobs):
    X, y = blobs
    most = numba.config.NUMBA_NUM_THREADS
    previous = numba.get_num_threads()
    inside = []
    try:
        for before, n_jobs, expected in [(most, 1, 1), (1, -1, most), (1, most, most),
                                         (most, None, most), (1, None, 1)]:
            numba.set_num_threads(before)
            model = fastbp.MLPClassifier(
                (5,), max_iter=2, random_state=0, n_jobs=n_jobs,
                callbacks=lambda info: inside.append(numba.get_num_threads()))
            model.fit(X, y)
            assert inside[-2:] == [expected, expected], (before, n_jobs)
            assert numba.get_num_threads() == before
            model.predict(X)
            assert numba.get_num_threads() == before

        def boom(info):
            raise RuntimeError("callback failed")

        numba.set_num_threads(1)
        with pytest.raises(RuntimeError, match="callback failed"):
            fastbp.MLPClassifier((5,), max_iter=2, n_jobs=most, callbacks=boom).fit(X, y)
        assert numba.get_num_threads() == 1  # restored on error too
    finally:
        numba.set_num_threads(previous)


# ---- concurrency -----------------------------------------------------------------------

CONCURRENT = textwrap.dedent("""
    import threading, warnings, numba, numpy as np, fastbp
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X = rng.random((600, 64)); y = (X[:, 0] > 0.5).astype(int)
    def fit(seed):
        m = fastbp.MLPClassifier((256, 128), batch_size=128, max_iter=3, random_state=seed)
        return m.fit(X, y).predict_proba(X)
    expected = [fit(s) for s in (1, 2)]
    results = {}
    def run(s):
        for _ in range(3):
            results[s] = fit(s)
    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    [t.start() for t in threads]; [t.join() for t in threads]
    assert all(np.array_equal(results[s], e) for s, e in zip((1, 2), expected))
    print("OK", numba.threading_layer())
""")


@pytest.mark.slow
def test_two_threads_fit_and_predict_concurrently():
    out = run_python(CONCURRENT, timeout=600)
    assert out.returncode == 0, out.stderr
    ok, layer = out.stdout.split()
    assert ok == "OK" and layer in ("omp", "tbb")


SPAWN_AFTER_PARALLEL = textwrap.dedent("""
    import multiprocessing as mp, warnings, numpy as np, fastbp
    warnings.simplefilter("ignore")
    def work(seed):
        rng = np.random.default_rng(seed)
        X = rng.random((300, 64)); y = (X[:, 0] > 0.5).astype(int)
        m = fastbp.MLPClassifier((256,), batch_size=128, max_iter=2, random_state=0)
        return float(m.fit(X, y).score(X, y))
    if __name__ == "__main__":
        work(0)  # a parallel region in the parent first
        with mp.get_context("spawn").Pool(2) as pool:
            print("OK", len(pool.map(work, [1, 2])))
""")


@pytest.mark.slow
def test_spawned_workers_after_parallel_region(tmp_path):
    path = tmp_path / "spawn_after_parallel.py"
    path.write_text(SPAWN_AFTER_PARALLEL)
    out = run_python([str(path)], timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK 2"
