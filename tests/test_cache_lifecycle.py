"""The life of a model across processes, with Numba's on-disk cache fresh and warm.

One process trains and saves (and predicts nothing); then fresh processes load
the model (``fastbp.load``, pickle, joblib) and make each public method their
first compiled call: first one process per engine entry point, dtype and dense or
sparse input, which compiles it from cached callees, then one process per case,
which runs from the cache the first ones wrote.  That is the sequence that
segfaulted (Numba issue #8578:
a ``predict`` compiled in a process that loaded its callees from the cache was
cached without the note that the threading layer must be started first).  The
reading processes also run with another ``NUMBA_NUM_THREADS`` than the writer,
and under each threading layer this machine has.  Every process gets its own
``NUMBA_CACHE_DIR`` (one per test module), so CI, whose cache starts empty,
creates both the writing and the reading processes itself.
"""
import importlib.util
import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import lifecycle_child as child

pytestmark = pytest.mark.slow

CHILD = pathlib.Path(child.__file__)
TIMEOUT = 600

# (method, loader, dtype, sparse): every public method first at least once; loaders,
# dtypes and dense/sparse input rotate so that each meets each method family.
CASES = [
    ("predict", "fbp", "float64", False),
    ("predict", "pickle", "float32", True),
    ("predict", "joblib", "float64", True),
    ("predict", "joblib", "float32", False),
    ("predict_proba", "pickle", "float64", False),
    ("predict_proba", "fbp", "float32", True),
    ("predict_log_proba", "joblib", "float32", False),
    ("predict_log_proba", "fbp", "float64", True),
    ("score", "fbp", "float32", False),
    ("score", "pickle", "float64", True),
    ("regressor-predict", "pickle", "float64", False),
    ("regressor-predict", "joblib", "float32", True),
    ("partial_fit", "fbp", "float64", True),
    ("partial_fit", "joblib", "float32", False),
    ("fit-sgd", "-", "float32", True),
    ("fit-adam", "-", "float64", False),
    ("fit-lbfgs", "-", "float64", True),
    ("fit-lbfgs", "-", "float32", False),
    ("loss_and_gradient", "fbp", "float64", False),
    ("loss_and_gradient", "pickle", "float32", True),
    ("check_gradients", "joblib", "float64", True),
]


def _env(root, threads, **extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(root / "numba-cache"),
               NUMBA_NUM_THREADS=str(threads), **extra)
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("FASTBP_DEBUG", None)
    return env


def _run(args, env, cwd, stderr=False):
    """The process's stdout (and stderr when asked), after checking it exited cleanly."""
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited with {proc.returncode}"
        f"{' (segmentation fault)' if proc.returncode == -11 else ''}\n{proc.stderr[-3000:]}")
    return (proc.stdout, proc.stderr) if stderr else proc.stdout


# The engine entry point each method's first compiled call reaches: cases that share
# (entry point, dtype, sparse) share one compiled (and cached) function.
ENTRY_OF = {"predict": "predict", "predict_proba": "predict", "predict_log_proba": "predict",
            "score": "predict", "regressor-predict": "predict", "partial_fit": "train_epoch",
            "fit-sgd": "train_epoch", "fit-adam": "train_epoch", "fit-lbfgs": "loss_grad",
            "loss_and_gradient": "loss_grad", "check_gradients": "loss_grad"}
NOTICE = "fastbp: compiling kernels"


def _call(root, case, threads, compiled=False, **extra):
    """The case's result (and, when ``compiled``, whether its process compiled anything)."""
    method, loader, dtype, sparse = case
    out, err = _run([sys.executable, str(CHILD), "call", str(root), method, loader, dtype,
                     "sparse" if sparse else "dense"], _env(root, threads, **extra), root,
                    stderr=True)
    result = json.loads(out.strip().splitlines()[-1])
    return (result, NOTICE in err) if compiled else result


def _first_of_each_entry():
    """One case per (entry point, dtype, sparse), ordered so that neighbours (the
    processes that run side by side) reach different entry points."""
    firsts = {}
    for case in CASES:
        firsts.setdefault((ENTRY_OF[case[0]],) + case[2:], case)
    groups = [[c for k, c in firsts.items() if k[0] == e] for e in sorted(set(ENTRY_OF.values()))]
    return [c for row in itertools.zip_longest(*groups) for c in row if c]


