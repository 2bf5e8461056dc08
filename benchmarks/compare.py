"""Side-by-side table: seconds per training epoch of fastbp, scikit-learn and PyTorch.

Usage::

    python benchmarks/compare.py [--quick] [--workloads W1,W2] [--epochs N] [--markdown]

For each workload of ``common.WORKLOADS`` (same architecture, activation,
loss, optimizer -- sgd, momentum 0.9, Nesterov -- and batch size for every
system) it times fastbp's ``loops``, ``loops-serial`` and ``blas`` backends,
scikit-learn's MLPClassifier/MLPRegressor and, when it is importable, a plain
PyTorch CPU training loop, and prints each ratio to fastbp loops.  Then: the
pure-Python backend on a few W2 samples, extrapolated to an epoch; GF/s of the
loops backend on W4/W5 against a measured NumPy GEMM; the cold start of a
fresh interpreter; ``predict_proba`` on 1,000 rows of the 784-30-10 net.

Every system gets a JIT/warm-up fit first; each figure is the median of a
few repeats.  ``--quick`` shrinks the sample counts (and repeats) so the whole
script runs in under a minute.  Timings on a shared or busy machine are noise:
report ratios measured in one run, on an idle machine.
"""
import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

if __package__:
    from . import common
else:  # run as a script: python benchmarks/compare.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common

SYSTEMS = ("loops", "loops-serial", "blas", "sklearn", "torch")
PYTHON_FULL_SAMPLES = 10_000  # W2's epoch


# -- measuring -------------------------------------------------------------------

def median_of(repeats, func):
    """Median wall-clock seconds of ``func()`` over ``repeats`` calls."""
    return statistics.median(common.wall_seconds(func) for _ in range(repeats))


def fit_seconds(make, X, y, epochs, repeats, warm_rows):
    """Seconds per epoch of ``make(max_iter).fit(X, y)`` after a warm-up fit."""
    make(1).fit(X[:warm_rows], y[:warm_rows])
    est = make(epochs)
    return median_of(repeats, lambda: est.fit(X, y)) / epochs


def torch_seconds(wl, X, y, epochs, repeats, threads):
    """Seconds per epoch of the same net in a plain PyTorch loop (None without torch)."""
    try:
        import torch
    except (ImportError, OSError):  # optional; a broken install raises OSError
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(common.SEED)
    dtype = torch.float64 if wl.dtype == "float64" else torch.float32
    act = {"relu": torch.nn.ReLU, "logistic": torch.nn.Sigmoid, "tanh": torch.nn.Tanh,
           "identity": torch.nn.Identity}[wl.activation]
    layers = []
    for i, (a, b) in enumerate(zip(wl.sizes[:-1], wl.sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=dtype))
        if i < len(wl.sizes) - 2:
            layers.append(act())
    model = torch.nn.Sequential(*layers)
    if wl.task == "regression":
        loss_fn = torch.nn.MSELoss()
        target = torch.from_numpy(np.ascontiguousarray(y, dtype=wl.dtype).reshape(-1, 1))
    else:
        loss_fn = torch.nn.CrossEntropyLoss()  # softmax output + cross-entropy
        target = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    inputs = torch.from_numpy(np.ascontiguousarray(X))
    opt = torch.optim.SGD(model.parameters(), lr=wl.learning_rate, momentum=0.9,
                          nesterov=True, weight_decay=1e-4)
    bs = wl.batch_size

    def run(n_rows, n_epochs):
        for _ in range(n_epochs):
            perm = torch.randperm(n_rows)
            for start in range(0, n_rows, bs):
                idx = perm[start:start + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(inputs[idx]), target[idx])
                loss.backward()
                opt.step()

    run(wl.warm_rows(), 1)  # warm-up
    n = inputs.shape[0]
    return median_of(repeats, lambda: run(n, epochs)) / epochs


def gemm_gflops(dtype, repeats):
    """GF/s of a NumPy matmul the size of W4's first layer at batch 256."""
    rng = np.random.default_rng(common.SEED)
    a = rng.random((256, 784)).astype(dtype)
    b = rng.random((784, 512)).astype(dtype)
    out = np.empty((256, 512), dtype=dtype)
    seconds = common.median_seconds(lambda: np.matmul(a, b, out=out), repeats=max(3, repeats),
                                     min_time=0.05)
    return 2.0 * 256 * 784 * 512 / seconds / 1e9


