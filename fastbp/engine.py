"""The compiled training engine: whole epochs, full-batch gradients, prediction.

One source serves all three backends (``backends.get_engine``):

* ``loops``  -- this module compiled with Numba; kernels from ``kernels_loop``,
  the serial or parallel twin picked per call by work size;
* ``python`` -- the same code run as plain Python over the plain-Python loop
  kernels (the slow loop fastbp replaces; tests and benchmarks only);
* ``blas``   -- the same code run as Python over ``kernels_blas`` (NumPy GEMM).

The entry points take a few grouped arguments (tuples; ``network.Network``
builds them):

* ``data = (X, Xs, Y, sw)``: ``X`` (n, n_features) C, ``Y`` (n, n_outputs) C,
  ``sw`` (n,) or empty; all of the model dtype.  ``Xs`` = (data, indices,
  indptr) of a CSR matrix (int64 indices, sorted) for sparse input, consumed
  row by row by the first layer; then X is an empty (0, n_features) array.
  Dense input passes empty arrays in Xs.
* ``order`` (n,) int64 sample order, or empty for the natural order (rows are
  then used in place, no copy).
* ``state = (theta, grad, m1, m2)``: flat parameters, and buffers of the same
  length and offsets (``params.Layout``) for the gradient and the optimizer's
  moments.
* ``context = (layers, work, hp, ip, stats)``: ``layers`` int64 table
  (n_layers, L_COLS); ``work`` flat workspace for one block of activations and
  deltas; ``hp`` float64 hyper-parameters (HP_*), ``ip`` int64 controls (IP_*),
  ``stats`` float64 outputs (ST_*) -- slots named in ``codes``.
* Topology (``params``): row l of ``layers`` is layer l+1 with its chain block
  from layer l (``L_NIN`` = 0 when absent); the other weight blocks ("shortcut
  blocks", source s -> target t) are the table ``ip[IP_SIZE:]`` (S_COLS per
  row, ``codes.S_*``; empty for a chain, which then runs exactly the chain
  code).  Forward: a layer with shortcut blocks gets ``z = W a + b`` from its
  chain block and adds each shortcut block's ``a^s W^{s,t}``, the activation
  applied with the last.  Backward: a layer that feeds shortcut blocks sums the
  errors ``delta^t W^{s,t}`` of every layer it feeds, g' applied with the last.

Inside, a batch is ``batch = (order, start, m)``: rows ``order[start:start + m]``
(or ``start:start + m`` in the natural order).
"""
import numba
import numpy as np

from .codes import (HP_ALPHA, HP_BETA1, HP_BETA2, HP_CLIP, HP_EPS, HP_HUBER, HP_LR,
                    HP_MOMENTUM, HP_PROB_EPS, HP_SIZE, HP_STEP_MAX, HP_STEP_MIN, IDENTITY,
                    IP_BATCH, IP_CHUNK, IP_DROP_SEED, IP_DROP_STEP, IP_LOSS, IP_MEAN_OUT,
                    IP_NESTEROV, IP_OPT, IP_PAR_MIN, IP_SIZE, IP_STEP,
                    IP_WSQ_OFF, L_ACT, L_AOFF, L_BOFF, L_DOFF, L_NIN, L_NOUT, L_WOFF,
                    OPT_ADAM, OPT_NONE, OPT_SGD, S_COLS, S_DB, S_DST, S_NIN, S_NOUT, S_SRC,
                    S_WOFF, ST_BATCHES, ST_DATA, ST_DIVERGED, ST_GNORM, ST_LOSS, ST_REG,
                    ST_SAMPLES, ST_SWSUM)
from .config import ELEMENTWISE_PAR_SHIFT
from .jit import jit
from .kernels_loop import (block_sq_norms, copy_rows, csr_backward_params_parallel,
                           csr_backward_params_serial, csr_forward_acc_parallel,
                           csr_forward_acc_serial, csr_forward_parallel, csr_forward_serial,
                           dense_backward_input_acc_parallel, dense_backward_input_acc_serial,
                           dense_backward_input_parallel, dense_backward_input_serial,
                           dense_backward_params_parallel, dense_backward_params_serial,
                           dense_forward_acc_parallel, dense_forward_acc_serial,
                           dense_forward_parallel, dense_forward_serial,
                           dropout_backward_parallel, dropout_backward_serial,
                           dropout_forward_parallel, dropout_forward_serial, finalize_params,
                           gather_rows_parallel, gather_rows_serial, layer_sq_norms,
                           optimizer_step_parallel, optimizer_step_serial, output_delta,
                           prefetch_rows,
                           rprop_step_parallel, rprop_step_serial, scale_vector)
