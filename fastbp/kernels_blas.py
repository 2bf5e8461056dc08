"""The loop kernels' BLAS twin: the same operations, names and arguments in matrix form.

``delta^l = g'(z^l) * delta^{l+1} W^{l+1}`` and ``dC/dW^l = delta^{l,T} a^{l-1}``
written with NumPy (OpenBLAS GEMM).  This is the test oracle for
``kernels_loop`` and the baseline it is benchmarked against; the ``blas``
backend runs the same engine source (``engine``) in Python over these.
Shapes and write semantics are those documented on the loop kernels.
"""
import numpy as np
import scipy.sparse as sp

from .codes import (L_NIN, L_NOUT, L_WOFF, OPT_ADAGRAD, OPT_ADAM, OPT_RMSPROP, OPT_SGD, S_NIN,
                    S_NOUT, S_WOFF)
from .activations import activate, derivative
from .losses import loss_delta


def gather_rows(X, order, start, out):
    """``out = X[order[start:start + m]]``."""
    np.take(X, order[start:start + out.shape[0]], axis=0, out=out)


def prefetch_rows(A, order, start, m):
    """A cache hint in the loop form: nothing to do here."""


def dense_forward(w, b, a_prev, act, a):
    """``A = g(A_prev W^T + b)``."""
    np.matmul(a_prev, w.T, out=a)
    a += b
    activate(a, act)


def dense_backward_input(w, delta, a_prev, act_prev, delta_prev):
    """``Delta_prev = g'(Z_prev) * (Delta W)``."""
    np.matmul(delta, w, out=delta_prev)
    derivative(a_prev, delta_prev, act_prev)


def dense_forward_acc(w, a_src, act, a):
    """``A = g(Z + A_src W^T)`` with Z = a on entry."""
    a += a_src @ w.T
    activate(a, act)


def dense_backward_input_acc(w, delta, a_src, act, add, delta_src):
    """``E = Delta W`` (added to delta_src when ``add``), then ``delta_src *= g'(Z_src)``."""
    if add:
        delta_src += delta @ w
    else:
        np.matmul(delta, w, out=delta_src)
    derivative(a_src, delta_src, act)


def outer_rows(A, B, C, r0, r1, add):
    """``C[r0:r1] = (A^T B)[r0:r1]``, or ``+=`` when ``add``."""
    if add:
        C[r0:r1] += A[:, r0:r1].T @ B
    else:
        np.matmul(A[:, r0:r1].T, B, out=C[r0:r1])


def dense_backward_params(w, delta, a_prev, alpha, scale, accumulate, dw, db, wsq):
    """``dW = (Delta^T A_prev + alpha W) scale``, ``db = 1^T Delta scale`` and ``wsq``
    (``_row_sums``), or raw sums added."""
    if accumulate:
        dw += delta.T @ a_prev
        db += delta.sum(axis=0)
        return
    np.matmul(delta.T, a_prev, out=dw)
    dw += alpha * w
    dw *= scale
    np.sum(delta, axis=0, out=db)
    db *= scale
    _row_sums(w, dw, db, wsq)


def _csr_rows(Xs, order, start, m, n_in):
    data, indices, indptr = Xs
    X = sp.csr_matrix((data, indices, indptr), shape=(indptr.shape[0] - 1, n_in))
    return X[order[start:start + m]] if order.shape[0] else X[start:start + m]


def csr_forward(w, b, Xs, order, start, act, a):
    """``A = g(X_batch W^T + b)`` with X_batch sparse (scipy)."""
    a[...] = np.asarray(_csr_rows(Xs, order, start, a.shape[0], w.shape[1]) @ w.T)
    a += b
    activate(a, act)


def csr_forward_acc(w, Xs, order, start, act, a):
    """``A = g(Z + X_batch W^T)`` with X_batch sparse (scipy), Z = a on entry."""
    a += np.asarray(_csr_rows(Xs, order, start, a.shape[0], w.shape[1]) @ w.T)
    activate(a, act)


def csr_backward_params(w, delta, Xs, order, start, alpha, scale, accumulate, dw, db, wsq):
    """As ``dense_backward_params`` with X_batch sparse (scipy)."""
    xb = _csr_rows(Xs, order, start, delta.shape[0], w.shape[1])
    prod = np.asarray((xb.T @ delta).T)
    if accumulate:
        dw += prod
        db += delta.sum(axis=0)
        return
    dw[...] = prod
    dw += alpha * w
    dw *= scale
    np.sum(delta, axis=0, out=db)
    db *= scale
    _row_sums(w, dw, db, wsq)


