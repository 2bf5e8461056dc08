"""Team epochs: both cores on mid-sized training steps, one parallel region per epoch.

``engine.train_epoch`` is serial and calls a kernel's parallel twin only when
that call's work reaches ``config.PARALLEL_MIN_WORK`` (about 50-100 us): a
parallel region costs a few microseconds to start and end, too much for kernel
calls of 5-20 us.  So on steps of such calls (a 64-128-64-10 net at batch 64,
~50 us a step) the second core idled.

``train_epoch_team`` runs the same epoch with every worker inside one region
for the whole epoch.  Each step is a fixed list of phases: gather the input
rows and transpose the weights of outer-form layers; each layer's forward, the
last one ending with the output error; each layer's backward (its params and
the error below it), the first one ending with the step's finish (loss, norms,
the stop on a non-finite one, clipping, Adam's rate); the optimizer step.
Each phase has a fixed number of blocks, and the blocks of the whole epoch are
numbered in order (tickets).  A worker takes the next ticket from a shared
counter (``atomic.claim``), waits until the phases before it are finished
(``atomic.finished``), runs its block and counts it arrived (``atomic.done``);
the last block of a phase to arrive runs the phase's serial tail, if any, and
publishes the phase finished (``atomic.publish``).  Within a phase, blocks write
disjoint memory; phases are ordered by the wait.

* No deadlock with any number of threads: a worker waits only for blocks that
  were claimed before its own, by workers that are running them.  One thread
  runs every block in order and never waits.
* The same bits for any number of threads, and those of ``engine.train_epoch``
  (the ``loops-serial`` engine): a block is a block of the serial kernels
  (``forward_block``, ``params_block``, ``backward_input_block``, the
  optimizer's element-wise step on a slice), computing what it computes
  whoever runs it; the sums across blocks (loss, norms) are made by one tail
  in the serial engine's order.
* A phase costs a hand-over between cores (~0.3-0.5 us here) and every block a
  claim; a worker also waits for the phase's last block.  Used only for steps
  of at least ``config.TEAM_MIN_WORK`` multiply-adds, on chain networks and
  dense input without dropout, with 2 threads or more (``network.Network.team_for``);
  elsewhere the engine runs as before.

Arguments as ``engine.train_epoch``'s (``data``, ``order``, ``state``,
``context``).
"""
import numpy as np
from numba import prange

from .atomic import MAX_WORKERS, claim, done, finished, publish, spin_pause, yield_cpu
from .codes import (HP_ALPHA, HP_BETA1, HP_BETA2, HP_CLIP, HP_EPS, HP_HUBER, HP_LR,
                    HP_MOMENTUM, HP_PROB_EPS, IP_BATCH, IP_LOSS, IP_MEAN_OUT, IP_NESTEROV,
                    IP_OPT, IP_STEP, L_ACT, L_AOFF, L_DOFF, L_NIN, L_NOUT, OPT_ADAM, OPT_NONE,
                    OPT_SGD, ST_BATCHES, ST_DIVERGED, ST_GNORM, ST_LOSS, ST_SAMPLES)
from .engine import (PREFETCH_MAX_BYTES, _borrow_context, _borrow_data, _layer_params, _norms,
                     _rows, _weight_sum)
from .jit import jit
from .kernels_loop import (TILE_ROWS, backward_input_block, dense_backward_params_serial,
                           dot_units, forward_block, forward_outer, gather_rows_serial,
                           optimizer_step_serial, output_delta, params_block, prefetch_rows,
                           scale_vector, transpose_into)
from .views import borrowed, matrix_view