from .views import borrowed, matrix_view

# Compile-time switch (a global: Numba freezes it and prunes the branches it
# guards).  The module's functions are compiled with it on: any topology.
# ``jit.specialised_copy`` compiles copies with it off for chain networks, which
# then never type nor compile the shortcut kernels (about a third of a first
# fit's compile time); a chain runs the same kernels in either, bit for bit.
SHORTCUTS = True
# Another switch: dropout.  Off in the module's functions, which then never type
# nor compile the dropout kernels (a default fit compiles what it did before dropout
# existed); ``backends`` compiles copies with it on for fits with a dropout rate > 0.
# Where it is on, ``hp[HP_SIZE + l]`` is the dropout rate of layer row l's outputs
# and ``ip[IP_DROP_SEED]``, ``ip[IP_DROP_STEP]`` pick the masks; predict passes no rates.
# Under NUMBA_DISABLE_JIT nothing is compiled, so nothing can be specialised: it is on
# and the rates decide at run time (``_dropping``: no layer is dropped at rate 0).
DROPOUT = bool(numba.config.DISABLE_JIT)
# A setting, not a switch: ``train_epoch`` prefetches the next shuffled mini-batch's
# input and target rows (``prefetch_rows``) while it computes the current one when
# they take at most this many bytes: its gather then reads L2, not DRAM (W2's batch
# of ten 784-pixel rows: 63 KB from a 63 MB X).  Larger batches would evict the
# current batch's working set from a 1 MB L2 and already stream at full bandwidth.
PREFETCH_MAX_BYTES = 1 << 18
# The last switch: sparse input.  On in the module's functions, which take dense or
# CSR input (decided per call by ``Xs``); ``backends`` compiles copies with it off
# for dense input, which never type nor compile the CSR kernels (a dense first
# fit, the common one, then compiles about a sixth less).
SPARSE = True


@jit(inline="always")
def _layer_params(buf, layers, l):
    """Layer l's views ``(w (n_out, n_in), b (n_out,))`` of a flat buffer laid out as theta."""
    n_in = layers[l, L_NIN]
    n_out = layers[l, L_NOUT]
    wo = layers[l, L_WOFF]
    bo = layers[l, L_BOFF]
    return matrix_view(buf, wo, n_out, n_in), buf[bo:bo + n_out]


@jit(inline="always")
def _skip_table(ip):
    """The shortcut-block table (n_skip, S_COLS) stored in ``ip[IP_SIZE:]``."""
    n_skip = (ip.shape[0] - IP_SIZE) // S_COLS
    return matrix_view(ip, IP_SIZE, n_skip, S_COLS)


@jit(inline="always")
def _skip_weights(buf, skips, k):
    """Shortcut block k's view ``w (n_out, n_in)`` of a flat buffer laid out as theta."""
    n_in = skips[k, S_NIN]
    n_out = skips[k, S_NOUT]
    wo = skips[k, S_WOFF]
    return matrix_view(buf, wo, n_out, n_in)


@jit(inline="always")
def _rows(work, off, m, n_units):
    """The (m, n_units) block of the workspace at ``off`` (activations or deltas)."""
    return matrix_view(work, off, m, n_units)


@jit(inline="always")
def _norms(work, layers, ip):
    """The squared gradient norm of each weight block (layers, then shortcut blocks) in
    the workspace at ``ip[IP_WSQ_OFF]``."""
    off = ip[IP_WSQ_OFF]
    return work[off:off + layers.shape[0] + _skip_table(ip).shape[0]]


@jit(inline="always")
def _row_sums(work, layers, ip, n_out):
    """The params kernels' per-row sums (``wsq``) of a block of n_out units: 2 n_out
    numbers after ``_norms``."""
    off = ip[IP_WSQ_OFF] + _norms(work, layers, ip).shape[0]
    return work[off:off + 2 * n_out]