def finalize_params(w, alpha, scale, dw, db, wsq):
    """``dW = (dW + alpha W) scale``, ``db = db scale``, ``wsq`` = row sums of W^2, then
    of dW^2 plus db^2."""
    dw += alpha * w
    dw *= scale
    db *= scale
    _row_sums(w, dw, db, wsq)


def _row_sums(w, dw, db, wsq):
    """``wsq[:n_out]`` = row sums of W^2; ``wsq[n_out:2 n_out]`` = row sums of dW^2 + db^2."""
    n_out = w.shape[0]
    wsq[:n_out] = np.einsum("ji,ji->j", w, w)
    wsq[n_out:2 * n_out] = np.einsum("ji,ji->j", dw, dw) + db * db


def output_delta(a, Y, sw, order, start, loss, act, huber, eps, mean_outputs, delta):
    """Output error of a batch and its weighted loss sum (matrix form)."""
    m = a.shape[0]
    idx = order[start:start + m] if order.shape[0] else slice(start, start + m)
    swb = sw[idx] if sw.shape[0] else sw
    return loss_delta(a, Y[idx], swb, loss, act, huber, eps, mean_outputs, delta)


def optimizer_step(code, theta, grad, m1, m2, lr, beta1, beta2, eps, nesterov):
    """Vectorised twin of ``kernels_loop.optimizer_step``."""
    if code == OPT_SGD:
        m1 *= beta1
        m1 -= lr * grad
        if nesterov:
            theta += beta1 * m1 - lr * grad
        else:
            theta += m1
    elif code == OPT_ADAM:
        m1 *= beta1
        m1 += (1 - beta1) * grad
        m2 *= beta2
        m2 += (1 - beta2) * (grad * grad)
        theta += -lr * m1 / (np.sqrt(m2) + eps)
    elif code == OPT_RMSPROP:
        m2 *= beta2
        m2 += (1 - beta2) * (grad * grad)
        theta -= lr * grad / (np.sqrt(m2) + eps)
    elif code == OPT_ADAGRAD:
        m2 += grad * grad
        theta -= lr * grad / (np.sqrt(m2) + eps)


def rprop_step(theta, grad, step, prev, step_min, step_max):
    """Vectorised twin of ``kernels_loop.rprop_step`` (iRPROP-)."""
    s = grad * prev
    np.copyto(step, np.where(s > 0, np.minimum(step * 1.2, step_max),
                             np.where(s < 0, np.maximum(step * 0.5, step_min), step)))
    g = np.where(s < 0, 0.0, grad).astype(grad.dtype)
    theta -= np.sign(g) * step
    prev[...] = g


def layer_sq_norms(grad, layers, out):
    """Per-layer squared gradient norms."""
    for l in range(layers.shape[0]):
        off = layers[l, L_WOFF]
        size = layers[l, L_NIN] * layers[l, L_NOUT] + layers[l, L_NOUT]
        g = grad[off:off + size]
        out[l] = float(g @ g)


def block_sq_norms(grad, skips, out):
    """Per shortcut-block squared gradient norms."""
    for k in range(skips.shape[0]):
        off = skips[k, S_WOFF]
        g = grad[off:off + skips[k, S_NIN] * skips[k, S_NOUT]]
        out[k] = float(g @ g)


def scale_vector(v, factor):
    """``v *= factor``."""
    v *= factor


def copy_rows(src, out, start):
    """``out[start:start + m] = src``."""
    out[start:start + src.shape[0]] = src


def pack_panel(B, k, panel):
    """``panel = B[:, kL:(k + 1)L]``, zeros past B's last column (L = panel's width)."""
    width = panel.shape[1]
    part = B[:, k * width:(k + 1) * width]
    panel[:, :part.shape[1]] = part
    panel[:, part.shape[1]:] = 0


def pack_panel_t(w, k, panel):
    """``panel = (w^T)[:, kL:(k + 1)L]``, zeros past w's last row."""
    pack_panel(w.T, k, panel)


