"""Team epochs: both cores on mid-sized training steps, one parallel region per epoch.

``engine.train_epoch`` is serial and calls a kernel's parallel twin only when
that call's work reaches ``config.PARALLEL_MIN_WORK`` (about 50-100 us): a
parallel region costs a few microseconds to start and end, too much for kernel
calls of 5-20 us.  So on steps of such calls (a 64-128-64-10 net at batch 64,
~50 us a step) the second core idled.

``train_epoch_team`` runs the same epoch with every worker inside one region
for the whole epoch.  A step is three phases, each a fixed number of blocks:

1. rows: per block of samples, everything that needs only those samples:
   gather the input rows, the forward pass through every layer, the output
   error, and the error propagated down through every layer
   (``delta^{l-1} = g'(z^{l-1}) * (W^l)^T delta^l`` is row by row);
2. params: per block of units of any layer, that layer's weight and bias
   gradients (sums over all the samples);
3. step: per block of parameters, the optimizer's update.

The blocks of the whole epoch are numbered in order (tickets).  A worker takes
the next ticket from a shared counter (``atomic.claim``), waits until the phases
before it are finished (``atomic.finished``), runs its block and counts it
arrived (``atomic.done``); the last block of a phase to arrive runs the phase's
serial tail and publishes the phase finished (``atomic.publish``).  The tails:
after the rows, the sums of the sample weights and of the losses; after the
params, the step's finish (the loss, the gradient norms, the stop on a
non-finite one, clipping, Adam's rate); after the step, the transposed weights
of the outer-form layers for the next step's forward.

* No deadlock with any number of threads: a worker waits only for blocks that
  were claimed before its own, by workers that are running them.  One thread
  runs every block in order and never waits.
* The same bits for any number of threads, and those of ``engine.train_epoch``
  (the ``loops-serial`` engine): the blocks run the serial kernels' code
  (``forward_rows`` and ``outer_rows``, whose rows come out alike in any tile,
  ``params_block``, the element-wise optimizer step on a slice), each computing
  what it computes whoever runs it; the sums across blocks (loss, norms) are
  made by one tail, in the serial engine's order.
* A phase costs a hand-over between cores (~0.3-0.5 us here), every block a
  claim, and what one core wrote the other must fetch (the weights after the
  step, the activations and errors after the rows); a worker may also wait for
  the phase's last block.  So phases have about two blocks each, and team
  epochs serve only steps of at least ``config.TEAM_MIN_WORK`` multiply-adds,
  on chain networks and dense input without dropout, with 2 threads or more
  (``network.Network.team_for``); elsewhere the engine runs as before.

Arguments as ``engine.train_epoch``'s (``data``, ``order``, ``state``,
``context``).
"""
import numpy as np
from numba import prange

from .activations import derivative_row
from .atomic import MAX_WORKERS, claim, done, finished, publish, spin_pause, yield_cpu
from .codes import (HP_ALPHA, HP_BETA1, HP_BETA2, HP_EPS, HP_HUBER, HP_MOMENTUM, HP_PROB_EPS,
                    IP_BATCH, IP_LOSS, IP_MEAN_OUT, IP_NESTEROV, IP_OPT, L_ACT, L_AOFF, L_DOFF,
                    L_NIN, L_NOUT, OPT_NONE, OPT_SGD, ST_BATCHES, ST_DIVERGED, ST_GNORM, ST_LOSS,
                    ST_SAMPLES)
from .engine import (PREFETCH_MAX_BYTES, _backward_views, _borrow_context, _borrow_data,
                     _clip_factor, _layer_params, _norms, _rows, _step_rate, _weight_sum)
from .jit import jit
from .kernels_loop import (TILE_ROWS, dense_backward_params_serial, dot_units, forward_outer,
                           forward_rows, gather_rows_serial, optimizer_step_serial,
                           outer_rows, output_delta, params_block, prefetch_rows, scale_vector,
                           transpose_into)
from .views import borrowed, matrix_view