@jit(inline="always")
def _backward_views(theta, grad, work, layers, l, m, a0):
    """Layer row l's views for its backward pass over m samples: (w, dw, db, delta
    (m, n_out), a_prev (m, n_in)); a0 is the batch's input block (layer 0's a_prev)."""
    w, _ = _layer_params(theta, layers, l)
    dw, db = _layer_params(grad, layers, l)
    delta = _rows(work, layers[l, L_DOFF], m, layers[l, L_NOUT])
    if l > 0:
        return w, dw, db, delta, _rows(work, layers[l - 1, L_AOFF], m, layers[l, L_NIN])
    return w, dw, db, delta, a0


@jit(inline="always")
def _input_block(X, batch, work, par_min):
    """The batch's input rows: a view of X, or rows gathered into work[0:]."""
    order, start, m = batch
    d = X.shape[1]
    if order.shape[0] == 0:
        return X[start:start + m]
    xb = _rows(work, 0, m, d)
    if m * d >= par_min >> ELEMENTWISE_PAR_SHIFT and m > 1:
        gather_rows_parallel(X, order, start, xb)
    else:
        gather_rows_serial(X, order, start, xb)
    return xb


@jit(inline="always")
def _outputs(work, layers, a0, s, m):
    """The (m, n_units) outputs of layer s (0 = the batch's dense input block a0)."""
    if s == 0:
        return a0
    return _rows(work, layers[s - 1, L_AOFF], m, layers[s - 1, L_NOUT])


@jit(inline="always")
def _dropping(drop, l):
    """Whether layer row l's outputs are dropped out under ``drop`` = (rates, seed,
    step): ``rates`` = ``hp[HP_SIZE:]`` when training, empty in predict."""
    rates = drop[0]
    return l < rates.shape[0] and rates[l] > 0.0


@jit(inline="always")
def _n_rows(X, Xs):
    """Number of samples of dense X or of the CSR matrix Xs."""
    indptr = Xs[2]
    return indptr.shape[0] - 1 if indptr.shape[0] > 0 else X.shape[0]


@jit(inline="always")
def _forward(a0, Xs, batch, theta, layers, skips, work, par_min, drop):
    """Forward pass of one batch through every layer; returns the output block.

    a0 is the batch's dense input block (ignored for CSR input Xs, whose rows
    order[start:start + m] feed the first layer directly).  ``skips`` is the
    shortcut-block table (empty for a chain).  ``drop`` = (rates, seed, step): with
    DROPOUT, the layers whose rate is > 0 have their outputs dropped out
    (``dropout_forward``) once complete, so every layer they feed (chain and
    shortcut blocks) sees the same mask.
    """
    order, start, m = batch
    sparse = Xs[2].shape[0] > 0
    a_prev = a0
    a = a0
    k = 0  # next shortcut block (rows sorted by target)
    for l in range(layers.shape[0]):
        n_in = layers[l, L_NIN]
        n_out = layers[l, L_NOUT]
        w, b = _layer_params(theta, layers, l)
        a = _rows(work, layers[l, L_AOFF], m, n_out)
        par = m * n_in * n_out >= par_min and m > 1
        k_end = k
        if SHORTCUTS:
            while k_end < skips.shape[0] and skips[k_end, S_DST] == l + 1:
                k_end += 1
        act = layers[l, L_ACT] if k_end == k else IDENTITY  # g with the last block
        if n_in == 0:  # no chain block: z = b, the shortcut blocks add the rest
            a_prev = _rows(work, 0, m, 0)
        if SPARSE and l == 0 and sparse:
            if par:
                csr_forward_parallel(w, b, Xs, order, start, act, a)
            else:
                csr_forward_serial(w, b, Xs, order, start, act, a)
        elif par:
            dense_forward_parallel(w, b, a_prev, act, a)
        else:
            dense_forward_serial(w, b, a_prev, act, a)
        if SHORTCUTS:
            while k < k_end:
                s = skips[k, S_SRC]
                ws = _skip_weights(theta, skips, k)
                act = layers[l, L_ACT] if k == k_end - 1 else IDENTITY
                par = m * skips[k, S_NIN] * n_out >= par_min and m > 1
                if SPARSE and s == 0 and sparse:
                    if par:
                        csr_forward_acc_parallel(ws, Xs, order, start, act, a)
                    else:
                        csr_forward_acc_serial(ws, Xs, order, start, act, a)
                elif par:
                    dense_forward_acc_parallel(ws, _outputs(work, layers, a0, s, m), act, a)
                else:
                    dense_forward_acc_serial(ws, _outputs(work, layers, a0, s, m), act, a)
                k += 1
        if DROPOUT:
            if _dropping(drop, l):
                if m * n_out >= par_min and m > 1:
                    dropout_forward_parallel(a, order, start, drop[1], drop[2], l + 1,
                                             drop[0][l])
                else:
                    dropout_forward_serial(a, order, start, drop[1], drop[2], l + 1,
                                           drop[0][l])
        a_prev = a
    return a