# Phase kinds (column P_KIND of the phase table) and the serial tails a phase's last
# block runs (P_TAIL): the output error after the last forward, the step's finish
# after the first layer's backward.
K_INPUT, K_FORWARD, K_BACKWARD, K_STEP = range(4)
T_NONE, T_DELTA, T_FINISH = range(3)
# Phase table columns: kind, layer row, first ticket of the phase within a step, end, tail.
P_KIND, P_LAYER, P_START, P_END, P_TAIL = range(5)
# Slots of the counters (int64, each on its own 64-byte line): tickets claimed, blocks
# arrived (done), the last finished phase's end ticket, the stop flag.
C_TICKET, C_ARRIVE, C_DONE, C_ABORT = 0, 8, 16, 24
N_COUNTERS = 32
# Slots of the step's shared numbers (float64), written by the serial tails.
F_SKIP, F_SCALE, F_DATA, F_LR, F_CLIP = range(5)
# Samples per forward and gather block (``forward_block``), per error block
# (``backward_input_block``); parameters per optimizer block; multiply-adds per
# params block (at least: a whole tile of TILE_ROWS units).  A phase's blocks are
# claimed in turn, so its last worker waits up to a block's time: small blocks
# balance, but each costs a claim.
FORWARD_ROWS = 16
INPUT_ROWS = 12
STEP_BLOCK = 2048
PARAMS_BLOCK_WORK = 1 << 17
# Waits spin (``spin_pause``, ~40 ns each here) this many times, then yield the core
# at each turn: with more threads than free cores, the worker waited for may be
# the one that needs it.
SPIN_LIMIT = 1000


@jit(inline="always")
def _cdiv(a, b):
    return (a + b - 1) // b


@jit(inline="always")
def _team_rows(bs, n_in, n_out):
    """Units per params block of a layer (n_out, n_in) at ``bs`` samples: a multiple of
    the register tile's TILE_ROWS, so that every tile is one of the serial kernel's
    (its blocks of ``params_rows`` units are multiples of it too: the same bits),
    with at least PARAMS_BLOCK_WORK multiply-adds."""
    per_tile = max(1, bs * n_in * TILE_ROWS)
    return TILE_ROWS * max(1, _cdiv(PARAMS_BLOCK_WORK, per_tile))


@jit
def _phases(layers, p, bs, shuffled, n_outer, opt):
    """The phase table (n_phases, 5) of one step of ``bs`` samples: kind, layer row,
    first and end ticket (numbered from 0 within the step), tail.

    layers: the engine's layer table; p: parameters; ``shuffled``: input rows are
    gathered; n_outer: layers whose forward takes the transposed weights.
    """
    n_layers = layers.shape[0]
    n_phases = 2 * n_layers + 2
    table = np.empty((n_phases, 5), np.int64)
    k = 0
    t = 0
    for q in range(n_phases):
        tail = T_NONE
        if q == 0:
            kind, l, nb = K_INPUT, 0, (_cdiv(bs, FORWARD_ROWS) if shuffled else 0) + n_outer
        elif q <= n_layers:
            kind, l, nb = K_FORWARD, q - 1, _cdiv(bs, FORWARD_ROWS)
            if q == n_layers:
                tail = T_DELTA
        elif q <= 2 * n_layers:
            l = 2 * n_layers - q  # last layer first
            n_out = layers[l, L_NOUT]
            nb = _cdiv(n_out, _team_rows(bs, layers[l, L_NIN], n_out))
            if l > 0:
                nb += _cdiv(bs, INPUT_ROWS)
            kind = K_BACKWARD
            if l == 0:
                tail = T_FINISH
        else:
            kind, l, nb = K_STEP, 0, (_cdiv(p, STEP_BLOCK) if opt != OPT_NONE else 0)
        if nb == 0:
            continue
        table[k, P_KIND] = kind
        table[k, P_LAYER] = l
        table[k, P_START] = t
        t += nb
        table[k, P_END] = t
        table[k, P_TAIL] = tail
        k += 1
    return table[:k]


@jit
def _scratch_offsets(theta, layers, bs):
    """Per layer row (n_layers, 2): the offset of its transposed weights (n_in, n_out)
    in the team's scratch, or -1 when its forward takes the dot form at ``bs``
    samples (``forward_outer``); and of its params kernel's row sums (2 n_out).
    Returns (offsets, scratch size)."""
    n_layers = layers.shape[0]
    offsets = np.empty((n_layers, 2), np.int64)
    off = 0
    for l in range(n_layers):
        w, _ = _layer_params(theta, layers, l)
        offsets[l, 0] = -1
        if forward_outer(w, bs):
            offsets[l, 0] = off
            off += w.shape[0] * w.shape[1]
    for l in range(n_layers):
        offsets[l, 1] = off
        off += 2 * layers[l, L_NOUT]
    return offsets, off