def subprocess_seconds(code, repeats):
    """Wall-clock seconds of ``python -c code`` (interpreter start included), after one warm run."""
    cmd = [sys.executable, "-c", code]
    subprocess.run(cmd, check=True, capture_output=True)

    def once():
        subprocess.run(cmd, check=True, capture_output=True)
    return median_of(repeats, once)


# -- printing --------------------------------------------------------------------

def table(headers, rows, markdown, left=2):
    """Rows of strings as a Markdown or an aligned plain-text table (first ``left`` columns
    left-aligned, the rest right-aligned)."""
    cells = [list(headers)] + [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |",
                 "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.rjust(w) if i >= left else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def sec(x):
    return "n/a" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


def ratio(num, den):
    return "n/a" if num is None or den is None or den <= 0 else f"{num / den:.2f}x"


def heading(text, markdown):
    print()
    print(("### " + text) if markdown else ("== " + text + " =="))


def versions():
    import numba
    import scipy
    import sklearn
    try:
        import torch
        torch_v = torch.__version__
    except (ImportError, OSError):  # optional; a broken install raises OSError
        torch_v = "not installed (optional: pip install '.[torch]')"
    import fastbp
    return (f"fastbp {fastbp.__version__}, numpy {np.__version__}, numba {numba.__version__} "
            f"({numba.config.NUMBA_NUM_THREADS} threads, layer {numba.config.THREADING_LAYER}), "
            f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, torch {torch_v}")


# -- main ------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/compare.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="shrink sample counts and repeats (under a minute in total)")
    p.add_argument("--workloads", default=",".join(n for n in common.WORKLOADS if n != "tiny"),
                   help="comma-separated names among %s (default: W1..W5)"
                   % ", ".join(common.WORKLOADS))
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per timed fit (default: per workload, 1 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per figure, median reported (default 3, 2 with --quick)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for fastbp loops, BLAS and torch (default 2)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in common.WORKLOADS]
    if unknown or not names:
        p.error(f"unknown workload(s) {unknown}; choose from {list(common.WORKLOADS)}")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    args.names = names
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    return args


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
        command = ["python"] + sys.argv
    else:
        command = ["python", "benchmarks/compare.py"] + list(argv)
    args = parse_args(argv)
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits
    warnings.simplefilter("ignore", ConvergenceWarning)  # fits stop at the fixed epochs

    import numba
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    md = args.markdown
    print(("# " if md else "") + "fastbp vs scikit-learn vs PyTorch: seconds per epoch")
    print()
    print("command: " + shlex.join(command))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print("versions: " + versions())
    print(f"settings: sgd momentum 0.9 (Nesterov), constant step, no early stopping; "
          f"{threads} thread(s) for fastbp loops, BLAS and torch; median of {args.repeats} "
          f"repeat(s) after a warm-up fit" + ("; --quick: sample counts shrunk" if args.quick
                                              else ""))
    limits = threadpool_limits(limits=threads, user_api="blas")
    try:
        run(args, threads)
    finally:
        limits.restore_original_limits()
    return 0


def run(args, threads):
    md = args.markdown
    t_start = time.perf_counter()
    results = {}
    rows = []
    for name in args.names:
        wl = common.WORKLOADS[name]
        n = wl.quick_samples if args.quick else wl.n_samples
        epochs = args.epochs or (1 if args.quick else wl.epochs)
        X, y = wl.data(n)
        warm = wl.warm_rows()
        r = {"n": n, "epochs": epochs}
        for backend in ("loops", "loops-serial", "blas"):
            r[backend] = fit_seconds(
                lambda it, b=backend: wl.fastbp_estimator(b, max_iter=it, n_jobs=threads),
                X, y, epochs, args.repeats, warm)
        r["sklearn"] = fit_seconds(wl.sklearn_estimator, X, y, epochs, args.repeats, warm)
        r["torch"] = torch_seconds(wl, X, y, epochs, args.repeats, threads)
        r["gflops"] = wl.train_flops(n) / r["loops"] / 1e9
        results[name] = r
        rows.append([name, wl.describe(), n, epochs] + [sec(r[s]) for s in SYSTEMS]
                    + [ratio(r["sklearn"], r["loops"]), ratio(r["blas"], r["loops"]),
                       ratio(r["torch"], r["loops"]), f"{r['gflops']:.1f}"])
    heading("Seconds per epoch (lower is better); ratios = other / fastbp loops", md)
    print(table(["workload", "net", "samples", "epochs", "loops", "loops-serial", "blas",
                 "sklearn", "torch", "sklearn/loops", "blas/loops", "torch/loops",
                 "loops GF/s"], rows, md))
    if results and all(r["torch"] is None for r in results.values()):
        print("torch: not installed, column skipped (pip install '.[torch]')")

    # -- pure-Python backend, extrapolated -------------------------------------------
    w2 = common.WORKLOADS["W2"]
    sub = 50 if args.quick else 200
    X, y = w2.data(w2.quick_samples if args.quick else w2.n_samples)
    t_sub = common.wall_seconds(
        lambda: w2.fastbp_estimator("python", max_iter=1).fit(X[:sub], y[:sub]))
    python_epoch = t_sub * PYTHON_FULL_SAMPLES / sub
    if "W2" in results:
        loops_per_sample = results["W2"]["loops"] / results["W2"]["n"]
        loops_from = f"the W2 row above, {results['W2']['n']} samples"
    else:
        loops_per_sample = fit_seconds(
            lambda it: w2.fastbp_estimator("loops", max_iter=it, n_jobs=threads),
            X, y, 1, args.repeats, w2.warm_rows()) / X.shape[0]
        loops_from = f"a W2 loops epoch measured now on {X.shape[0]} samples"
    loops_epoch = loops_per_sample * PYTHON_FULL_SAMPLES
    heading("Pure-Python backend (the same loop kernels, not compiled)", md)
    print(f"W2 ({w2.describe()}): one epoch on {sub} samples took {sec(t_sub)} s, "
          f"EXTRAPOLATED to a {PYTHON_FULL_SAMPLES}-sample epoch: {sec(python_epoch)} s")
    print(f"fastbp loops, same {PYTHON_FULL_SAMPLES}-sample epoch (scaled from "
          f"{loops_from}): {sec(loops_epoch)} s; python/loops = "
          f"{ratio(python_epoch, loops_epoch)}")

    # -- GF/s against a GEMM ---------------------------------------------------------
    heading("Loops backend GF/s against a measured NumPy GEMM (256x784 @ 784x512)", md)
    peak = {dt: gemm_gflops(dt, args.repeats) for dt in ("float64", "float32")}
    print(f"NumPy matmul ({threads} thread(s)): float64 {peak['float64']:.1f} GF/s, "
          f"float32 {peak['float32']:.1f} GF/s")
    big = [n for n in ("W4", "W5") if n in results]
    if big:
        print(table(["workload", "dtype", "loops GF/s", "GEMM GF/s", "fraction of GEMM"],
                    [[n, common.WORKLOADS[n].dtype, f"{results[n]['gflops']:.1f}",
                      f"{peak[common.WORKLOADS[n].dtype]:.1f}",
                      f"{results[n]['gflops'] / peak[common.WORKLOADS[n].dtype]:.0%}"]
                     for n in big], md))
    else:
        print("(W4/W5 not run: no loops GF/s to compare; add --workloads W4,W5)")

    # -- cold start ------------------------------------------------------------------
    heading("Cold start: fresh interpreter, import and fit a tiny net (numba cache warm)", md)
    cold_repeats = max(2, args.repeats)
    t_fastbp = subprocess_seconds(common.TINY_FIT_CODE, cold_repeats)
    t_sklearn = subprocess_seconds(common.SKLEARN_TINY_FIT_CODE, cold_repeats)
    print(f"fastbp {sec(t_fastbp)} s, scikit-learn {sec(t_sklearn)} s (interpreter start "
          f"included; median of {cold_repeats}); fastbp/sklearn = "
          f"{ratio(t_fastbp, t_sklearn)}")

    # -- predict_proba ---------------------------------------------------------------
    heading("predict_proba on 1,000 rows, 784-30-10 logistic net", md)
    Xp, yp = w2.data(w2.quick_samples if args.quick else w2.n_samples)
    Xp, yp = Xp[:1000], yp[:1000]
    ours = w2.fastbp_estimator("loops", max_iter=1, n_jobs=threads).fit(Xp, yp)
    theirs = w2.sklearn_estimator(max_iter=1).fit(Xp, yp)
    reps = 3 if args.quick else 5
    t_ours = statistics.median(common.median_seconds(lambda: ours.predict_proba(Xp), 1, 0.05)
                               for _ in range(reps))
    t_theirs = statistics.median(
        common.median_seconds(lambda: theirs.predict_proba(Xp), 1, 0.05) for _ in range(reps))
    print(f"fastbp {t_ours * 1e3:.3g} ms, scikit-learn {t_theirs * 1e3:.3g} ms per call; "
          f"sklearn/fastbp = {ratio(t_theirs, t_ours)}")
    print()
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
