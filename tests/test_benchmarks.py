"""The benchmark suite (benchmarks/, asv) stays in step with the kernels and keeps running.

* every engine kernel of ``fastbp.kernels_loop`` has a BLAS twin of the same
  name (and arguments) in ``fastbp.kernels_blas`` and a benchmark class in
  ``benchmarks/bench_kernels.py`` (benchmarks/README.md: a unit test, not an
  import-time check);
* every benchmark method of every module runs once on the tiniest parameters
  (the first value of each parameter), the way asv would call it;
* ``benchmarks/compare.py --quick`` runs; its compiled peers (jax, torch.compile)
  train the same net from the same start as fastbp and end at its loss.
"""
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import pathlib
import subprocess
import sys
import warnings

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
    """... an engine kernel, or a compiled helper of the kernels that has a BLAS twin
    (``outer_rows``, the tiles of both backward passes)."""
    bench = importlib.import_module("benchmarks.bench_kernels")
    kernels = set(engine_kernels())
    kernels |= {attr for attr, obj in vars(kernels_loop).items()
                if isinstance(obj, CPUDispatcher) and hasattr(kernels_blas, attr)}
    for attr, cls in vars(bench).items():
        if inspect.isclass(cls) and not attr.startswith("_") and getattr(cls, "kernel", None):
            assert cls.kernel in kernels, f"{attr}.kernel = {cls.kernel!r} is not a kernel"
            assert attr.startswith(camel(cls.kernel)), f"{attr} is not named after {cls.kernel}"


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
    assert "jax/loops" in out and "torch.compile/loops" in out
    for peer, module in (("jax", "jax"), ("torch.compile", "torch")):
        if importlib.util.find_spec(module) is None:
            assert f"{peer}: not installed, column skipped (pip install '.[{module}]')" in out


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


# -- compare.py's compiled peers (jax, torch.compile) ------------------------------

def compare_module():
    return importlib.import_module("benchmarks.compare")


def peer_case(name, n):
    common = importlib.import_module("benchmarks.common")
    wl = common.WORKLOADS[name]
    X, y = wl.data(n)
    return wl, X, y


def adam_workload(wl):
    """``wl`` with scikit-learn's adam instead of Nesterov sgd (for fastbp and the peers)."""
    common = importlib.import_module("benchmarks.common")

    class Adam(common.Workload):
        def estimator_params(self, max_iter):
            p = super().estimator_params(max_iter)
            p.update(solver="adam", learning_rate_init=0.01)
            return p
    return Adam(**{f.name: getattr(wl, f.name) for f in dataclasses.fields(wl)})