@jit(inline="always")
def _input_rows(X, order, start, m, work, d):
    """The step's input block: a view of X, or the gathered rows in work[0:]."""
    if order.shape[0] == 0:
        return X[start:start + m]
    return _rows(work, 0, m, d)


@jit
def _run_block(kind, l, nb, start, m, data, order, state, context, team):
    """Block nb of phase (kind, layer row l) of the step of rows start..start+m-1."""
    X, Y, sw = data
    theta, grad, m1, m2 = state
    layers, work, hp, ip, stats = context
    _, offsets, scratch, shared, counters = team
    d = X.shape[1]
    n_layers = layers.shape[0]
    last = n_layers - 1
    if kind == K_INPUT:
        n_gather = _cdiv(ip[IP_BATCH], FORWARD_ROWS) if order.shape[0] > 0 else 0
        if nb < n_gather:
            r0 = FORWARD_ROWS * nb
            r1 = min(r0 + FORWARD_ROWS, m)
            if r0 < r1:
                xb = _rows(work, 0, m, d)
                gather_rows_serial(X, order, start + r0, xb[r0:r1])
            return
        k = nb - n_gather  # the k-th layer with transposed weights
        for q in range(n_layers):
            if offsets[q, 0] >= 0:
                if k == 0:
                    w, _ = _layer_params(theta, layers, q)
                    transpose_into(w, matrix_view(scratch, offsets[q, 0], w.shape[1],
                                                  w.shape[0]))
                    return
                k -= 1
        return
    if kind == K_FORWARD:
        if FORWARD_ROWS * nb >= m:
            return
        w, b = _layer_params(theta, layers, l)
        n_in = layers[l, L_NIN]
        n_out = layers[l, L_NOUT]
        if l == 0:
            a_prev = _input_rows(X, order, start, m, work, d)
        else:
            a_prev = _rows(work, layers[l - 1, L_AOFF], m, n_in)
        a = _rows(work, layers[l, L_AOFF], m, n_out)
        outer = forward_outer(w, m)
        wt = matrix_view(scratch, max(offsets[l, 0], 0), n_in if outer else 0, n_out)
        forward_block(w, b, a_prev, wt, outer, dot_units(w), layers[l, L_ACT], a, nb)
    elif kind == K_BACKWARD:
        if shared[F_SKIP] != 0.0:  # the step's sample weights sum to 0: no update
            return
        n_in = layers[l, L_NIN]
        n_out = layers[l, L_NOUT]
        w, _ = _layer_params(theta, layers, l)
        delta = _rows(work, layers[l, L_DOFF], m, n_out)
        if l > 0:
            a_prev = _rows(work, layers[l - 1, L_AOFF], m, n_in)
        else:
            a_prev = _input_rows(X, order, start, m, work, d)
        rows = _team_rows(ip[IP_BATCH], n_in, n_out)
        n_pb = _cdiv(n_out, rows)
        if nb < n_pb:
            dw, db = _layer_params(grad, layers, l)
            wsq = scratch[offsets[l, 1]:offsets[l, 1] + 2 * n_out]
            if m == 1:  # the serial kernel's fused stochastic path, whole, in block 0
                if nb == 0:
                    dense_backward_params_serial(w, delta, a_prev, hp[HP_ALPHA],
                                                 shared[F_SCALE], np.bool_(False), dw, db, wsq)
            else:
                params_block(w, delta, a_prev, hp[HP_ALPHA], shared[F_SCALE], False, dw, db,
                             wsq, rows, nb)
            return
        nb -= n_pb
        if INPUT_ROWS * nb < m:
            delta_prev = _rows(work, layers[l - 1, L_DOFF], m, n_in)
            backward_input_block(w, delta, a_prev, layers[l - 1, L_ACT], False, delta_prev,
                                 nb)
    else:  # K_STEP
        if shared[F_SKIP] != 0.0:
            return
        k0 = STEP_BLOCK * nb
        k1 = min(k0 + STEP_BLOCK, theta.shape[0])
        if shared[F_CLIP] > 0.0:
            scale_vector(grad[k0:k1], shared[F_CLIP])
        opt = ip[IP_OPT]
        beta1 = hp[HP_MOMENTUM] if opt == OPT_SGD else hp[HP_BETA1]
        optimizer_step_serial(opt, theta[k0:k1], grad[k0:k1], m1[k0:min(k1, m1.shape[0])],
                              m2[k0:min(k1, m2.shape[0])], shared[F_LR], beta1, hp[HP_BETA2],
                              hp[HP_EPS], ip[IP_NESTEROV] != 0)