# The phases of a step, in order.
K_ROWS, K_PARAMS, K_STEP = range(3)
# Slots of the counters (int64, each on its own 64-byte line): tickets claimed, blocks
# arrived (done), the last finished phase's end ticket, the stop flag.
C_TICKET, C_ARRIVE, C_DONE, C_ABORT = 0, 8, 16, 24
N_COUNTERS = 32
# Slots of the step's shared numbers (float64), written by the serial tails.
F_SKIP, F_SCALE, F_DATA, F_LR, F_CLIP = range(5)
# Blocks per phase: about ROW_BLOCKS rows blocks of at least ROWS samples (a
# multiple of 4: ``forward_rows``' tiles start there), params blocks of about
# 1 / PARAMS_BLOCKS of the step's params work (at least PARAMS_MIN_WORK
# multiply-adds and a whole tile of TILE_ROWS units), STEP_BLOCKS step blocks.  Few
# blocks won on 2 cores, in-process against the serial engine (64-128-64-10 at batch
# 64, 50-100-1 at batch 200): 4 rows, 4 params and 8 step blocks or more gave 1.2-1.3x,
# 2 of each 1.33-1.45x.  Every block reads every weight of its layers (rows) or all
# the samples' errors and inputs (params), and what one core writes the other must
# fetch; balance matters less.  How the rows and units are split never changes the
# bits, so these may be changed freely (say, for more cores).
ROWS = 16
ROW_BLOCKS = 2
STEP_BLOCKS = 2
PARAMS_BLOCKS = 2
PARAMS_MIN_WORK = 1 << 14
# Waits spin (``spin_pause``, ~40 ns each here) this many times, then yield the core
# at each turn: with more threads than free cores, the worker waited for may be
# the one that needs it.  Two 2-thread W6 fits at once on 2 cores took 0.32 s each
# with 1,000 spins, 0.29 s with 100 (one serial fit each: 0.25-0.26 s); alone, 0.18-0.19 s.
SPIN_LIMIT = 100


@jit(inline="always")
def _cdiv(a, b):
    return (a + b - 1) // b


@jit(inline="always")
def _block_rows(bs):
    """Samples per rows block at ``bs`` samples a step: about bs / ROW_BLOCKS, a
    multiple of 4, at least ROWS (each block reads every layer's weights)."""
    return max(ROWS, 4 * _cdiv(_cdiv(bs, ROW_BLOCKS), 4))


@jit(inline="always")
def _step_size(p):
    """Parameters per step block: p / STEP_BLOCKS, a multiple of 64."""
    return 64 * _cdiv(_cdiv(p, STEP_BLOCKS), 64)