def fastbp_loss(wl, X, y, epochs):
    est = wl.fastbp_estimator("loops", max_iter=epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed number of epochs
        return float(est.fit(X, y).loss_)


def numpy_peer_loss(wl, X, y, epochs):
    """scikit-learn's Nesterov sgd written out in NumPy from ``peer_start``: the final
    loss of a peer that gets the starting weights, sample orders and targets right."""
    compare = compare_module()
    rec, X, Y, params, orders = compare.peer_start(wl, X, y, epochs)
    assert rec["solver"] == "sgd" and rec["nesterov"] and rec["activation"] in ("relu", "logistic")
    act = (lambda z: np.maximum(z, 0)) if rec["activation"] == "relu" else \
        (lambda z: 1 / (1 + np.exp(-z)))
    dact = (lambda h: (h > 0).astype(h.dtype)) if rec["activation"] == "relu" else \
        (lambda h: h * (1 - h))
    params = [[W.copy(), b.copy()] for W, b in params]
    vel = [[np.zeros_like(W), np.zeros_like(b)] for W, b in params]
    lr, mu, alpha, bs = rec["lr"], rec["momentum"], rec["alpha"], rec["batch_size"]
    for order in orders:
        total = 0.0
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            m = len(idx)
            hs = [X[idx]]
            for W, b in params[:-1]:
                hs.append(act(hs[-1] @ W + b))
            z = hs[-1] @ params[-1][0] + params[-1][1]
            if rec["output"] == "softmax":
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                loss = -np.sum(Y[idx] * np.log(p)) / m
                delta = (p - Y[idx]) / m
            else:
                loss = 0.5 * np.mean((z - Y[idx]) ** 2)
                delta = (z - Y[idx]) / m
            loss += 0.5 * alpha * sum(np.sum(W * W) for W, _ in params) / m
            total += loss * m
            grads = []
            for layer in range(len(params) - 1, -1, -1):
                W = params[layer][0]
                grads.append((hs[layer].T @ delta + alpha * W / m, delta.sum(axis=0)))
                if layer:
                    delta = (delta @ W.T) * dact(hs[layer])
            for (W, b), (v, u), (gW, gb) in zip(params, vel, grads[::-1]):
                for p_, v_, g_ in ((W, v, gW), (b, u, gb)):
                    v_ *= mu
                    v_ -= lr * g_
                    p_ += mu * v_ - lr * g_
        final = total / len(order)
    return final


@pytest.mark.parametrize("name, n", [("tiny", 100), ("W2", 150)])
def test_peer_start_is_fastbps_start(name, n):
    """peer_start gives fastbp's starting weights, sample orders and targets: a NumPy
    peer built on it ends two epochs at fastbp's loss_ (no jax/torch needed)."""
    wl, X, y = peer_case(name, n)
    assert numpy_peer_loss(wl, X, y, 2) == pytest.approx(fastbp_loss(wl, X, y, 2), rel=1e-9)


def test_peer_check_catches_a_wrong_peer(capsys):
    compare = compare_module()
    wl = compare.common.WORKLOADS["tiny"]
    good = compare.peer_check("jax", "tiny", wl, 2, 0.5, {"seconds": 1.0, "loss": 0.5 + 1e-12})
    bad = compare.peer_check("jax", "tiny", wl, 2, 0.5, {"seconds": 1.0, "loss": 0.51})
    broken = compare.peer_check("torch.compile", "tiny", wl, 2, 0.5, {"error": "boom"})
    assert good["ok"] and not bad["ok"] and not broken["ok"]
    compare.print_peer_checks([good, bad, broken], False)
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "ERROR: boom" in out
    assert "FAILED for jax on tiny, torch.compile on tiny" in out


def test_peer_recipe_refuses_what_peers_do_not_implement():
    compare = compare_module()
    wl, X, y = peer_case("W2", 100)
    with pytest.raises(ValueError, match="3\\+ classes"):
        compare.peer_recipe(wl, (y > 4).astype(np.int64))


PEER_CASES = [("tiny", 100, "sgd"), ("W2", 150, "sgd"), ("tiny", 100, "adam")]


@pytest.mark.parametrize("name, n, solver", PEER_CASES)
def test_jax_peer_matches_fastbp(name, n, solver):
    pytest.importorskip("jax")
    compare = compare_module()
    wl, X, y = peer_case(name, n)
    wl = adam_workload(wl) if solver == "adam" else wl
    seconds, loss, _ = compare.jax_peer(wl, X, y, epochs=2, repeats=1)
    assert seconds > 0
    rtol = compare.PEER_RTOL[wl.dtype]
    assert loss == pytest.approx(fastbp_loss(wl, X, y, 2), rel=rtol)


@pytest.mark.parametrize("name, n, solver", PEER_CASES)
def test_torch_step_matches_fastbp(name, n, solver):
    """The torch.compile peer's step, run eagerly (compiling it takes ~30 s: slow test)."""
    pytest.importorskip("torch")
    compare = compare_module()
    wl, X, y = peer_case(name, n)
    wl = adam_workload(wl) if solver == "adam" else wl
    seconds, loss, _ = compare.torch_compile_peer(wl, X, y, 2, 1, threads=1, compile=False)
    rtol = compare.PEER_RTOL[wl.dtype]
    assert loss == pytest.approx(fastbp_loss(wl, X, y, 2), rel=rtol)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_torch_compile_peer_matches_fastbp(solver):
    """Compiled, the step must still update everything it updates eagerly (torch 2.13
    drops in-place updates of 0-d inputs: the loss accumulator was once lost so)."""
    pytest.importorskip("torch")
    compare = compare_module()
    wl, X, y = peer_case("tiny", 100)
    wl = adam_workload(wl) if solver == "adam" else wl
    seconds, loss, _ = compare.torch_compile_peer(wl, X, y, 2, 1, threads=1)
    assert loss == pytest.approx(fastbp_loss(wl, X, y, 2), rel=compare.PEER_RTOL[wl.dtype])


@pytest.mark.slow
def test_compare_runs_the_jax_peer_in_a_child_process():
    pytest.importorskip("jax")
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "--quick", "--workloads", "tiny", "--epochs",
         "1", "--peers", "jax"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "jax/loops" in out and "torch.compile: not run (--peers)" in out
    assert "peer check: all peers match fastbp loops within tolerance" in out


@pytest.mark.slow
def test_a_failing_peer_child_is_reported_not_raised():
    compare = compare_module()
    out = compare.run_peer("jax", "no-such-workload", 10, 1, 1, 1)
    assert set(out) == {"error"} and "unknown workload" in out["error"]