@jit(inline="always")
def _batch_gradient(data, batch, theta, grad, context, accumulate, scale):
    """Forward, output delta and backward for one batch.

    Writes the finished gradient into ``grad`` (``accumulate`` false; scale =
    1 / sum of the batch's weights), and each layer's squared gradient norm into
    ``_norms`` (summed from the kernels' per-row sums), or adds raw sums to it
    (``accumulate`` true).  Returns (sum_n s_n C_n, sum of squared weights); the second is 0
    when accumulating.  Callers pass ``np.bool_`` flags, not literals: Numba
    then compiles one variant (a runtime branch), not one per literal value.
    """
    X, Xs, Y, sw = data
    layers, work, hp, ip, _ = context
    skips = _skip_table(ip)
    order, start, m = batch
    par_min = ip[IP_PAR_MIN]
    n_layers = layers.shape[0]
    sparse = Xs[2].shape[0] > 0
    a0 = X[0:0] if sparse else _input_block(X, batch, work, par_min)
    drop = (hp[HP_SIZE:], ip[IP_DROP_SEED], ip[IP_DROP_STEP])  # read only with DROPOUT
    out = _forward(a0, Xs, batch, theta, layers, skips, work, par_min, drop)
    last = n_layers - 1
    delta = _rows(work, layers[last, L_DOFF], m, layers[last, L_NOUT])
    data_sum = output_delta(out, Y, sw, order, start, ip[IP_LOSS], layers[last, L_ACT],
                            hp[HP_HUBER], hp[HP_PROB_EPS], ip[IP_MEAN_OUT] != 0, delta)
    norms = _norms(work, layers, ip)
    alpha = hp[HP_ALPHA]
    wsq_total = 0.0
    for l in range(last, -1, -1):
        n_in = layers[l, L_NIN]
        n_out = layers[l, L_NOUT]
        w, dw, db, delta, a_prev = _backward_views(theta, grad, work, layers, l, m, a0)
        wsq = _row_sums(work, layers, ip, n_out)
        big = m * n_in * n_out >= par_min
        if SPARSE and l == 0 and sparse:
            if big and n_out > 1:
                csr_backward_params_parallel(w, delta, Xs, order, start, alpha, scale,
                                             accumulate, dw, db, wsq)
            else:
                csr_backward_params_serial(w, delta, Xs, order, start, alpha, scale,
                                           accumulate, dw, db, wsq)
        elif big and n_out > 1:
            dense_backward_params_parallel(w, delta, a_prev, alpha, scale, accumulate,
                                           dw, db, wsq)
        else:
            dense_backward_params_serial(w, delta, a_prev, alpha, scale, accumulate,
                                         dw, db, wsq)
        if not accumulate:
            gsq = 0.0
            for j in range(n_out):
                wsq_total += wsq[j]
                gsq += wsq[n_out + j]
            norms[l] = gsq
        if SHORTCUTS:
            if skips.shape[0] > 0:
                wsq_total += _skip_backward_params(data, batch, theta, grad, layers, skips,
                                                   work, a0, l, alpha, scale, accumulate, wsq,
                                                   par_min)
        if l > 0:
            n_cons = 0  # shortcut blocks layer l feeds
            if SHORTCUTS:
                for k in range(skips.shape[0]):
                    if skips[k, S_SRC] == l:
                        n_cons += 1
            act_prev = layers[l - 1, L_ACT]
            if DROPOUT:
                if _dropping(drop, l - 1):
                    act_prev = IDENTITY  # g' with the mask, in dropout_backward
            if n_cons == 0:
                delta_prev = _rows(work, layers[l - 1, L_DOFF], m, n_in)
                if big and m > 1:
                    dense_backward_input_parallel(w, delta, a_prev, act_prev, delta_prev)
                else:
                    dense_backward_input_serial(w, delta, a_prev, act_prev, delta_prev)
            elif SHORTCUTS:
                _skip_backward_input(theta, layers, skips, work, l, n_cons, w, delta, m,
                                     par_min, act_prev)
            if DROPOUT:
                if _dropping(drop, l - 1):
                    _dropout_backward(work, layers, batch, drop, l - 1, par_min)
    return data_sum, wsq_total