def _seed(root):
    """Give ``root``'s private cache the suite's compiled *kernels*, but none of the engine
    functions Python calls, so that the processes below compile every entry point
    themselves from cached callees: the way the poisoned cache entries arise."""
    from fastbp.backends import ENTRY_POINTS
    from fastbp.kernel_cache import cache_files
    entries = tuple(f"engine.{name}__" for name in ENTRY_POINTS)
    target = _run([sys.executable, "-m", "fastbp", "cache", "info"], _env(root, 2), root)
    target = pathlib.Path(target.splitlines()[0].split(": ", 1)[1])
    target.mkdir(parents=True, exist_ok=True)
    for path in map(pathlib.Path, cache_files()):
        if not path.name.startswith(entries):
            shutil.copy2(path, target / path.name)


@pytest.fixture(scope="module")
def life(tmp_path_factory):
    """A folder with saved models whose writer trained (2 threads) and predicted nothing,
    then one reader that compiled ``predict`` from cached callees: the state that
    crashed the next process."""
    root = tmp_path_factory.mktemp("life")
    _seed(root)
    _run([sys.executable, str(CHILD), "write", str(root)], _env(root, 2), root)
    _call(root, CASES[0], threads=1)
    return root


@pytest.fixture(scope="module")
def two_rounds(life):
    """{case: (result, error)} of two rounds of fresh processes, each case's first
    compiled call.  Round 1 (1 thread; the writer used 2) runs one case per entry point,
    dtype and dense/sparse input: each compiles its entry point from cached callees (or
    loads the writer's), as the poisoned entries arose.  Cases that share that entry
    point would only load it from the cache, which round 2 does for every case: 2 threads,
    reading what round 1 wrote, and compiling nothing (checked).  Two processes at a time
    (the machine's two cores); a round starts when the last one ended."""
    def attempt(case, threads):
        try:
            return _call(life, case, threads, compiled=True), None
        except AssertionError as exc:  # a crash or an error: reported by the case's test
            return (None, False), str(exc)

    rounds = []
    for threads, cases in ((1, _first_of_each_entry()), (2, CASES)):
        with ThreadPoolExecutor(max_workers=2) as pool:
            rounds.append(dict(zip(cases, pool.map(lambda c: attempt(c, threads), cases))))
    return rounds


def test_issue_sequence_from_an_empty_cache(tmp_path):
    # The report's own sequence, with nothing cached: train and save; predict, which
    # compiles predict from the cached callees; predict again, from the cache.  The cold
    # compile also shows what a first fit compiles (below).
    # Each process that compiles says so, once, on stderr (issue 15); a warm one does not.
    root = tmp_path
    _, err = _run([sys.executable, "-c", "import numpy as np, fastbp; "
                   "X = np.random.default_rng(0).random((50, 4)); y = np.arange(50) % 2; "
                   "fastbp.MLPClassifier(hidden_layer_sizes=(3,), max_iter=2).fit(X, y)"
                   ".save('t.fbp')"], _env(root, 2), root, stderr=True)
    notice = "fastbp: compiling kernels for float64 (first use"
    assert err.count(notice) == 1, err
    assert "numba-cache" in err
    X = np.random.default_rng(1).random((6, 4))
    np.save(root / "X.npy", X)
    import fastbp
    expected = fastbp.load(root / "t.fbp").predict(X).tolist()
    for k, threads in enumerate((1, 2, 2)):
        out, err = _run([sys.executable, "-c", "import numpy as np, fastbp; "
                         "print(fastbp.load('t.fbp').predict(np.load('X.npy')).tolist())"],
                        _env(root, threads), root, stderr=True)
        assert json.loads(out) == expected
        assert (notice in err) == (k == 0), err  # predict compiled once, then cached
    # What those processes compiled (issue 15: only what the calls can reach): a small
    # chain's fit and predict on dense input, no parallel=True twin, no shortcut kernel
    # and no CSR kernel.
    compiled = sorted({p.name.split("-")[0] for p in (root / "numba-cache").rglob("*.nbi")})
    assert any(n.startswith("engine.train_epoch") for n in compiled), compiled
    assert any(n.startswith("engine.predict") for n in compiled), compiled
    assert not [n for n in compiled if "_parallel" in n], compiled
    # (the shortcut kernels by their names: rows_dot_acc, dense_forward's own tile, is not one)
    shortcut_code = ("_forward_acc", "_input_acc", "block_sq_norms", "_skip_backward",
                     "_skip_weights", "_outputs")
    assert not [n for n in compiled if any(s in n for s in shortcut_code)], compiled
    assert not [n for n in compiled if "dropout" in n], compiled  # dropout=0: none of it
    assert not [n for n in compiled if "csr_" in n], compiled  # dense input: no CSR kernel