@jit
def _output_error(start, m, data, order, context, shared):
    """The tail of the last forward phase: the step's output error (``output_delta``),
    its loss sum and 1 / sum of weights, or the skip flag when the weights sum to
    0; then a prefetch of the next step's rows (as ``engine.train_epoch``)."""
    X, Y, sw = data
    layers, work, hp, ip, _ = context
    last = layers.shape[0] - 1
    swsum = _weight_sum(sw, (order, start, m))
    if swsum > 0.0:
        n_out = layers[last, L_NOUT]
        out = _rows(work, layers[last, L_AOFF], m, n_out)
        delta = _rows(work, layers[last, L_DOFF], m, n_out)
        shared[F_DATA] = output_delta(out, Y, sw, order, start, ip[IP_LOSS],
                                      layers[last, L_ACT], hp[HP_HUBER], hp[HP_PROB_EPS],
                                      ip[IP_MEAN_OUT] != 0, delta)
        shared[F_SCALE] = 1.0 / swsum
        shared[F_SKIP] = 0.0
    else:
        shared[F_SKIP] = 1.0
    n = X.shape[0]
    row_bytes = X.shape[1] * X.itemsize + Y.shape[1] * Y.itemsize
    if (order.shape[0] > 0 and ip[IP_BATCH] * row_bytes <= PREFETCH_MAX_BYTES
            and start + m < n):  # the next batch's rows, while this one computes
        m_next = min(ip[IP_BATCH], n - start - m)
        prefetch_rows(X, order, start + m, m_next)
        prefetch_rows(Y, order, start + m, m_next)


@jit
def _finish(m, layers, work, hp, ip, stats, offsets, scratch, shared, counters):
    """The serial end of a step, as ``engine.train_epoch``'s: the loss and gradient
    norms from the row sums (in the serial kernels' order), the stop on a non-finite
    one (``counters[C_ABORT]``), the clip factor and Adam's rate for the step blocks,
    the statistics."""
    if shared[F_SKIP] != 0.0:
        stats[ST_SAMPLES] += m
        return
    n_layers = layers.shape[0]
    norms = _norms(work, layers, ip)
    wsq_total = 0.0
    for l in range(n_layers - 1, -1, -1):
        n_out = layers[l, L_NOUT]
        wsq = scratch[offsets[l, 1]:offsets[l, 1] + 2 * n_out]
        gsq = 0.0
        for j in range(n_out):
            wsq_total += wsq[j]
            gsq += wsq[n_out + j]
        norms[l] = gsq
    swsum = 1.0 / shared[F_SCALE]
    batch_loss = (shared[F_DATA] + 0.5 * hp[HP_ALPHA] * wsq_total) / swsum
    total = 0.0
    for l in range(n_layers):
        total += norms[l]
    if not (np.isfinite(batch_loss) and np.isfinite(total)):
        stats[ST_DIVERGED] = 1.0
        counters[C_ABORT] = 1  # published with the phase's end (``publish``)
        return
    for l in range(n_layers):
        stats[ST_GNORM + l] += np.sqrt(norms[l])
    clip = hp[HP_CLIP]
    shared[F_CLIP] = clip / np.sqrt(total) if clip > 0.0 and total > clip * clip else 0.0
    lr = hp[HP_LR]
    if ip[IP_OPT] == OPT_ADAM:
        ip[IP_STEP] += 1
        t = ip[IP_STEP]
        lr = lr * np.sqrt(1.0 - hp[HP_BETA2] ** t) / (1.0 - hp[HP_BETA1] ** t)
    shared[F_LR] = lr
    stats[ST_LOSS] += batch_loss * m
    stats[ST_BATCHES] += 1.0
    stats[ST_SAMPLES] += m