@jit
def _dropout_backward(work, layers, batch, drop, l, par_min):
    """Finish the error of dropped-out layer row l (``dropout_backward``): its
    summed error is in its delta block, its dropped outputs in its output block."""
    order, start, m = batch
    n_out = layers[l, L_NOUT]
    a = _rows(work, layers[l, L_AOFF], m, n_out)
    delta = _rows(work, layers[l, L_DOFF], m, n_out)
    if m * n_out >= par_min and m > 1:
        dropout_backward_parallel(a, delta, order, start, drop[1], drop[2], l + 1,
                                  drop[0][l], layers[l, L_ACT])
    else:
        dropout_backward_serial(a, delta, order, start, drop[1], drop[2], l + 1,
                                drop[0][l], layers[l, L_ACT])


@jit
def _skip_backward_params(data, batch, theta, grad, layers, skips, work, a0, l, alpha, scale,
                          accumulate, wsq, par_min):
    """Gradients of the shortcut blocks into layer l+1 (row l); returns their sum of w^2.

    As the chain block's (``dense_backward_params``); the bias sums the kernels
    also compute go to the scratch row at ``S_DB`` (a layer's bias is its chain
    block's).  The returned sum is 0 when accumulating.
    """
    _, Xs, _, _ = data
    order, start, m = batch
    sparse = Xs[2].shape[0] > 0
    n_out = layers[l, L_NOUT]
    delta = _rows(work, layers[l, L_DOFF], m, n_out)
    db = work[skips[0, S_DB]:skips[0, S_DB] + n_out]
    total = 0.0
    for k in range(skips.shape[0]):
        if skips[k, S_DST] != l + 1:
            continue
        s = skips[k, S_SRC]
        ws = _skip_weights(theta, skips, k)
        dws = _skip_weights(grad, skips, k)
        big = m * skips[k, S_NIN] * n_out >= par_min and n_out > 1
        if SPARSE and s == 0 and sparse:
            if big:
                csr_backward_params_parallel(ws, delta, Xs, order, start, alpha, scale,
                                             accumulate, dws, db, wsq)
            else:
                csr_backward_params_serial(ws, delta, Xs, order, start, alpha, scale,
                                           accumulate, dws, db, wsq)
        else:
            a_src = _outputs(work, layers, a0, s, m)
            if big:
                dense_backward_params_parallel(ws, delta, a_src, alpha, scale, accumulate,
                                               dws, db, wsq)
            else:
                dense_backward_params_serial(ws, delta, a_src, alpha, scale, accumulate,
                                             dws, db, wsq)
        if not accumulate:
            for j in range(n_out):
                total += wsq[j]
    return total


@jit
def _skip_backward_input(theta, layers, skips, work, l, n_cons, w, delta, m, par_min,
                         act_src):
    """Error of layer l (row l-1), fed by its chain block into row l and n_cons shortcut blocks.

    ``delta^l = g'(z^l) * (delta^{l+1} W^{l,l+1} + sum_k delta^{t_k} W^{l,t_k})``:
    the terms are summed into delta^l (the first overwrites) and g' (of
    ``act_src``, layer l's activation or IDENTITY when dropout applies it) is
    applied with the last.  Every target's delta is complete: targets come later.
    """
    n_src = layers[l - 1, L_NOUT]
    a_src = _rows(work, layers[l - 1, L_AOFF], m, n_src)
    delta_src = _rows(work, layers[l - 1, L_DOFF], m, n_src)
    add = np.bool_(False)  # np.bool_: one compiled variant of the kernel, not one per literal
    if layers[l, L_NIN] > 0:  # the chain block is a source of the error too
        if m * n_src * layers[l, L_NOUT] >= par_min and m > 1:
            dense_backward_input_acc_parallel(w, delta, a_src, IDENTITY, np.bool_(False),
                                              delta_src)
        else:
            dense_backward_input_acc_serial(w, delta, a_src, IDENTITY, np.bool_(False),
                                            delta_src)
        add = np.bool_(True)
    seen = 0
    for k in range(skips.shape[0]):
        if skips[k, S_SRC] != l:
            continue
        seen += 1
        t = skips[k, S_DST]
        n_t = layers[t - 1, L_NOUT]
        delta_t = _rows(work, layers[t - 1, L_DOFF], m, n_t)
        ws = _skip_weights(theta, skips, k)
        act = act_src if seen == n_cons else IDENTITY
        if m * n_src * n_t >= par_min and m > 1:
            dense_backward_input_acc_parallel(ws, delta_t, a_src, act, add, delta_src)
        else:
            dense_backward_input_acc_serial(ws, delta_t, a_src, act, add, delta_src)
        add = np.bool_(True)