def test_compile_notice_once_per_dtype_fastbp_only_and_silenced_by_env(monkeypatch):
    import io
    import types as pytypes

    from numba import njit
    from numba.core import types

    from fastbp import engine
    from fastbp.kernel_cache import _CompileNotice

    def event(dispatcher, *args):
        return pytypes.SimpleNamespace(data=dict(dispatcher=dispatcher, args=args))

    f64 = types.Array(types.float64, 2, "C")
    f32 = types.Array(types.float32, 1, "C")
    out = io.StringIO()
    notice = _CompileNotice(out)
    monkeypatch.delenv("FASTBP_COMPILE_NOTICE", raising=False)
    notice.on_start(event(njit(lambda x: x), f64))  # not fastbp's: silent
    assert out.getvalue() == ""
    notice.on_start(event(engine.predict, f64, types.UniTuple(f32, 2)))
    notice.on_start(event(engine.train_epoch, types.Tuple((f64, f64))))  # same dtypes: once
    said = out.getvalue()
    # an index helper (no float array) compiled within an announced compile: no second line
    notice.on_start(event(engine._skip_table, types.Array(types.int64, 1, "C")))
    assert out.getvalue() == said
    assert out.getvalue().count("fastbp: compiling kernels for float32/float64") == 1
    notice.on_start(event(engine.train_epoch, f32))
    assert out.getvalue().count("fastbp: compiling kernels for float32 (") == 1
    monkeypatch.setenv("FASTBP_COMPILE_NOTICE", "0")
    quiet = _CompileNotice(out := io.StringIO())
    quiet.on_start(event(engine.train_epoch, f64))
    assert out.getvalue() == "" and not quiet.said


def _same(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=float),
                               np.asarray(expected, dtype=float), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_first_compiled_call_of_a_fresh_process_fresh_then_warm_cache(life, two_rounds, case):
    expected = child.perform(str(life), *case)
    for k, results in enumerate(two_rounds, 1):
        if case not in results:  # round 1 ran another case with the same entry point
            continue
        (got, compiled), error = results[case]
        assert error is None, f"round {k}: {error}"
        _same(got, expected)
        assert not (k == 2 and compiled), "round 2 compiled: round 1 missed an entry point"


def test_round_one_reaches_every_entry_point_dtype_and_input_once():
    firsts = _first_of_each_entry()
    keys = [(ENTRY_OF[c[0]],) + c[2:] for c in firsts]
    assert len(set(keys)) == len(keys) == len({(ENTRY_OF[c[0]],) + c[2:] for c in CASES})
    from fastbp.backends import ENTRY_POINTS
    assert set(ENTRY_OF.values()) | {"rprop_epoch"} == set(ENTRY_POINTS)  # no rprop case yet
    assert all(a[0] != b[0] for a, b in zip(keys, keys[1:]))


def _layers():
    """Threading layers Numba can load here (tbb only if its library is installed)."""
    found = []
    for layer, module in (("omp", "numba.np.ufunc.omppool"), ("tbb", "numba.np.ufunc.tbbpool"),
                          ("workqueue", "numba.np.ufunc.workqueue")):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(layer)
    return found


@pytest.mark.parametrize("layer", ["omp", "tbb", "workqueue"])
def test_cached_predict_under_each_threading_layer(life, layer):
    if layer not in _layers():
        pytest.skip(f"Numba's {layer} threading layer is not available here")
    case = ("predict", "fbp", "float64", True)
    _same(_call(life, case, threads=2, NUMBA_THREADING_LAYER=layer),
          child.perform(str(life), *case))


