"""The network the engine runs, and the one place that assembles the engine's controls.

A :class:`Network` is an architecture bound to a backend and dtype.  From the
model's settings it builds what ``engine`` takes: the layer table with the
workspace offsets, the workspace, ``hp``/``ip`` (slots named in ``codes``) and
``stats``; optimizers hand over their numbers (``Optimizer.engine_settings``)
and never see these vectors.  Input reaches the engine through
:func:`engine_input` (dense C-contiguous rows, or CSR with sorted int64
indices), made in :func:`as_rows` only.
"""
import numba
import numpy as np
import scipy.sparse as sp

from .backends import BACKENDS, get_engine, get_team_epoch
from .codes import (ACTIVATION_CODES, HP_ALPHA, HP_BETA1, HP_BETA2, HP_CLIP, HP_EPS, HP_HUBER,
                    HP_LR, HP_MOMENTUM, HP_PROB_EPS, HP_SIZE, HP_STEP_MAX, HP_STEP_MIN, IP_BATCH,
                    IP_CHUNK, IP_DROP_SEED, IP_DROP_STEP, IP_LOSS, IP_MEAN_OUT, IP_NESTEROV,
                    IP_OPT, IP_PAR_MIN, IP_SIZE, IP_STEP, IP_WSQ_OFF, L_AOFF,
                    L_DOFF, LOSS_CODES, S_DB, SOFTMAX, ST_DATA,
                    ST_GNORM, ST_REG)
from .config import ELEMENTWISE_PAR_SHIFT, TEAM_MIN_ROWS, TEAM_MIN_WORK
from .losses import check_pair
from .params import Layout

__all__ = ["Network", "EngineInput", "engine_input", "as_rows", "engine_array",
           "PREDICT_CHUNK", "Dropout", "with_threads"]

PREDICT_CHUNK = 1024