@jit(inline="always")
def _weight_sum(sw, batch):
    """sum of the batch's sample weights (m when unweighted), in sample order."""
    order, start, m = batch
    if sw.shape[0] == 0:
        return float(m)
    total = 0.0
    if order.shape[0] == 0:
        for n in range(m):
            total += sw[start + n]
    else:
        for n in range(m):
            total += sw[order[start + n]]
    return total


@jit(inline="always")
def _clip_factor(hp, total):
    """The factor ``clip / sqrt(total)`` that scales a gradient of squared norm
    ``total`` down to norm ``clip = hp[HP_CLIP]``, or 0 when no clipping applies."""
    clip = hp[HP_CLIP]
    if clip > 0.0 and total > clip * clip:
        return clip / np.sqrt(total)
    return 0.0


@jit(inline="always")
def _step_rate(hp, ip):
    """The learning rate of this step; Adam's step count ``ip[IP_STEP]`` advances and
    its rate is bias-corrected: ``lr sqrt(1 - beta2^t) / (1 - beta1^t)``."""
    lr = hp[HP_LR]
    if ip[IP_OPT] == OPT_ADAM:
        ip[IP_STEP] += 1
        t = ip[IP_STEP]
        lr = lr * np.sqrt(1.0 - hp[HP_BETA2] ** t) / (1.0 - hp[HP_BETA1] ** t)
    return lr


@jit(inline="always")
def _borrow_data(data):
    """``data`` with every array ``borrowed`` (see ``_borrow_context``)."""
    X, Xs, Y, sw = data
    return (borrowed(X), (borrowed(Xs[0]), borrowed(Xs[1]), borrowed(Xs[2])), borrowed(Y),
            borrowed(sw))


@jit(inline="always")
def _borrow_context(context):
    """``context`` with every array ``borrowed``: the views an entry point takes of
    the arrays Python passed in (which Python holds for the call) then cost no
    reference counting (``views.borrowed``)."""
    layers, work, hp, ip, stats = context
    return borrowed(layers), borrowed(work), borrowed(hp), borrowed(ip), borrowed(stats)