def test_dask_client_first_call_is_incremental_predict(life):
    pytest.importorskip("dask_ml")
    pytest.importorskip("distributed")
    X, _, _ = child.data("float64", sparse=False, n=120, seed=3)
    # the client's predict is the cached one that crashed: compiled by the fixture's reader
    out = _run([sys.executable, str(CHILD), "dask", str(life)], _env(life, 1), life)
    pred = json.loads(out.strip().splitlines()[-1])
    import fastbp
    assert pred == fastbp.load(life / "dask_trained.fbp").predict(X).tolist()


def _cli(life, *args, stderr=False):
    return _run([sys.executable, "-m", "fastbp", *args], _env(life, 1), life, stderr=stderr)


def test_cli_predict_and_info_as_first_calls(life):
    pytest.importorskip("pandas")
    X = np.loadtxt(life / "new.csv", delimiter=",", skiprows=1)
    expected = child.load(str(life), "clf", "float64", "fbp").predict(X)
    for _ in range(2):  # the second process loads what the first may have compiled
        out = _cli(life, "predict", "clf_float64.fbp", "new.csv")
        labels = [int(v) for v in out.split()[1:]]
        assert labels == expected.tolist()
    # info compiles nothing (checked): a second process would find the same cache and
    # repeat the first
    info, err = _cli(life, "info", "clf_float32.fbp", stderr=True)
    assert "MLPClassifier" in info and "float32" in info
    assert NOTICE not in err, err


@pytest.mark.parametrize("damage", ["data", "index"])
def test_damaged_cache_is_recompiled_with_a_warning_never_a_crash(life, tmp_path, damage):
    # a copy of the warm cache whose cached predict is cut short (its code or its index)
    shutil.copytree(life, tmp_path / "damaged")
    root = tmp_path / "damaged"
    pattern = "engine.predict__*" + (".nbc" if damage == "data" else ".nbi")
    files = list((root / "numba-cache").rglob(pattern))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:64])
    case = ("predict_proba", "fbp", "float64", False)
    args = [sys.executable, str(CHILD), "call", str(root), *case[:3], "dense"]
    env = _env(root, 2, PYTHONWARNINGS="default")
    proc = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("KernelCacheWarning") == 1, proc.stderr
    assert "engine.predict__" in proc.stderr and "recompiling" in proc.stderr
    _same(json.loads(proc.stdout.strip().splitlines()[-1]), child.perform(str(life), *case))
    # the broken entry was replaced by a good one: the next process loads it quietly
    proc = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0 and "KernelCacheWarning" not in proc.stderr, proc.stderr


def test_cache_command_reports_and_clears_the_cache(life, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(life, root)
    env = _env(root, 1)
    info = _run([sys.executable, "-m", "fastbp", "cache", "info"], env, root)
    assert str(root / "numba-cache") in info
    n_functions = int(info.split("\n")[1].split()[0])
    assert n_functions > 0
    assert list((root / "numba-cache").rglob("*.nbi.lock"))  # saves and loads left them
    out = _run([sys.executable, "-m", "fastbp", "cache", "clear"], env, root)
    assert out.startswith("removed ")
    assert not list((root / "numba-cache").rglob("*.nb[ic]"))
    assert not list((root / "numba-cache").rglob("*.nbi.lock")), "lock files left behind"
    info = _run([sys.executable, "-m", "fastbp", "cache", "info"], env, root)
    assert "  0 compiled function(s)" in info


def test_every_compiled_entry_point_is_reached_through_get_engine():
    # get_engine starts the threading layer before handing out compiled code: an engine
    # function Python calls that is not in ENTRY_POINTS would bypass that.
    from numba.core.registry import CPUDispatcher

    from fastbp import engine
    from fastbp.backends import ENTRY_POINTS, get_engine
    public = {name for name, obj in vars(engine).items()
              if isinstance(obj, CPUDispatcher) and not name.startswith("_")
              and obj.py_func.__module__ == engine.__name__}
    assert public == set(ENTRY_POINTS)
    loops = get_engine("loops")
    for name in ENTRY_POINTS:
        assert getattr(loops, name).dispatcher is getattr(engine, name)