def pack_tiles(A, r0, r1, At):
    """``At[t] = A[:, r0 + 6t:r0 + 6t + 6]``, zeros past column r1 - 1."""
    size = At.shape[2]
    n_tiles = -(-(r1 - r0) // size)
    block = np.zeros((A.shape[0], size * n_tiles), dtype=At.dtype)
    block[:, :r1 - r0] = A[:, r0:r1]
    At[:n_tiles] = block.reshape(A.shape[0], n_tiles, size).transpose(1, 0, 2)


def packed_rows(tiles, panels, C, r0, r1, add):
    """``C[r0:r1] = (A^T B)[r0:r1]`` (``+=`` when ``add``), A and B unpacked from
    ``tiles`` (``pack_tiles``) and ``panels`` (``pack_panel``)."""
    n_p, size = panels.shape[1], tiles.shape[2]
    n_tiles = -(-(r1 - r0) // size)
    A = tiles[:n_tiles].transpose(1, 0, 2).reshape(n_p, size * n_tiles)[:, :r1 - r0]
    B = panels.transpose(1, 0, 2).reshape(n_p, -1)[:, :C.shape[1]]
    if add:
        C[r0:r1] += A.T @ B
    else:
        np.matmul(A.T, B, out=C[r0:r1])


def transpose_into(w, wt):
    """``wt[...] = w.T``."""
    wt[...] = w.T


def column_stats(X, out):
    """Rows of out: X's column means, standard deviations, minima and maxima (float64)."""
    X = np.asarray(X, dtype=np.float64)
    out[0] = X.mean(axis=0)
    out[1] = X.std(axis=0)
    out[2] = X.min(axis=0)
    out[3] = X.max(axis=0)


def rows_within(X, low, high):
    """``all(low <= X <= high)`` per column (False for NaN)."""
    return bool(((X >= low) & (X <= high)).all())


# -- dropout: the counter-based masks of kernels_loop, on arrays --------------------
_M32 = np.uint64(0xFFFFFFFF)
_C1 = np.uint64(0x85EBCA6B)
_C2 = np.uint64(0xC2B2AE35)
_GOLDEN = np.uint64(0x9E3779B9)


def mix32(h):
    """``kernels_loop.mix32`` on a uint64 array of 32-bit words (a new array)."""
    h = h ^ (h >> np.uint64(16))
    h = (h * _C1) & _M32
    h = h ^ (h >> np.uint64(13))
    h = (h * _C2) & _M32
    return h ^ (h >> np.uint64(16))


def dropout_key(seed, step, rows, layer):
    """``kernels_loop.dropout_key`` for every row index in ``rows`` (int64 array)."""
    s = np.uint64(seed)
    t = np.uint64(step)
    r = np.asarray(rows, dtype=np.int64).astype(np.uint64)
    k = mix32(np.full(r.shape, (s & _M32) ^ _GOLDEN, dtype=np.uint64))
    k = mix32(k ^ (s >> np.uint64(32)))
    k = mix32(k ^ (t & _M32))
    k = mix32(k ^ (t >> np.uint64(32)))
    k = mix32(k ^ (r & _M32))
    k = mix32(k ^ (r >> np.uint64(32)))
    return mix32(k ^ np.uint64(layer))


def dropout_uniform(seed, step, rows, layer, n_units):
    """The (len(rows), n_units) uniforms of ``kernels_loop.dropout_uniform``, float64."""
    keys = dropout_key(seed, step, rows, layer)
    units = np.arange(n_units, dtype=np.uint64)
    return mix32(keys[:, None] ^ units[None, :]).astype(np.float64) * 2.0 ** -32


def dropout_threshold(rate):
    """``kernels_loop.dropout_threshold``: ``ceil((1 - rate) 2**32)`` as a uint64."""
    return np.uint64(np.ceil((1.0 - rate) * 4294967296.0))


def _dropout_kept(a, order, start, seed, step, layer, rate):
    m = a.shape[0]
    rows = order[start:start + m] if order.shape[0] else np.arange(start, start + m)
    return dropout_uniform(seed, step, rows, layer, a.shape[1]) < 1.0 - rate


def dropout_forward(a, order, start, seed, step, layer, rate):
    """``A <- A * M / (1 - rate)`` (dropped units set to 0)."""
    kept = _dropout_kept(a, order, start, seed, step, layer, rate)
    np.multiply(a, np.float64(1.0 / (1.0 - rate)), out=a, where=kept, casting="same_kind")
    a[~kept] = 0


def dropout_backward(a, delta, order, start, seed, step, layer, rate, act):
    """``Delta <- g'(Z) * E * M / (1 - rate)``, A scaled back by ``1 - rate`` where kept."""
    kept = _dropout_kept(a, order, start, seed, step, layer, rate)
    np.multiply(a, np.float64(1.0 - rate), out=a, where=kept, casting="same_kind")
    np.multiply(delta, np.float64(1.0 / (1.0 - rate)), out=delta, where=kept, casting="same_kind")
    delta[~kept] = 0
    derivative(a, delta, act)