@jit
def train_epoch(data, order, state, context):
    """One epoch of mini-batch training, without returning to Python.

    Walks the batches of ``ip[IP_BATCH]`` samples in ``order``; for each: forward,
    backward, optional clipping of the global gradient norm to
    ``hp[HP_CLIP]`` (0 = off) and the optimizer step (``ip[IP_OPT]``; Adam's
    step count is ``ip[IP_STEP]``, updated).  Stops at the first batch whose
    loss or gradient is not finite (``stats[ST_DIVERGED] = 1``), before any
    update from it.  ``stats`` gets the sum over batches of scikit-learn's
    batch loss times the batch size, the samples seen and per-layer gradient
    norms summed over batches.
    """
    data = _borrow_data(data)
    context = _borrow_context(context)
    order = borrowed(order)
    X, Xs, Y, sw = data
    theta, grad, m1, m2 = state
    theta, grad, m1, m2 = borrowed(theta), borrowed(grad), borrowed(m1), borrowed(m2)
    layers, work, hp, ip, stats = context
    skips = _skip_table(ip)
    n = _n_rows(X, Xs)
    bs = ip[IP_BATCH]
    n_layers = layers.shape[0]
    n_blocks = n_layers + skips.shape[0]  # gradient norms: layers, then shortcut blocks
    par_min = ip[IP_PAR_MIN]
    opt = ip[IP_OPT]
    beta1 = hp[HP_MOMENTUM] if opt == OPT_SGD else hp[HP_BETA1]  # optimizer_step's beta1
    p = theta.shape[0]
    gsq = stats[ST_GNORM:ST_GNORM + n_blocks]
    norms = _norms(work, layers, ip)
    for l in range(n_blocks):
        gsq[l] = 0.0
    stats[ST_LOSS] = 0.0
    stats[ST_SAMPLES] = 0.0
    stats[ST_DIVERGED] = 0.0
    stats[ST_BATCHES] = 0.0
    row_bytes = X.shape[1] * X.itemsize + Y.shape[1] * Y.itemsize
    ahead = order.shape[0] > 0 and Xs[2].shape[0] == 0 and bs * row_bytes <= PREFETCH_MAX_BYTES
    start = np.int64(0)  # typed int64 from the start: no Literal[int](0) variant of callees
    while start < n:
        m = min(bs, n - start)
        batch = (order, start, m)
        if ahead and start + m < n:  # the next batch's rows, while this one computes
            m_next = min(bs, n - start - m)
            prefetch_rows(X, order, start + m, m_next)
            prefetch_rows(Y, order, start + m, m_next)
        swsum = _weight_sum(sw, batch)
        if swsum > 0.0:
            data_sum, wsq = _batch_gradient(data, batch, theta, grad, context,
                                            np.bool_(False), 1.0 / swsum)
            batch_loss = (data_sum + 0.5 * hp[HP_ALPHA] * wsq) / swsum
            if SHORTCUTS:  # the layers' norms came with their gradients
                if skips.shape[0] > 0:
                    block_sq_norms(grad, skips, norms[n_layers:])
            total = 0.0
            for l in range(n_blocks):
                total += norms[l]
            if not (np.isfinite(batch_loss) and np.isfinite(total)):
                stats[ST_DIVERGED] = 1.0
                return
            for l in range(n_blocks):
                gsq[l] += np.sqrt(norms[l])
            factor = _clip_factor(hp, total)
            if factor > 0.0:
                scale_vector(grad, factor)
            lr = _step_rate(hp, ip)
            if opt != OPT_NONE:
                if p >= par_min >> ELEMENTWISE_PAR_SHIFT:
                    optimizer_step_parallel(opt, theta, grad, m1, m2, lr, beta1,
                                            hp[HP_BETA2], hp[HP_EPS], ip[IP_NESTEROV] != 0)
                else:
                    optimizer_step_serial(opt, theta, grad, m1, m2, lr, beta1,
                                          hp[HP_BETA2], hp[HP_EPS], ip[IP_NESTEROV] != 0)
            stats[ST_LOSS] += batch_loss * m
            stats[ST_BATCHES] += 1.0
        if DROPOUT:
            ip[IP_DROP_STEP] += 1  # fresh masks for every mini-batch
        stats[ST_SAMPLES] += m
        start += m


@jit
def loss_grad(data, theta, grad, context):
    """Full-data loss and gradient, in chunks of ``ip[IP_CHUNK]`` rows, chunk order fixed.

    ``grad`` is overwritten with ``(sum_n delta a^T + alpha W) / sum_n s_n``
    per layer.  ``stats[ST_DATA]`` = sum_n s_n C_n / sum_n s_n (the data term),
    ``stats[ST_REG]`` = 0.5 alpha sum W^2 / sum_n s_n, ``stats[ST_SWSUM]``.
    Returns nothing; the objective is ST_DATA + ST_REG.
    """
    data = _borrow_data(data)
    context = _borrow_context(context)
    theta, grad = borrowed(theta), borrowed(grad)
    X, Xs, _, sw = data
    layers, work, hp, ip, stats = context
    n = _n_rows(X, Xs)
    cap = ip[IP_CHUNK]
    empty = np.empty(0, dtype=np.int64)
    for k in range(grad.shape[0]):
        grad[k] = 0.0
    data_sum = 0.0
    swsum = 0.0
    start = np.int64(0)  # typed int64 from the start: no Literal[int](0) variant of callees
    while start < n:
        m = min(cap, n - start)
        batch = (empty, start, m)
        swsum += _weight_sum(sw, batch)
        d, _ = _batch_gradient(data, batch, theta, grad, context, np.bool_(True), 1.0)
        data_sum += d
        start += m
    alpha = hp[HP_ALPHA]
    wsq_total = 0.0
    scale = 1.0 / swsum if swsum > 0.0 else 0.0
    for l in range(layers.shape[0]):
        n_out = layers[l, L_NOUT]
        w, _ = _layer_params(theta, layers, l)
        dw, db = _layer_params(grad, layers, l)
        wsq = _row_sums(work, layers, ip, n_out)
        finalize_params(w, alpha, scale, dw, db, wsq)
        for j in range(n_out):
            wsq_total += wsq[j]
    if SHORTCUTS:
        skips = _skip_table(ip)
        for k in range(skips.shape[0]):
            n_out = skips[k, S_NOUT]
            db = work[skips[k, S_DB]:skips[k, S_DB] + n_out]  # scratch: the chain's biases
            wsq = _row_sums(work, layers, ip, n_out)
            finalize_params(_skip_weights(theta, skips, k), alpha, scale,
                            _skip_weights(grad, skips, k), db, wsq)
            for j in range(n_out):
                wsq_total += wsq[j]
    stats[ST_DATA] = data_sum * scale
    stats[ST_REG] = 0.5 * alpha * wsq_total * scale
    stats[ST_SWSUM] = swsum