@jit
def _phases(layers, p, bs, opt):
    """Blocks per phase of a step of ``bs`` samples: (rows, params, step) as an
    int64 array of the phases' end tickets (numbered from 0 within the step); and
    per layer row (n_layers, 2) its params blocks' first ticket, counted from the
    phase's start, and units per block.  p: parameters; no step phase without an
    optimizer.

    Units per params block: a multiple of the register tile's TILE_ROWS, so that
    every tile is one of the serial kernel's (its blocks of ``params_rows`` units
    are multiples of it too: the same bits), of about 1 / PARAMS_BLOCKS of the
    step's params work and at least PARAMS_MIN_WORK multiply-adds.
    """
    n_layers = layers.shape[0]
    work = 0
    for l in range(n_layers):
        work += bs * layers[l, L_NIN] * layers[l, L_NOUT]
    block_work = max(PARAMS_MIN_WORK, work // PARAMS_BLOCKS)
    params = np.empty((n_layers, 2), np.int64)
    n_params = 0
    for l in range(n_layers):
        per_tile = max(1, bs * layers[l, L_NIN] * TILE_ROWS)
        rows = TILE_ROWS * max(1, _cdiv(block_work, per_tile))
        params[l, 0] = n_params
        params[l, 1] = rows
        n_params += _cdiv(layers[l, L_NOUT], rows)
    ends = np.empty(3, np.int64)
    ends[K_ROWS] = _cdiv(bs, _block_rows(bs))
    ends[K_PARAMS] = ends[K_ROWS] + n_params
    ends[K_STEP] = ends[K_PARAMS] + (_cdiv(p, _step_size(p)) if opt != OPT_NONE else 0)
    return ends, params


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


@jit
def _transpose_all(theta, layers, offsets, scratch):
    """The transposed weights of every outer-form layer (``dense_forward``'s wt)."""
    for l in range(layers.shape[0]):
        if offsets[l, 0] >= 0:
            w, _ = _layer_params(theta, layers, l)
            transpose_into(w, matrix_view(scratch, offsets[l, 0], w.shape[1], w.shape[0]))


@jit(inline="always")
def _input_rows(X, order, start, m, work, d):
    """The step's input block: a view of X, or the gathered rows in work[0:]."""
    if order.shape[0] == 0:
        return X[start:start + m]
    return _rows(work, 0, m, d)


@jit
def _rows_block(nb, start, m, data, order, theta, context, offsets, scratch):
    """Rows block nb (samples r0 = ``_block_rows`` nb .. r1 - 1): gather, forward through every
    layer (``forward_rows``), output error (``output_delta``), and the error of
    every hidden layer, ``delta_ni <- g'(z_ni) sum_j
    w_ji delta_nj`` (``outer_rows`` and ``derivative_row``, as
    ``dense_backward_input``)."""
    X, Y, sw = data
    layers, work, hp, ip, _ = context
    d = X.shape[1]
    rows = _block_rows(ip[IP_BATCH])
    r0 = rows * nb
    r1 = min(r0 + rows, m)
    if r0 >= r1:
        return
    if order.shape[0] > 0:
        xb = _rows(work, 0, m, d)
        gather_rows_serial(X, order, start + r0, xb[r0:r1])
    a_prev = _input_rows(X, order, start, m, work, d)
    n_layers = layers.shape[0]
    for l in range(n_layers):
        w, b = _layer_params(theta, layers, l)
        n_out = layers[l, L_NOUT]
        a = _rows(work, layers[l, L_AOFF], m, n_out)
        outer = forward_outer(w, m)
        wt = matrix_view(scratch, max(offsets[l, 0], 0), w.shape[1] if outer else 0, n_out)
        forward_rows(w, b, a_prev, wt, outer, dot_units(w), layers[l, L_ACT], a, r0, r1)
        a_prev = a
    last = n_layers - 1
    n_out = layers[last, L_NOUT]
    delta = _rows(work, layers[last, L_DOFF], m, n_out)
    _output_error(a_prev[r0:r1], Y, sw, order, start + r0, context, delta[r0:r1])
    for l in range(last, 0, -1):
        w, _ = _layer_params(theta, layers, l)
        n_in = layers[l, L_NIN]
        delta = _rows(work, layers[l, L_DOFF], m, layers[l, L_NOUT])
        a_below = _rows(work, layers[l - 1, L_AOFF], m, n_in)
        delta_below = _rows(work, layers[l - 1, L_DOFF], m, n_in)
        outer_rows(delta.T, w, delta_below, r0, r1, False)
        act = layers[l - 1, L_ACT]
        for n in range(r0, r1):
            derivative_row(a_below[n], delta_below[n], act)


@jit(inline="always")
def _output_error(out, Y, sw, order, start, context, delta):
    """``output_delta`` of the output rows ``out`` (samples from ``start`` on); returns
    their summed loss."""
    layers, _, hp, ip, _ = context
    return output_delta(out, Y, sw, order, start, ip[IP_LOSS], layers[layers.shape[0] - 1, L_ACT],
                        hp[HP_HUBER], hp[HP_PROB_EPS], ip[IP_MEAN_OUT] != 0, delta)


@jit
def _rows_tail(start, m, data, order, context, shared):
    """After the rows phase: the step's 1 / sum of weights and loss sum, or the skip
    flag when the weights sum to 0; then a prefetch of the next step's rows (as
    ``engine.train_epoch``).  The loss sum is ``output_delta``'s over the whole
    batch, which writes the errors the rows blocks wrote again: compiled with
    ``reassoc``, its sum over the rows is not a sum of the blocks' sums, and the
    loss must have the serial engine's bits (1 thread runs that)."""
    X, Y, sw = data
    layers, work, _, ip, _ = context
    swsum = _weight_sum(sw, (order, start, m))
    if swsum > 0.0:
        last = layers.shape[0] - 1
        n_out = layers[last, L_NOUT]
        shared[F_DATA] = _output_error(_rows(work, layers[last, L_AOFF], m, n_out), Y, sw,
                                       order, start, context,
                                       _rows(work, layers[last, L_DOFF], m, n_out))
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
def _params_block(nb, start, m, data, order, state, context, team):
    """Params block nb: the units of one layer's block (``params_block``; with one
    sample, the serial kernel's fused path, whole, in the layer's first block)."""
    X, _, _ = data
    theta, grad, _, _ = state
    layers, work, hp, ip, _ = context
    params, offsets, scratch, shared = team[1], team[2], team[3], team[4]
    if shared[F_SKIP] != 0.0:  # the step's sample weights sum to 0: no update
        return
    l = layers.shape[0] - 1
    while params[l, 0] > nb:
        l -= 1
    jb = nb - params[l, 0]
    n_out = layers[l, L_NOUT]
    w, dw, db, delta, a_prev = _backward_views(theta, grad, work, layers, l, m,
                                               _input_rows(X, order, start, m, work,
                                                           X.shape[1]))
    wsq = scratch[offsets[l, 1]:offsets[l, 1] + 2 * n_out]
    if m == 1:
        if jb == 0:
            dense_backward_params_serial(w, delta, a_prev, hp[HP_ALPHA], shared[F_SCALE],
                                         np.bool_(False), dw, db, wsq)
        return
    params_block(w, delta, a_prev, hp[HP_ALPHA], shared[F_SCALE], False, dw, db, wsq,
                 params[l, 1], jb)


@jit
def _finish(m, layers, work, hp, ip, stats, offsets, scratch, shared, counters):
    """After the params phase, as ``engine.train_epoch``'s end of a step: the loss and
    gradient norms from the row sums (in the serial engine's order), the stop on a
    non-finite one (``counters[C_ABORT]``), the clip factor and Adam's rate for the
    step blocks, the statistics."""
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
    shared[F_CLIP] = _clip_factor(hp, total)
    shared[F_LR] = _step_rate(hp, ip)
    stats[ST_LOSS] += batch_loss * m
    stats[ST_BATCHES] += 1.0
    stats[ST_SAMPLES] += m


@jit
def _step_block(nb, state, context, shared):
    """Step block nb: the optimizer's update of its parameters (``_step_size``; the
    gradient clipped first)."""
    theta, grad, m1, m2 = state
    _, _, hp, ip, _ = context
    if shared[F_SKIP] != 0.0:
        return
    size = _step_size(theta.shape[0])
    k0 = size * nb
    k1 = min(k0 + size, theta.shape[0])
    if shared[F_CLIP] > 0.0:
        scale_vector(grad[k0:k1], shared[F_CLIP])
    opt = ip[IP_OPT]
    beta1 = hp[HP_MOMENTUM] if opt == OPT_SGD else hp[HP_BETA1]
    optimizer_step_serial(opt, theta[k0:k1], grad[k0:k1], m1[k0:k1], m2[k0:k1], shared[F_LR],
                          beta1, hp[HP_BETA2], hp[HP_EPS], ip[IP_NESTEROV] != 0)


@jit
def _worker(n, data, order, state, context, team):
    """One worker: claims tickets until the epoch's last, waits for the phases
    before each, runs its block; the last of a phase runs its tail and publishes it
    finished (see the module docstring)."""
    ends, _, offsets, scratch, shared, counters = team
    layers, work, hp, ip, stats = context
    bs = ip[IP_BATCH]
    n_steps = _cdiv(n, bs)
    per_step = ends[ends.shape[0] - 1]
    while True:
        t = claim(counters)  # counters[C_TICKET] is slot 0
        step = t // per_step
        if step >= n_steps:
            return
        r = t - step * per_step
        q = 0
        while ends[q] <= r:
            q += 1
        begin = 0 if q == 0 else ends[q - 1]
        need = step * per_step + begin
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
        nb = r - begin
        if q == K_ROWS:
            _rows_block(nb, start, m, data, order, state[0], context, offsets, scratch)
        elif q == K_PARAMS:
            _params_block(nb, start, m, data, order, state, context, team)
        else:
            _step_block(nb, state, context, shared)
        end = step * per_step + ends[q]
        if done(counters, C_ARRIVE) + 1 == end:  # the phase's last block: its tail
            if q == K_ROWS:
                _rows_tail(start, m, data, order, context, shared)
            elif q == K_PARAMS:
                _finish(m, layers, work, hp, ip, stats, offsets, scratch, shared, counters)
            else:  # the next step's forward takes the updated weights
                _transpose_all(state[0], layers, offsets, scratch)
            publish(counters, C_DONE, end)


@jit(parallel=True)
def train_epoch_team(data, order, state, context):
    """``engine.train_epoch`` (same arguments, results and statistics, bit for bit) with
    every step's work split into blocks that the threads take in turn, in one
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
    ends, params = _phases(layers, theta.shape[0], bs, ip[IP_OPT])
    scratch = np.empty(size, X.dtype)
    _transpose_all(theta, layers, offsets, scratch)
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
                (ends, params, offsets, scratch, shared, counters))
