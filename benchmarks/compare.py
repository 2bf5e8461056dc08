"""Side-by-side table: seconds per training epoch of fastbp, scikit-learn, PyTorch and JAX.

Usage::

    python benchmarks/compare.py [--quick] [--workloads W1,W2] [--epochs N] [--markdown]
                                 [--peers jax,torch.compile|none]

For each workload of ``common.WORKLOADS`` (same architecture, activation,
loss, optimizer -- sgd, momentum 0.9, Nesterov -- and batch size for every
system) it times fastbp's ``loops``, ``loops-serial`` and ``blas`` backends,
scikit-learn's MLPClassifier/MLPRegressor and, when they are importable and
each in a child process of its own, a plain PyTorch CPU training loop
(``torch``) and two compiled peers: ``jax`` (``jax.jit`` of a ``lax.scan`` over
the epoch's mini-batch steps) and ``torch.compile`` (the whole training step --
forward, loss, backward, update -- as one compiled function).  It prints each
ratio to fastbp loops.  The compiled peers start from fastbp's starting weights
and follow its sample orders, so their training loss after the timed epochs
must equal fastbp's ``loss_``; a peer that does not (to ``PEER_RTOL``) is
reported and its time left out.  Then: the pure-Python backend on a few W2
samples, extrapolated to an epoch; GF/s of the loops backend on W4/W5 against a
measured NumPy GEMM; the cold start of a fresh interpreter; ``predict_proba``
on 1,000 rows of the 784-30-10 net.

Every system gets a JIT/warm-up fit (or epoch) first; each figure is the median
of a few repeats.  ``--quick`` shrinks the sample counts (and repeats) so the
whole script runs in about a minute (plus the peers' compilation); its cold start is
timed once.  Timings on a
shared or busy machine are noise: report ratios measured in one run, on an idle
machine.
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

SYSTEMS = ("loops", "loops-serial", "blas", "sklearn", "torch", "jax", "torch.compile")
PYTHON_FULL_SAMPLES = 10_000  # W2's epoch


# -- measuring -------------------------------------------------------------------

def median_of(repeats, func):
    """Median wall-clock seconds of ``func()`` over ``repeats`` calls."""
    return statistics.median(common.wall_seconds(func) for _ in range(repeats))


def fit_seconds(make, X, y, epochs, repeats, warm_rows):
    """Seconds per epoch of ``make(max_iter).fit(X, y)`` after a warm-up fit."""
    return fit_seconds_and_loss(make, X, y, epochs, repeats, warm_rows)[0]


def fit_seconds_and_loss(make, X, y, epochs, repeats, warm_rows):
    """(seconds per epoch, final ``loss_``) of ``make(max_iter).fit(X, y)`` after a
    warm-up fit."""
    make(1).fit(X[:warm_rows], y[:warm_rows])
    est = make(epochs)
    seconds = median_of(repeats, lambda: est.fit(X, y)) / epochs
    return seconds, float(est.loss_)


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


# -- compiled peers: JAX (jit of a lax.scan epoch) and torch.compile (whole step) ------
#
# Each peer trains from scikit-learn's (so fastbp's) starting weights on the same
# sample orders as fastbp's timed fit, so its training loss after the timed epochs
# must equal fastbp's ``loss_`` up to rounding: a fast but wrong peer shows.  Each
# peer runs in a child process (``--peer-worker``) so that its thread pools neither
# share a process with fastbp's nor run while fastbp is timed.

PEERS = {  # column: (module to import, pip hint)
    "jax": ("jax", "pip install '.[jax]'"),
    "torch.compile": ("torch", "pip install '.[torch]'"),
}
PEER_TIMEOUT = 3600  # seconds for one peer on one workload, compilation included
PEER_RTOL = {"float64": 1e-9, "float32": 1e-4}  # final-loss tolerance against fastbp loops


def peer_recipe(wl, y):
    """What a peer must compute for ``wl``: the settings of ``wl.estimator_params``.

    Raises ValueError for settings the peers do not implement (so they are never
    silently timed on a different problem).
    """
    p = wl.estimator_params(1)
    if p["learning_rate"] != "constant" or p["solver"] not in ("sgd", "adam") \
            or p["early_stopping"] or not p["shuffle"] or not isinstance(p["random_state"], int):
        raise ValueError(f"{wl.name}: peers implement constant-step sgd/adam, shuffling from "
                         f"an int random_state; got {p}")
    if wl.task == "regression":
        out, n_out = "identity", 1 if np.ndim(y) == 1 else y.shape[1]
    else:
        n_out = len(np.unique(y))
        if n_out < 3:
            raise ValueError(f"{wl.name}: peers implement softmax classification (3+ classes); "
                             f"the data has {n_out}")
        out = "softmax"
    return dict(sizes=tuple(wl.sizes[:-1]) + (n_out,), activation=p["activation"],
                output=out, dtype=wl.dtype, batch_size=p["batch_size"], solver=p["solver"],
                lr=p["learning_rate_init"], alpha=p["alpha"],
                momentum=p.get("momentum", 0.9), nesterov=p.get("nesterovs_momentum", True),
                beta_1=p.get("beta_1", 0.9), beta_2=p.get("beta_2", 0.999),
                epsilon=p.get("epsilon", 1e-8), random_state=p["random_state"])


def peer_start(wl, X, y, epochs):
    """(recipe, X, Y, params, orders): fastbp's first ``epochs`` epochs, spelt out.

    ``params``: [(W (n_in, n_out), b (n_out,))], scikit-learn's uniform Glorot draw
    from ``RandomState(random_state)`` (bound sqrt(f / (n_in + n_out)), f = 2 for a logistic
    net, else 6); ``orders``: (epochs, n) int64, the sample order of each epoch,
    drawn from the same RandomState afterwards as scikit-learn's ``shuffle`` does.
    ``Y``: (n, n_out) targets of the net's dtype (one-hot rows for classification).
    """
    rec = peer_recipe(wl, y)
    dtype = np.dtype(rec["dtype"])
    rng = np.random.RandomState(rec["random_state"])
    factor = 2.0 if rec["activation"] == "logistic" else 6.0
    params = []
    for n_in, n_out in zip(rec["sizes"][:-1], rec["sizes"][1:]):
        bound = np.sqrt(factor / (n_in + n_out))
        W = rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype)
        params.append((W, rng.uniform(-bound, bound, n_out).astype(dtype)))
    n = X.shape[0]
    orders = np.empty((epochs, n), dtype=np.int64)
    order = np.arange(n)
    for e in range(epochs):
        indices = np.arange(n)
        rng.shuffle(indices)
        order = order[indices]
        orders[e] = order
    if rec["output"] == "softmax":
        codes = np.searchsorted(np.unique(y), y)
        Y = np.zeros((n, rec["sizes"][-1]), dtype=dtype)
        Y[np.arange(n), codes] = 1
    else:
        Y = np.asarray(y, dtype=dtype).reshape(n, -1)
    return rec, np.ascontiguousarray(X, dtype=dtype), np.ascontiguousarray(Y), params, orders


def peer_epoch_seconds(run_epoch, fresh_state, orders, repeats, sync):
    """(seconds per epoch, final mean loss) of a peer: one warm-up epoch, then
    ``repeats`` timed runs of ``len(orders)`` epochs, each from the starting weights.

    ``run_epoch(state, order) -> (state, mean loss)``; ``sync(x)`` waits for it.
    """
    state, loss = run_epoch(fresh_state(), orders[0])  # warm-up: compiles
    sync(loss)
    times, final = [], None
    for _ in range(repeats):
        state = fresh_state()
        t0 = time.perf_counter()
        for order in orders:
            state, loss = run_epoch(state, order)
            sync(loss)
        times.append(time.perf_counter() - t0)
        final = float(loss)
    return statistics.median(times) / len(orders), final


def jax_peer(wl, X, y, epochs, repeats):
    """JAX: ``jax.jit`` of a whole epoch, a ``lax.scan`` over the mini-batch steps
    (forward, loss, ``value_and_grad``, the scikit-learn form of the update).

    Returns (seconds per epoch, final mean loss, version).
    """
    import jax
    if wl.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rec, X, Y, params0, orders = peer_start(wl, X, y, epochs)
    n, bs = X.shape[0], rec["batch_size"]
    n_full, tail = divmod(n, bs)
    act = {"relu": jax.nn.relu, "logistic": jax.nn.sigmoid, "tanh": jnp.tanh,
           "identity": lambda z: z}[rec["activation"]]
    alpha, lr, mu = rec["alpha"], rec["lr"], rec["momentum"]
    b1, b2, eps = rec["beta_1"], rec["beta_2"], rec["epsilon"]

    def batch_loss(params, xb, yb):
        """(loss to differentiate, loss scikit-learn reports) of one batch."""
        m = xb.shape[0]
        h = xb
        for W, b in params[:-1]:
            h = act(h @ W + b)
        W, b = params[-1]
        z = h @ W + b
        if rec["output"] == "softmax":
            data = -jnp.sum(yb * jax.nn.log_softmax(z)) / m
            shown = data
        else:  # scikit-learn: gradient (z - y) / m, loss half the mean square
            data = 0.5 * jnp.sum((z - yb) ** 2) / m
            shown = 0.5 * jnp.mean((z - yb) ** 2)
        l2 = 0.5 * alpha * sum(jnp.sum(W * W) for W, _ in params) / m
        return data + l2, shown + l2

    grad_fn = jax.value_and_grad(batch_loss, has_aux=True)

    def epoch(params, opt, Xd, Yd, order):
        def step(carry, idx):  # one mini-batch: gather its rows, forward, backward, update
            params, opt = carry
            (_, shown), g = grad_fn(params, Xd[idx], Yd[idx])
            if rec["solver"] == "adam":
                t, m1, m2 = opt
                t = t + 1
                m1 = jax.tree_util.tree_map(lambda a, d: b1 * a + (1 - b1) * d, m1, g)
                m2 = jax.tree_util.tree_map(lambda a, d: b2 * a + (1 - b2) * d * d, m2, g)
                lr_t = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                params = jax.tree_util.tree_map(
                    lambda p, a, v: p - lr_t * a / (jnp.sqrt(v) + eps), params, m1, m2)
                opt = (t, m1, m2)
            else:  # scikit-learn: v <- mu v - lr g; p += mu v - lr g (Nesterov) or v
                vel = jax.tree_util.tree_map(lambda v, d: mu * v - lr * d, opt, g)
                upd = (jax.tree_util.tree_map(lambda v, d: mu * v - lr * d, vel, g)
                       if rec["nesterov"] else vel)
                params = jax.tree_util.tree_map(lambda p, u: p + u, params, upd)
                opt = vel
            return (params, opt), shown * idx.shape[0]

        (params, opt), sums = jax.lax.scan(step, (params, opt),
                                           order[:n_full * bs].reshape(n_full, bs))
        total = jnp.sum(sums)
        if tail:  # the last, smaller batch
            (params, opt), last = step((params, opt), order[n_full * bs:])
            total = total + last
        return params, opt, total / n

    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    epoch_jit = jax.jit(epoch, donate_argnums=(0, 1))
    orders_d = [jnp.asarray(o) for o in orders]

    def fresh_state():
        params = [(jnp.array(W), jnp.array(b)) for W, b in params0]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        if rec["solver"] == "adam":
            opt = (jnp.zeros((), dtype=rec["dtype"]), zeros,
                   jax.tree_util.tree_map(jnp.zeros_like, params))
        else:
            opt = zeros
        return params, opt

    def run_epoch(state, order):
        params, opt, loss = epoch_jit(*state, Xd, Yd, order)
        return (params, opt), loss

    seconds, loss = peer_epoch_seconds(run_epoch, fresh_state, orders_d, repeats,
                                jax.block_until_ready)
    return seconds, loss, jax.__version__


def torch_compile_peer(wl, X, y, epochs, repeats, threads, compile=True):
    """PyTorch: ``torch.compile`` of the whole training step -- forward, loss,
    backward (``torch.func.grad_and_value``) and the in-place scikit-learn form of the
    update in one compiled function (``compile=False``: the same step, eager).

    Returns (seconds per epoch, final mean loss, version).
    """
    import torch
    from torch.func import grad_and_value
    torch.set_num_threads(threads)
    rec, X, Y, params0, orders = peer_start(wl, X, y, epochs)
    n, bs = X.shape[0], rec["batch_size"]
    act = {"relu": torch.relu, "logistic": torch.sigmoid, "tanh": torch.tanh,
           "identity": lambda z: z}[rec["activation"]]
    alpha, lr, mu, nesterov = rec["alpha"], rec["lr"], rec["momentum"], rec["nesterov"]
    b1, b2, eps, adam = rec["beta_1"], rec["beta_2"], rec["epsilon"], rec["solver"] == "adam"

    def batch_loss(params, xb, yb):
        """(loss to differentiate, (loss scikit-learn reports,)) of one batch."""
        m = xb.shape[0]
        h = xb
        for W, b in zip(params[0:-2:2], params[1:-2:2]):
            h = act(torch.addmm(b, h, W))
        z = torch.addmm(params[-1], h, params[-2])
        if rec["output"] == "softmax":
            data = -(yb * torch.log_softmax(z, dim=1)).sum() / m
            shown = data
        else:
            data = 0.5 * ((z - yb) ** 2).sum() / m
            shown = 0.5 * ((z - yb) ** 2).mean()
        l2 = 0.5 * alpha * sum((W * W).sum() for W in params[0::2]) / m
        return data + l2, (shown + l2).detach()

    grad_fn = grad_and_value(batch_loss, has_aux=True)

    def train_step(params, slots, xb, yb, total):
        grads, (_, shown) = grad_fn(params, xb, yb)
        with torch.no_grad():
            if adam:  # slots: (t (1,), m1..., m2...)
                t = slots[0]
                t.add_(1.0)
                lr_t = lr * torch.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                k = len(params)
                for p, g, m1, m2 in zip(params, grads, slots[1:1 + k], slots[1 + k:]):
                    m1.mul_(b1).add_(g, alpha=1 - b1)
                    m2.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.sub_(lr_t * m1 / (m2.sqrt() + eps))
            else:  # slots: velocities
                for p, g, v in zip(params, grads, slots):
                    v.mul_(mu).sub_(g, alpha=lr)
                    if nesterov:
                        p.add_(v, alpha=mu).sub_(g, alpha=lr)
                    else:
                        p.add_(v)
            total.add_(shown * xb.shape[0])

    step = torch.compile(train_step, dynamic=False) if compile else train_step
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    orders_t = [torch.from_numpy(o) for o in orders]

    def fresh_state():
        params = [torch.from_numpy(a.copy()) for pair in params0 for a in pair]
        if adam:  # a (1,)-shaped step count: see ``total`` below
            slots = ([torch.zeros(1, dtype=params[0].dtype)]
                     + [torch.zeros_like(p) for p in params + params])
        else:
            slots = [torch.zeros_like(p) for p in params]
        return params, slots

    def run_epoch(state, order):
        params, slots = state
        Xp, Yp = Xt[order], Yt[order]  # one gather per epoch, then views
        # (1,), not 0-d: torch.compile (2.13) drops in-place updates of a 0-d input
        total = torch.zeros(1, dtype=Xt.dtype)
        for start in range(0, n, bs):
            step(params, slots, Xp[start:start + bs], Yp[start:start + bs], total)
        return state, total / n

    seconds, loss = peer_epoch_seconds(run_epoch, fresh_state, orders_t, repeats, lambda x: None)
    return seconds, loss, torch.__version__


def peer_worker(args):
    """Child process of one peer on one workload: print one JSON line of results."""
    import json
    wl = common.WORKLOADS[args.names[0]]
    X, y = wl.data(args.n)
    if args.peer_worker == "torch":  # the eager loop: timed only, not checked
        import torch
        seconds, loss, version = (torch_seconds(wl, X, y, args.epochs, args.repeats,
                                                args.threads), None, torch.__version__)
    elif args.peer_worker == "jax":
        seconds, loss, version = jax_peer(wl, X, y, args.epochs, args.repeats)
    else:
        seconds, loss, version = torch_compile_peer(wl, X, y, args.epochs, args.repeats,
                                                    args.threads)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(json.dumps({"seconds": seconds, "loss": loss, "version": version, "cpus": cpus}))
    return 0


def peer_available(peer):
    """Is the package of ``peer`` (a PEERS column, or "torch": the eager loop) installed?"""
    import importlib.util
    return importlib.util.find_spec(PEERS[peer][0] if peer in PEERS else peer) is not None


def run_peer(peer, name, n, epochs, repeats, threads):
    """{"seconds", "loss", "version"} of ``peer`` on workload ``name``, measured in a
    child process limited to ``threads`` CPUs, or {"error": text}."""
    import json
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--peer-worker", peer, "--workloads",
           name, "--n", str(n), "--epochs", str(epochs), "--repeats", str(repeats),
           "--threads", str(threads)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    preexec = None
    if len(cpus) > threads:  # XLA sizes its thread pool by the CPUs it may use
        preexec = lambda: os.sched_setaffinity(0, cpus[:threads])  # noqa: E731
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              preexec_fn=preexec, timeout=PEER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"no result after {PEER_TIMEOUT} s"}
    try:
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):  # no JSON line: report what the child said
        pass
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}


def peer_check(peer, name, wl, epochs, reference, out):
    """Does ``peer``'s final loss match fastbp loops' ``loss_`` (``reference``)?"""
    tol = PEER_RTOL[wl.dtype]
    check = {"peer": peer, "workload": name, "epochs": epochs, "reference": reference,
             "loss": out.get("loss"), "tol": tol, "error": out.get("error"),
             "version": out.get("version"), "cpus": out.get("cpus")}
    loss = check["loss"]
    check["rel"] = (abs(loss - reference) / abs(reference)
                    if loss is not None and np.isfinite(loss) and reference else None)
    check["ok"] = check["rel"] is not None and check["rel"] <= tol
    return check


def print_peer_checks(checks, md):
    heading("Peer check: training loss after the timed epochs, same starting weights and "
            "sample orders as fastbp loops", md)
    rows = []
    for c in checks:
        verdict = ("ok" if c["ok"] else "ERROR: " + c["error"] if c["error"]
                   else "MISMATCH: time not shown")
        rows.append([c["workload"], c["peer"], c["epochs"], f"{c['reference']:.10g}",
                     "n/a" if c["loss"] is None else f"{c['loss']:.10g}",
                     "n/a" if c["rel"] is None else f"{c['rel']:.1e}", f"{c['tol']:.0e}",
                     c["version"] or "n/a", c["cpus"] or "n/a", verdict])
    print(table(["workload", "peer", "epochs", "fastbp loops loss_", "peer loss",
                 "rel. diff", "tolerance", "version", "CPUs", "check"], rows, md))
    bad = [c for c in checks if not c["ok"]]
    print("peer check: " + ("all peers match fastbp loops within tolerance" if not bad else
                            "FAILED for " + ", ".join(f"{c['peer']} on {c['workload']}"
                                                      for c in bad)
                            + " (their times are left out of the table)"))


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
    import importlib.metadata
    try:
        jax_v = importlib.metadata.version("jax")  # without importing it here
    except importlib.metadata.PackageNotFoundError:
        jax_v = "not installed (optional: pip install '.[jax]')"
    import fastbp
    return (f"fastbp {fastbp.__version__}, numpy {np.__version__}, numba {numba.__version__} "
            f"({numba.config.NUMBA_NUM_THREADS} threads, layer {numba.config.THREADING_LAYER}), "
            f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, torch {torch_v}, "
            f"jax {jax_v}")


# -- main ------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/compare.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="shrink sample counts and repeats (under a minute in total)")
    p.add_argument("--workloads", default=",".join(n for n in common.WORKLOADS if n != "tiny"),
                   help="comma-separated names among %s (default: all but tiny)"
                   % ", ".join(common.WORKLOADS))
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per timed fit (default: per workload, 1 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per figure, median reported (default 3, 2 with --quick)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for fastbp loops, BLAS and torch (default 2)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="compiled peers to run, each in a child process: comma-separated "
                   "among %s, or 'none' (default: all)" % ", ".join(PEERS))
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    # internal: the child process of one peer (run_peer)
    p.add_argument("--peer-worker", choices=["torch"] + list(PEERS), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
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
    peers = [] if args.peers.strip() == "none" else \
        [q.strip() for q in args.peers.split(",") if q.strip()]
    if any(q not in PEERS for q in peers):
        p.error(f"--peers: unknown {[q for q in peers if q not in PEERS]}; choose from "
                f"{list(PEERS)} or 'none'")
    args.peer_list = peers
    if args.peer_worker and (len(names) != 1 or not args.n or not args.epochs):
        p.error("--peer-worker needs one workload, --n and --epochs")
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
    if args.peer_worker:
        return peer_worker(args)
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits
    warnings.simplefilter("ignore", ConvergenceWarning)  # fits stop at the fixed epochs

    import numba
    threads = min(args.threads, numba.config.NUMBA_NUM_THREADS)
    md = args.markdown
    print(("# " if md else "") + "fastbp vs scikit-learn vs PyTorch vs JAX: seconds per epoch")
    print()
    print("command: " + shlex.join(command))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print("versions: " + versions())
    print(f"settings: sgd momentum 0.9 (Nesterov), constant step, no early stopping; "
          f"{threads} thread(s) for fastbp loops, BLAS, torch and each peer; median of "
          f"{args.repeats} "
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
    peers = [q for q in args.peer_list if peer_available(q)]
    checks = []
    for name in args.names:
        wl = common.WORKLOADS[name]
        n = wl.quick_samples if args.quick else wl.n_samples
        epochs = args.epochs or (1 if args.quick else wl.epochs)
        X, y = wl.data(n)
        warm = wl.warm_rows()
        r = {"n": n, "epochs": epochs}
        for backend in ("loops", "loops-serial", "blas"):
            r[backend], r[backend + " loss"] = fit_seconds_and_loss(
                lambda it, b=backend: wl.fastbp_estimator(b, max_iter=it, n_jobs=threads),
                X, y, epochs, args.repeats, warm)
        r["sklearn"] = fit_seconds(wl.sklearn_estimator, X, y, epochs, args.repeats, warm)
        r["torch"] = None
        if peer_available("torch"):  # a child process too: torch's threads stay out of ours
            out = run_peer("torch", name, n, epochs, args.repeats, threads)
            r["torch"] = out.get("seconds")
            if "error" in out:
                print(f"torch on {name}: failed in its child process: {out['error']}")
        for peer in PEERS:
            r[peer] = None
        for peer in peers:  # each in a child process, after fastbp's timings
            out = run_peer(peer, name, n, epochs, args.repeats, threads)
            checks.append(peer_check(peer, name, wl, epochs, r["loops loss"], out))
            r[peer] = out.get("seconds") if checks[-1]["ok"] else None
        r["gflops"] = wl.train_flops(n) / r["loops"] / 1e9
        results[name] = r
        rows.append([name, wl.describe(), n, epochs] + [sec(r[s]) for s in SYSTEMS]
                    + [ratio(r[s], r["loops"]) for s in ("sklearn", "blas", "torch")
                       + tuple(PEERS)] + [f"{r['gflops']:.1f}"])
    heading("Seconds per epoch (lower is better); ratios = other / fastbp loops", md)
    print(table(["workload", "net", "samples", "epochs"] + list(SYSTEMS)
                + [s + "/loops" for s in ("sklearn", "blas", "torch") + tuple(PEERS)]
                + ["loops GF/s"], rows, md))
    if results and all(r["torch"] is None for r in results.values()):
        print("torch: not installed, column skipped (pip install '.[torch]')")
    for peer, (module, hint) in PEERS.items():
        if peer not in args.peer_list:
            print(f"{peer}: not run (--peers)")
        elif peer not in peers:
            print(f"{peer}: not installed, column skipped ({hint})")
    if checks:
        print_peer_checks(checks, md)

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
    # each repeat is two interpreters (fastbp's and scikit-learn's), after one warm run of each
    cold_repeats = 1 if args.quick else max(2, args.repeats)
    t_fastbp = subprocess_seconds(common.TINY_FIT_CODE, cold_repeats)
    t_sklearn = subprocess_seconds(common.SKLEARN_TINY_FIT_CODE, cold_repeats)
    print(f"fastbp {sec(t_fastbp)} s, scikit-learn {sec(t_sklearn)} s (interpreter start "
          f"included; median of {cold_repeats}); fastbp/sklearn = "
          f"{ratio(t_fastbp, t_sklearn)}")

    # -- predict_proba ---------------------------------------------------------------
    heading("predict_proba on 1,000 rows and on one row, 784-30-10 logistic net", md)
    Xp, yp = w2.data(w2.quick_samples if args.quick else w2.n_samples)
    Xp, yp = Xp[:1000], yp[:1000]
    ours = w2.fastbp_estimator("loops", max_iter=1, n_jobs=threads).fit(Xp, yp)
    theirs = w2.sklearn_estimator(max_iter=1).fit(Xp, yp)
    reps = 3 if args.quick else 5

    def per_call(est, rows):
        return statistics.median(common.median_seconds(lambda: est.predict_proba(rows), 1, 0.05)
                                 for _ in range(reps))

    for rows in (Xp, Xp[:1]):
        t_ours, t_theirs = per_call(ours, rows), per_call(theirs, rows)
        print(f"{len(rows):,} row{'s' if len(rows) > 1 else ''}: fastbp {t_ours * 1e6:.3g} us, "
              f"scikit-learn {t_theirs * 1e6:.3g} us per call; "
              f"sklearn/fastbp = {ratio(t_theirs, t_ours)}")
    print()
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