@jit
def rprop_epoch(data, state, context):
    """One full-batch iRPROP- iteration: ``loss_grad`` at theta, then one step.

    ``state = (theta, grad, step, prev)``: the per-weight step sizes and the
    previous gradient are the optimizer's two moment buffers.  ``stats`` gets
    ST_DATA, ST_REG, ST_SWSUM of ``loss_grad`` (the objective at theta before
    the step) and the gradient norms (layers, then shortcut blocks) at ST_GNORM.  A non-finite
    objective or gradient sets ``stats[ST_DIVERGED] = 1`` and leaves theta,
    step and prev untouched.  Step bounds: ``hp[HP_STEP_MIN]``, ``hp[HP_STEP_MAX]``.
    """
    theta, grad, step, prev = state
    theta, grad, step, prev = borrowed(theta), borrowed(grad), borrowed(step), borrowed(prev)
    context = _borrow_context(context)
    layers, work, hp, ip, stats = context
    loss_grad(data, theta, grad, context)
    skips = _skip_table(ip)
    n_layers = layers.shape[0]
    n_blocks = n_layers + skips.shape[0]  # gradient norms: layers, then shortcut blocks
    norms = _norms(work, layers, ip)
    layer_sq_norms(grad, layers, norms)
    if SHORTCUTS:
        if skips.shape[0] > 0:
            block_sq_norms(grad, skips, norms[n_layers:])
    total = 0.0
    for l in range(n_blocks):
        total += norms[l]
        stats[ST_GNORM + l] = np.sqrt(norms[l])
    stats[ST_DIVERGED] = 0.0
    if not (np.isfinite(stats[ST_DATA] + stats[ST_REG]) and np.isfinite(total)):
        stats[ST_DIVERGED] = 1.0
        return
    if theta.shape[0] >= ip[IP_PAR_MIN] >> ELEMENTWISE_PAR_SHIFT:
        rprop_step_parallel(theta, grad, step, prev, hp[HP_STEP_MIN], hp[HP_STEP_MAX])
    else:
        rprop_step_serial(theta, grad, step, prev, hp[HP_STEP_MIN], hp[HP_STEP_MAX])


@jit
def predict(X, Xs, theta, context, out):
    """Network output for every row of X, in chunks of ``ip[IP_CHUNK]`` rows.

    out: (n, n_outputs) C, overwritten.
    """
    context = _borrow_context(context)
    X, theta, out = borrowed(X), borrowed(theta), borrowed(out)
    Xs = (borrowed(Xs[0]), borrowed(Xs[1]), borrowed(Xs[2]))
    layers, work, hp, ip, _ = context
    skips = _skip_table(ip)
    n = _n_rows(X, Xs)
    cap = ip[IP_CHUNK]
    par_min = ip[IP_PAR_MIN]
    empty = np.empty(0, dtype=np.int64)
    start = np.int64(0)  # typed int64 from the start: no Literal[int](0) variant of callees
    while start < n:
        m = min(cap, n - start)
        a = _forward(X[start:start + m], Xs, (empty, start, m), theta, layers, skips, work,
                     par_min, (hp[0:0], ip[IP_DROP_SEED], ip[IP_DROP_STEP]))  # never drops
        copy_rows(a, out, start)
        start += m