@jit
def _worker(n, data, order, state, context, team):
    """One worker: claims tickets until the epoch's last, waits for the phases
    before each, runs its block and counts it done (see the module docstring)."""
    phases, _, _, _, counters = team
    bs = context[3][IP_BATCH]
    n_steps = _cdiv(n, bs)
    per_step = phases[phases.shape[0] - 1, P_END]
    while True:
        t = claim(counters)  # counters[C_TICKET] is slot 0
        step = t // per_step
        if step >= n_steps:
            return
        r = t - step * per_step
        q = 0
        while phases[q, P_END] <= r:
            q += 1
        need = step * per_step + phases[q, P_START]
        spins = 0
        while finished(counters, C_DONE) < need:
            if finished(counters, C_ABORT) != 0:
                return
            spins += 1
            if spins < SPIN_LIMIT:
                spin_pause()
            else:  # the worker it waits for may be off its core: let it run
                yield_cpu()
        if finished(counters, C_ABORT) != 0:
            return
        start = step * bs
        m = min(bs, n - start)
        _run_block(phases[q, P_KIND], phases[q, P_LAYER], r - phases[q, P_START], start, m,
                   data, order, state, context, team)
        end = step * per_step + phases[q, P_END]
        if done(counters, C_ARRIVE) + 1 == end:  # the phase's last block: its tail
            tail = phases[q, P_TAIL]
            if tail == T_DELTA:
                _output_error(start, m, data, order, context, team[3])
            elif tail == T_FINISH:
                layers, work, hp, ip, stats = context
                _finish(m, layers, work, hp, ip, stats, team[1], team[2], team[3], counters)
            publish(counters, C_DONE, end)


@jit(parallel=True)
def train_epoch_team(data, order, state, context):
    """``engine.train_epoch`` (same arguments, results and statistics, bit for bit) with
    every step's kernels split into blocks that the threads take in turn, in one
    parallel region for the epoch (see the module docstring).

    Chain networks on dense input without dropout only.
    """
    X, _, Y, sw = _borrow_data(data)
    layers, work, hp, ip, stats = _borrow_context(context)
    order = borrowed(order)
    theta, grad, m1, m2 = state
    theta, grad, m1, m2 = borrowed(theta), borrowed(grad), borrowed(m1), borrowed(m2)
    n_layers = layers.shape[0]
    for l in range(n_layers):
        stats[ST_GNORM + l] = 0.0
    stats[ST_LOSS] = 0.0
    stats[ST_SAMPLES] = 0.0
    stats[ST_DIVERGED] = 0.0
    stats[ST_BATCHES] = 0.0
    n = X.shape[0]
    if n == 0:
        return
    bs = ip[IP_BATCH]
    offsets, size = _scratch_offsets(theta, layers, bs)
    n_outer = 0
    for l in range(n_layers):
        if offsets[l, 0] >= 0:
            n_outer += 1
    phases = _phases(layers, theta.shape[0], bs, order.shape[0] > 0, n_outer, ip[IP_OPT])
    scratch = np.empty(size, X.dtype)
    shared = np.empty(5, np.float64)
    for k in range(5):
        shared[k] = 0.0
    counters = np.empty(N_COUNTERS, np.int64)
    for k in range(N_COUNTERS):
        counters[k] = 0
    # One iteration per possible worker (numba.get_num_threads() would keep this from
    # the cache); each thread's first one runs until the tickets run out, the others
    # find none left.  Numba passes a parallel loop's body arrays, not tuples: they
    # are grouped inside.
    for _ in prange(MAX_WORKERS):
        _worker(n, (X, Y, sw), order, (theta, grad, m1, m2), (layers, work, hp, ip, stats),
                (phases, offsets, scratch, shared, counters))
