"""The benchmark suite (benchmarks/, asv) stays in step with the kernels and keeps running.

* every engine kernel of ``fastbp.kernels_loop`` has a BLAS twin of the same
  name (and arguments) in ``fastbp.kernels_blas`` and a benchmark class in
  ``benchmarks/bench_kernels.py`` (benchmarks/README.md: a unit test, not an
  import-time check);
* every benchmark method of every module runs once on the tiniest parameters
  (the first value of each parameter), the way asv would call it;
* ``benchmarks/compare.py --quick`` runs.
"""
import importlib
import inspect
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import fastbp.engine as engine_module
import fastbp.kernels_blas as kernels_blas
import fastbp.kernels_loop as kernels_loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
MODULES = sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.stem != "__init__")


def engine_kernels():
    """Base names of the loop kernels the engine runs.

    Every ``<name>_serial`` dispatcher defined in kernels_loop (with its
    ``<name>_parallel`` twin), and every other jitted function defined there that
    ``engine`` calls.  Helpers compiled into the kernels (``finish_row``) and
    imported ones (activations, losses) are not engine kernels.
    """
    names = {}
    for attr, obj in vars(kernels_loop).items():
        if not isinstance(obj, CPUDispatcher) or obj.py_func.__module__ != kernels_loop.__name__:
            continue
        if attr.endswith("_serial"):
            names[attr[:-len("_serial")]] = obj
        elif not attr.endswith("_parallel") and getattr(engine_module, attr, None) is obj:
            names[attr] = obj
    return names


def camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def test_engine_kernels_found():
    names = engine_kernels()
    for expected in ("dense_forward", "dense_backward_input", "dense_backward_params",
                     "optimizer_step", "csr_forward", "output_delta"):
        assert expected in names
    assert "finish_row" not in names


@pytest.mark.parametrize("name", sorted(engine_kernels()))
def test_kernel_has_blas_twin_and_benchmark(name):
    loop = engine_kernels()[name]
    if hasattr(kernels_loop, name + "_serial"):
        assert isinstance(getattr(kernels_loop, name + "_parallel", None), CPUDispatcher), \
            f"kernels_loop.{name}_serial has no {name}_parallel twin"
    blas = getattr(kernels_blas, name, None)
    assert callable(blas), f"kernels_loop.{name}: no BLAS twin kernels_blas.{name}"
    loop_args = list(inspect.signature(loop.py_func).parameters)
    blas_args = list(inspect.signature(blas).parameters)
    assert loop_args == blas_args, f"{name}: loop args {loop_args} != BLAS args {blas_args}"

    bench = importlib.import_module("benchmarks.bench_kernels")
    cls = getattr(bench, camel(name), None)
    assert cls is not None, f"kernel {name}: no class {camel(name)} in benchmarks/bench_kernels.py"
    assert cls.kernel == name


def test_every_kernel_benchmark_names_a_kernel():
    bench = importlib.import_module("benchmarks.bench_kernels")
    kernels = engine_kernels()
    for attr, cls in vars(bench).items():
        if inspect.isclass(cls) and not attr.startswith("_") and getattr(cls, "kernel", None):
            assert cls.kernel in kernels, f"{attr}.kernel = {cls.kernel!r} is not an engine kernel"
            assert attr == camel(cls.kernel)


def benchmark_cases():
    """(module, class, method) of every asv benchmark, as asv discovers them."""
    cases = []
    for modname in MODULES:
        mod = importlib.import_module(f"benchmarks.{modname}")
        for attr, cls in vars(mod).items():
            if attr.startswith("_") or not inspect.isclass(cls) or cls.__module__ != mod.__name__:
                continue
            for meth in sorted(dir(cls)):
                if meth.startswith(PREFIXES) and callable(getattr(cls, meth)):
                    # timeraw_ benchmarks run in a subprocess
                    slow = (pytest.mark.slow,) if meth.startswith("timeraw_") else ()
                    cases.append(pytest.param(modname, attr, meth, marks=slow,
                                              id=f"{modname}.{attr}.{meth}"))
        for attr, func in vars(mod).items():  # no stray module-level benchmarks
            assert not (inspect.isfunction(func) and attr.startswith(PREFIXES)), \
                f"benchmarks/{modname}.py: module-level {attr} would be an asv benchmark"
    return cases


def tiniest(cls):
    params = getattr(cls, "params", None)
    if not params:
        return ()
    if not isinstance(params[0], (list, tuple)):  # asv: a single parameter list
        return (params[0],)
    return tuple(p[0] for p in params)