def engine_array(a, dtype=None):
    """``a`` as the engine takes an array: C-contiguous and writable.

    No copy when it already is one of the requested dtype.  A read-only array
    (a read-only memmap, a pandas copy-on-write frame's values, a broadcast) is
    copied once: Numba types read-only arrays apart and would compile, and
    cache, a second set of every engine function for them.
    """
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def as_rows(X, dtype=None):
    """X as the engine reads it: a CSR matrix with sorted indices, or a C-contiguous,
    writable array (:func:`engine_array`)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype if dtype is not None else X.dtype)
        return X if X.has_sorted_indices else X.sorted_indices()
    return engine_array(X, dtype)


class EngineInput(tuple):
    """(X, Xs) as the engine takes them: dense rows, or CSR triplet with an empty X."""

    __slots__ = ()

    @property
    def n_rows(self):
        indptr = self[1][2]
        return indptr.shape[0] - 1 if indptr.shape[0] else self[0].shape[0]

    @property
    def sparse(self):
        """Whether the rows come as CSR (else dense X)."""
        return self[1][2].shape[0] > 0


def engine_input(X, dtype):
    """Dense C-contiguous X (no copy when it already is) or a CSR matrix, for the engine.

    Sparse input keeps its CSR arrays (indices as int64, sorted); it is never densified.
    """
    if isinstance(X, EngineInput):
        return X
    dtype = np.dtype(dtype)
    X = as_rows(X, dtype)
    if sp.issparse(X):
        Xs = (engine_array(X.data, dtype), engine_array(X.indices, np.int64),
              engine_array(X.indptr, np.int64))
        return EngineInput((np.empty((0, X.shape[1]), dtype=dtype), Xs))
    empty = np.empty(0, dtype=np.int64)
    return EngineInput((X, (np.empty(0, dtype=dtype), empty, empty)))


class Dropout:
    """Inverted dropout of the hidden layers while training: rates and the mask stream.

    ``rates``: one rate per hidden layer (0 <= rate < 1; 0 = kept whole).
    ``seed`` (0 <= seed < 2**63) and ``step`` pick the masks: the engine's mask of
    unit j of hidden layer l for the sample in row r at step t is a pure function
    of (seed, t, r, l, j) (``kernels_loop.dropout_key``).  ``Network.train_epoch``
    uses one step per mini-batch and advances ``step``; ``Network.loss_grad`` uses
    ``step`` as it is (a fixed mask: gradient checks).
    """

    def __init__(self, rates, seed, step=0):
        self.rates = tuple(float(r) for r in rates)
        for r in self.rates:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"dropout rates must be in [0, 1), got {list(self.rates)}")
        self.seed = int(seed)
        self.step = int(step)
        if not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"dropout seed must be in [0, 2**63), got {self.seed}")
        if self.step < 0:
            raise ValueError(f"dropout step must be >= 0, got {self.step}")

    @property
    def active(self):
        """Whether any layer is dropped out."""
        return any(r > 0.0 for r in self.rates)

    def __repr__(self):
        return f"Dropout(rates={list(self.rates)}, seed={self.seed}, step={self.step})"


def _active(dropout):
    return dropout is not None and dropout.active


def with_threads(n_jobs, func, *args, **kwargs):
    """Run ``func`` with the kernels limited to ``n_jobs`` threads (None = all)."""
    if n_jobs is None:
        return func(*args, **kwargs)
    n = int(n_jobs)
    if n < 0:
        n = max(1, numba.config.NUMBA_NUM_THREADS + 1 + n)
    n = min(max(n, 1), numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return func(*args, **kwargs)
    finally:
        numba.set_num_threads(previous)


class Network:
    """A network's architecture bound to a backend and dtype.

    ``sizes`` = [n_features, hidden..., n_outputs]; ``hidden`` = activation names
    per hidden layer; ``output`` = output activation name; ``loss`` = loss name;
    ``sources`` = the source layers of layers 1..H+1
    (``params.normalize_connections``; None = a chain).
    """

    def __init__(self, sizes, hidden, output, loss, dtype, backend="loops", huber_delta=1.0,
                 mean_outputs=False, sources=None):
        codes = [ACTIVATION_CODES[a] for a in hidden] + [ACTIVATION_CODES[output]]
        if SOFTMAX in codes[:-1]:
            raise ValueError("softmax is only available as the output activation")
        self.loss_code = LOSS_CODES[loss]
        check_pair(self.loss_code, codes[-1])
        self.layout = Layout(sizes, codes, sources)
        self.dtype = np.dtype(dtype)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        self.backend = backend
        self._engine = None  # bound at first use: loading a model starts no threads
        self.hp = np.zeros(HP_SIZE + len(sizes) - 1)  # then a dropout rate per layer row
        self.hp[HP_HUBER] = huber_delta
        self.hp[HP_PROB_EPS] = np.finfo(self.dtype).eps
        self.mean_outputs = bool(mean_outputs)
        # Network(*args) builds this network again (a dask worker's copy)
        self.args = (tuple(int(s) for s in sizes), tuple(hidden), output, loss, self.dtype.str,
                     backend, float(huber_delta), self.mean_outputs,
                     None if self.layout.chain else self.layout.sources)
        self._work = {}
        self._plans = {}

    @property
    def engine(self):
        """The backend's engine functions (``backends.get_engine``)."""
        if self._engine is None:
            self._engine = get_engine(self.backend)
        return self._engine

    def engine_for(self, cap, ip, X, dropout=False):
        """The engine variant (``backends.Engine.variant``) for blocks of up to
        ``cap`` rows of ``X`` (an :class:`EngineInput`: CSR kernels compiled in only
        for CSR input) under the controls ``ip``, with dropout compiled in when
        ``dropout`` (a rate > 0: only then).

        Parallel when some kernel call can reach the threshold ``ip[IP_PAR_MIN]``:
        the engine picks a kernel's parallel twin when a call's work
        (multiply-adds ``cap * n_in * n_out`` of a weight block, chain or
        shortcut) reaches it, or an element-wise pass's (``cap * n_features``
        gathered inputs; the optimizer's ``n_params``) reaches its
        ``>> config.ELEMENTWISE_PAR_SHIFT``, so below it everywhere the serial variant runs
        the same kernels.  With shortcuts only when the network has shortcut
        blocks.  Results are bitwise those of the full engine; the variant just
        never compiles the kernels these calls cannot reach.
        """
        return self._variant(cap, ip, X.sparse, dropout)

    def team_for(self, cap, ip, X, dropout=None):
        """The team epoch (``team.train_epoch_team``) for mini-batches of ``cap`` rows of
        ``X`` when it applies, else None: the ``loops`` backend, a chain network,
        dense input, no dropout, and steps that no kernel call parallelises (the
        serial variant, ``_variant``) of at least ``config.TEAM_MIN_ROWS`` samples
        and ``config.TEAM_MIN_WORK`` multiply-adds forward, with 2 threads or more.
        The results are bitwise those of ``engine.train_epoch`` (so one thread runs
        that, without the team's claims)."""
        if (self.backend != "loops" or not self.layout.chain or X.sparse or _active(dropout)
                or cap < TEAM_MIN_ROWS or numba.get_num_threads() < 2):
            return None
        sizes = self.layout.sizes
        if cap * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) < TEAM_MIN_WORK:
            return None
        if self._variant(cap, ip, False).name != "loops-serial":
            return None
        return get_team_epoch()

    def _variant(self, cap, ip, sparse, dropout=False):
        """``engine_for`` for dense or CSR (``sparse``) input."""
        sizes = self.layout.sizes
        work = max([cap * a * b for a, b in zip(sizes[:-1], sizes[1:])]
                   + [cap * sizes[s] * sizes[t] for s, t in self.layout.skip_keys])
        elements = max(cap * sizes[0], self.layout.n_params)
        par = (work >= ip[IP_PAR_MIN]
               or elements >= int(ip[IP_PAR_MIN]) >> ELEMENTWISE_PAR_SHIFT)
        return self.engine.variant(par, not self.layout.chain, dropout, sparse)

    # -- the engine's controls --------------------------------------------------
    def _new_buffers(self, cap):
        """(work, table, ip) for blocks of up to ``cap`` rows (``_controls``, and a
        workspace of its size)."""
        table, ip, size = self._controls(cap)
        return self._new_work(size, ip), table, ip

    def _new_work(self, size, ip):
        """A workspace of ``size`` numbers for the controls ``ip``: every block is
        written before it is read, but the shortcut kernels' bias scratch (only added
        to, never read), which is zeroed."""
        work = np.empty(size, dtype=self.dtype)
        if ip.shape[0] > IP_SIZE:
            db = ip[IP_SIZE + S_DB]
            work[db:db + max(self.layout.sizes[1:])] = 0.0
        return work

    def _controls(self, cap):
        """(table, ip, workspace size) for blocks of up to ``cap`` rows.

        ``work`` is flat with blocks: gathered inputs (cap, n_in); per layer
        activations and deltas (cap, n_out); at ``ip[IP_WSQ_OFF]`` the squared
        gradient norm of each block (n_blocks), then a scratch of 2 max(n_units)
        for the params kernels' per-row sums; with shortcut blocks, a scratch row of
        max(n_units) for the bias sums their kernels compute.  ``table`` is the
        layer table with the offsets into it; ``ip`` the engine's control vector,
        followed by the shortcut-block table (``codes.S_*``).
        """
        layout = self.layout
        table = layout.table.copy()
        off = cap * layout.sizes[0]
        for l in range(layout.n_layers):
            table[l, L_AOFF] = off
            off += cap * layout.sizes[l + 1]
            table[l, L_DOFF] = off
            off += cap * layout.sizes[l + 1]
        skips = layout.skips.copy()
        ip = np.zeros(IP_SIZE + skips.size, dtype=np.int64)
        ip[IP_WSQ_OFF] = off
        ip[IP_BATCH] = cap  # train_epoch's mini-batch
        ip[IP_CHUNK] = cap  # loss_grad's and predict's block of rows
        ip[IP_PAR_MIN] = self.engine.par_min
        ip[IP_LOSS] = self.loss_code
        ip[IP_MEAN_OUT] = int(self.mean_outputs)
        off += layout.n_blocks + 2 * max(layout.sizes[1:])
        if skips.shape[0]:
            skips[:, S_DB] = off
            off += max(layout.sizes[1:])
            ip[IP_SIZE:] = skips.ravel()
        return table, ip, off

    def buffers(self, cap):
        """(work, table, ip) for batches of ``cap`` rows, made once per cap."""
        if cap not in self._work:
            self._work = {cap: self._new_buffers(cap)}  # keep one: bounded memory
        return self._work[cap]

    def release(self):
        """Drop the training workspace (a fitted model keeps its Network for predict)."""
        self._work = {}

    def stats(self):
        """A zeroed statistics vector for the engine."""
        return np.zeros(ST_GNORM + self.layout.n_blocks)

    def context(self, cap, alpha=0.0, clip=0.0, optimizer=None, dropout=None):
        """The engine's ``context`` (layers, work, hp, ip, stats) for blocks of ``cap`` rows.

        ``alpha`` the L2 penalty, ``clip`` the gradient-norm clip (0 = off), and
        the optimizer's numbers (``Optimizer.engine_settings``) when training;
        ``dropout`` a :class:`Dropout` or None (rates 0).
        """
        work, table, ip = self.buffers(cap)
        hp = self.hp
        hp[HP_ALPHA] = alpha
        hp[HP_CLIP] = clip
        hp[HP_SIZE:] = 0.0
        ip[IP_DROP_SEED] = ip[IP_DROP_STEP] = 0
        if dropout is not None:
            n_hidden = self.layout.n_layers - 1
            if len(dropout.rates) != n_hidden:
                raise ValueError(f"dropout has {len(dropout.rates)} rates but the network "
                                 f"has {n_hidden} hidden layers")
            hp[HP_SIZE:HP_SIZE + n_hidden] = dropout.rates
            ip[IP_DROP_SEED] = dropout.seed
            ip[IP_DROP_STEP] = dropout.step
        if optimizer is not None:
            code, lr, momentum, beta_1, beta_2, eps, nesterov, step = \
                optimizer.engine_settings()
            hp[HP_LR] = lr
            hp[HP_MOMENTUM] = momentum
            hp[HP_BETA1] = beta_1
            hp[HP_BETA2] = beta_2
            hp[HP_EPS] = eps
            ip[IP_OPT] = code
            ip[IP_NESTEROV] = int(nesterov)
            ip[IP_STEP] = step
            hp[HP_STEP_MIN], hp[HP_STEP_MAX] = optimizer.step_bounds
        return table, work, hp, ip, self.stats()

    # -- the engine's entry points ----------------------------------------------
    def train_epoch(self, theta, grad, opt, X, Y, sw, order, batch_size, alpha, clip,
                    dropout=None):
        """One compiled epoch of mini-batches over ``order``; returns the engine's stats.

        Updates ``theta`` and the optimizer's moments in place and takes the
        step counter the engine advanced; with ``dropout`` (a :class:`Dropout`),
        its masks' step counter too (one step per mini-batch).
        """
        X = engine_input(X, self.dtype)
        context = self.context(batch_size, alpha, clip, opt, dropout)
        data = (X[0], X[1], engine_array(Y), engine_array(sw))
        epoch = self.team_for(batch_size, context[3], X, dropout)
        if epoch is None:
            epoch = self.engine_for(batch_size, context[3], X, _active(dropout)).train_epoch
        epoch(data, order, (theta, grad, opt.m1, opt.m2), context)
        opt.t = int(context[3][IP_STEP])
        if _active(dropout):
            dropout.step = int(context[3][IP_DROP_STEP])
        return context[4]

    def loss_grad(self, theta, X, Y, sw, alpha, grad=None, chunk=PREDICT_CHUNK, dropout=None):
        """(data term, L2 term, flat gradient) of the objective at ``theta``; with
        ``dropout`` (a :class:`Dropout`), of the network under its masks at its
        ``step`` (the same masks for every call: a fixed function of theta)."""
        if grad is None:
            grad = np.empty_like(theta)
        X = engine_input(X, self.dtype)
        cap = min(chunk, max(1, X.n_rows))
        context = self.context(cap, alpha, dropout=dropout)
        data = (X[0], X[1], engine_array(Y), engine_array(sw))
        self.engine_for(cap, context[3], X, _active(dropout)).loss_grad(data, theta, grad,
                                                                        context)
        stats = context[4]
        return stats[ST_DATA], stats[ST_REG], grad

    def rprop_epoch(self, theta, grad, opt, X, Y, sw, alpha, chunk=PREDICT_CHUNK):
        """One full-batch iRPROP- iteration (``engine.rprop_epoch``); returns the
        engine's stats (objective at theta before the step, gradient norms)."""
        X = engine_input(X, self.dtype)
        cap = min(chunk, max(1, X.n_rows))
        context = self.context(cap, alpha, 0.0, opt)
        data = (X[0], X[1], engine_array(Y), engine_array(sw))
        self.engine_for(cap, context[3], X).rprop_epoch(data, (theta, grad, opt.m1, opt.m2),
                                                        context)
        return context[4]

    def _predict_plan(self, cap, sparse):
        """(table, ip, workspace size, stats, engine variant) for predicting blocks of
        up to ``cap`` rows of dense or CSR (``sparse``) input.

        Made once per (cap, sparse) and shared by every call: ``engine.predict``
        only reads the table and ip, and never touches stats.  A one-row predict
        then costs the engine call and one workspace allocation.  A few plans are
        kept (bounded memory).
        """
        key = (cap, sparse)
        plan = self._plans.get(key)
        if plan is None:
            table, ip, size = self._controls(cap)
            plan = (table, ip, size, self.stats(), self._variant(cap, ip, sparse))
            if len(self._plans) >= 8:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def predict(self, theta, X, chunk=PREDICT_CHUNK, n_jobs=None):
        """Output activations (n, n_outputs) for X, with the kernels limited to
        ``n_jobs`` threads (``with_threads``) when the call can reach a parallel one.

        Each call takes a workspace of its own (one allocation per call, none
        per chunk): a fitted model keeps its Network, and may predict from
        several threads at once; nothing but the read-only controls
        (``_predict_plan``) stays allocated between calls.
        """
        X = engine_input(X, self.dtype)
        n = X.n_rows
        out = np.empty((n, self.layout.sizes[-1]), dtype=self.dtype)
        if n:
            table, ip, size, stats, engine = self._predict_plan(min(chunk, n), X.sparse)
            context = (table, self._new_work(size, ip), self.hp, ip, stats)
            if engine.name == "loops" and n_jobs is not None:
                with_threads(n_jobs, engine.predict, X[0], X[1], theta, context, out)
            else:  # a serial variant runs no threads to limit
                engine.predict(X[0], X[1], theta, context, out)
        return out