@pytest.mark.parametrize("modname, clsname, meth", benchmark_cases())
def test_benchmark_runs_once(modname, clsname, meth):
    mod = importlib.import_module(f"benchmarks.{modname}")
    cls = getattr(mod, clsname)
    args = tiniest(cls)
    if args and getattr(cls, "param_names", None) is not None:
        assert len(cls.param_names) == len(args)
    bench = cls()
    if hasattr(bench, "setup"):
        bench.setup(*args)  # NotImplementedError here: the tiniest case must not be skipped
    try:
        out = getattr(bench, meth)(*args)
        if meth.startswith("track_"):
            assert np.isfinite(float(out)), f"{meth} returned {out!r}"
        elif meth.startswith("timeraw_"):
            stmt, setup = out if isinstance(out, tuple) else (out, "")
            env = dict(os.environ)
            if setup:  # a cold compile takes ~30 s: run its code path without the JIT
                env["NUMBA_DISABLE_JIT"] = "1"
            subprocess.run([sys.executable, "-c", setup + "\n" + stmt], check=True, env=env,
                           cwd=ROOT, capture_output=True, timeout=300)
    finally:
        if hasattr(bench, "teardown"):
            bench.teardown(*args)


def asv_default_selection(params):
    """The parameter values asv's dashboard draws by default (asv 0.6, graphdisplay.js:
    up to 8 curves, taking values parameter by parameter while the product fits)."""
    chosen, count = [], 1
    for values in params:
        item = [v for j, v in enumerate(values) if (j + 1) * count <= 8]
        count *= len(item)
        chosen.append(item)
    return chosen


@pytest.mark.parametrize("modname", ["bench_kernels", "bench_estimator"])
def test_default_graphs_show_loops_beside_blas(modname):
    """Issue 15: the dashboard's default graph of each benchmark shows the loop kernels and
    the BLAS twin side by side (the backend is the first parameter)."""
    mod = importlib.import_module(f"benchmarks.{modname}")
    for attr, cls in vars(mod).items():
        params = getattr(cls, "params", None)
        if attr.startswith("_") or not inspect.isclass(cls) or not params \
                or "backend" not in cls.param_names:
            continue
        backends = asv_default_selection(params)[cls.param_names.index("backend")]
        if "blas" in params[cls.param_names.index("backend")]:
            assert "blas" in backends and any(b.startswith("loops") for b in backends), attr


def read_asv_conf():
    lines = (ROOT / "asv.conf.json").read_text().splitlines()
    return json.loads("\n".join(ln for ln in lines if not ln.lstrip().startswith("//")))


def test_asv_conf():
    conf = read_asv_conf()
    assert conf["branches"] == ["main"]  # asv's default 'master' does not exist here
    assert conf["repo"] == "."
    assert conf["benchmark_dir"] == "benchmarks"
    assert conf["environment_type"] == "virtualenv"
    assert set(conf["matrix"]["req"]) >= {"numpy", "numba", "scikit-learn", "scipy"}


@pytest.mark.slow
def test_compare_quick_runs():
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "--quick", "--workloads", "W1", "--epochs",
         "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "command: python benchmarks/compare.py --quick --workloads W1 --epochs 1" in out
    assert "sklearn/loops" in out and "EXTRAPOLATED" in out and "predict_proba" in out


def _git(*args):
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.mark.slow
def test_asv_smoke_results_publish_and_compare(tmp_path):
    """What CI's smoke run proves about the dashboard and the regression gate.

    asv records quick results of one small benchmark class (the installed fastbp,
    ``--python=same``) for HEAD, ``asv publish`` turns them into the dashboard (it
    failed on a fresh clone before asv.conf.json named the 'main' branch), and
    ``asv compare --factor 1.1`` -- the table ``asv continuous`` prints and exits on --
    runs on them.  asv writes only under ``tmp_path``.
    """
    pytest.importorskip("asv")
    head = _git("rev-parse", "HEAD")
    if head is None or _git("rev-parse", "--verify", "main") is None:
        pytest.skip("needs a git checkout with a 'main' branch")
    conf = read_asv_conf()
    conf.update(repo=str(ROOT), benchmark_dir=str(BENCH_DIR), env_dir=str(tmp_path / "env"),
                results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"))
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))
    env = dict(os.environ, HOME=str(tmp_path))  # 'asv machine' writes ~/.asv-machine.json

    def asv(*args):
        proc = subprocess.run([sys.executable, "-m", "asv", *args, "--config", str(config)],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"asv {args[0]}: " + proc.stdout[-3000:] + proc.stderr
        return proc.stdout

    asv("machine", "--yes", "--machine", "smoke")
    asv("run", "--python=same", "--quick", "--bench", "OutputDelta", "--machine", "smoke",
        "--set-commit-hash", head)
    results = list((tmp_path / "results" / "smoke").glob("*.json"))
    assert len([p for p in results if p.name != "machine.json"]) == 1
    asv("publish")
    index = json.loads((tmp_path / "html" / "index.json").read_text())
    assert index["params"]["branch"] == ["main"]
    assert any(name.startswith("bench_kernels.OutputDelta.") for name in index["benchmarks"])
    out = asv("compare", "--factor", "1.1", "--machine", "smoke", head, head)
    assert "OutputDelta" in out
