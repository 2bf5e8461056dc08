"""Our own readable backpropagation, one sample at a time (network2-style).

This is the naive oracle the tests compare fastbp against.  It shares no code
with fastbp: activations and their derivatives are written here from the
formulas, derivatives are taken with respect to the pre-activation z (fastbp
writes them through the output a), and the loop is per sample, so a bug in
fastbp's batched kernels cannot be copied into the oracle.

Conventions (those of ``fastbp.api.loss_and_gradient``):

* ``coefs[l]`` is scikit-learn's (n_in, n_out) matrix; we use ``w = coefs[l].T``
  of shape (n_out, n_in) so that ``z_j = sum_i w_ji a_i + b_j``.
* The objective is ``sum_n s_n C_n / sum_n s_n + alpha/2 sum_l ||W_l||^2 / sum_n s_n``
  where C_n is the loss of sample n summed over the outputs.
* Biases are not regularised.
"""
import numpy as np

LEAKY_SLOPE = 0.01
HIDDEN = ("identity", "logistic", "tanh", "relu", "leaky_relu", "softplus")


# ---- activations g(z) and g'(z), scalar formulas applied element-wise ----------

def _sigmoid(z):
    # Stable on both sides: exp of a non-positive number only.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def g(name, z):
    """Activation of a vector of pre-activations z (one sample)."""
    if name == "identity":
        return z.copy()
    if name == "logistic":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, LEAKY_SLOPE * z)
    if name == "softplus":
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    if name == "softmax":
        e = np.exp(z - z.max())
        return e / e.sum()
    if name == "exp":
        return np.exp(z)
    raise ValueError(name)


def g_prime(name, z):
    """Element-wise derivative dg/dz at z (not defined for softmax)."""
    if name == "identity":
        return np.ones_like(z)
    if name == "logistic":
        s = _sigmoid(z)
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "relu":
        return np.where(z > 0, 1.0, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, LEAKY_SLOPE)
    if name == "softplus":
        return _sigmoid(z)
    if name == "exp":
        return np.exp(z)
    raise ValueError(name)


# ---- losses of one sample and dC/da ----------------------------------------

def sample_loss(loss, out_act, a, y, huber_delta=1.0, eps=np.finfo(np.float64).eps):
    """C_n for one sample, summed over the outputs."""
    r = a - y
    if loss == "squared_error":
        return 0.5 * np.sum(r * r)
    if loss == "huber":
        ar = np.abs(r)
        return np.sum(np.where(ar <= huber_delta, 0.5 * r * r,
                               huber_delta * (ar - 0.5 * huber_delta)))
    if loss == "log_loss":
        p = np.clip(a, eps, 1.0 - eps)
        total = 0.0
        for k in range(a.shape[0]):
            if y[k] != 0:
                total -= y[k] * np.log(p[k])
            if out_act == "logistic" and y[k] != 1:
                total -= (1.0 - y[k]) * np.log(1.0 - p[k])
        return total
    if loss == "poisson":  # half the Poisson deviance, y log(y/a) = 0 at y = 0
        return float(np.sum([(yk * np.log(yk / ak) if yk > 0 else 0.0) - yk + ak
                             for ak, yk in zip(a, y)]))
    raise ValueError(loss)


def output_delta(loss, out_act, z, a, y, huber_delta=1.0):
    """dC_n/dz for the output layer, by the chain rule (no shortcut assumed)."""
    r = a - y
    if loss == "squared_error":
        dc_da = r
    elif loss == "huber":
        dc_da = np.clip(r, -huber_delta, huber_delta)
    elif loss == "poisson":
        dc_da = 1.0 - y / a
    elif loss == "log_loss":
        if out_act == "logistic":
            # d/dz [-y log s - (1-y) log(1-s)] = s - y
            return a - y
        if out_act == "softmax":
            # d/dz_k [-sum_j y_j log p_j] = p_k sum_j y_j - y_k
            return a * y.sum() - y
        raise ValueError("log_loss needs a logistic or softmax output")
    else:
        raise ValueError(loss)
    if out_act == "softmax":
        raise ValueError("softmax is only used with log_loss")
    return dc_da * g_prime(out_act, z)


# ---- the network, one sample at a time -------------------------------------------

def feedforward(coefs, intercepts, x, hidden, out_act):
    """(zs, activations) of one sample; activations[0] is x."""
    n_layers = len(coefs)
    acts = [np.asarray(x, dtype=np.float64)]
    zs = []
    for l in range(n_layers):
        w = np.asarray(coefs[l], dtype=np.float64).T          # (n_out, n_in)
        b = np.asarray(intercepts[l], dtype=np.float64)
        z = np.array([sum(w[j, i] * acts[-1][i] for i in range(w.shape[1])) + b[j]
                      for j in range(w.shape[0])])
        name = hidden[l] if l < n_layers - 1 else out_act
        zs.append(z)
        acts.append(g(name, z))
    return zs, acts


def loss_and_gradient(coefs, intercepts, X, Y, activation="relu", out_activation="identity",
                      loss="squared_error", alpha=0.0, sample_weight=None, huber_delta=1.0):
    """Objective and (coef_grads, intercept_grads) in scikit-learn shapes.

    ``activation`` is one name for every hidden layer or a list of names.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n_layers = len(coefs)
    hidden = [activation] * (n_layers - 1) if isinstance(activation, str) else list(activation)
    s = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)

    dws = [np.zeros((np.shape(c)[1], np.shape(c)[0])) for c in coefs]   # (n_out, n_in)
    dbs = [np.zeros(np.shape(b)[0]) for b in intercepts]
    data = 0.0
    for n in range(X.shape[0]):
        zs, acts = feedforward(coefs, intercepts, X[n], hidden, out_activation)
        data += s[n] * sample_loss(loss, out_activation, acts[-1], Y[n], huber_delta)
        delta = output_delta(loss, out_activation, zs[-1], acts[-1], Y[n], huber_delta)
        for l in range(n_layers - 1, -1, -1):
            # dC/dw_ji = delta_j a_i ;  dC/db_j = delta_j
            dws[l] += s[n] * np.outer(delta, acts[l])
            dbs[l] += s[n] * delta
            if l > 0:
                w = np.asarray(coefs[l], dtype=np.float64).T
                # delta_i = g'(z_i) sum_j w_ji delta_j
                back = np.array([sum(w[j, i] * delta[j] for j in range(w.shape[0]))
                                 for i in range(w.shape[1])])
                delta = back * g_prime(hidden[l - 1], zs[l - 1])

    total_s = s.sum()
    sq = sum(float(np.sum(np.asarray(c, dtype=np.float64) ** 2)) for c in coefs)
    objective = data / total_s + 0.5 * alpha * sq / total_s
    coef_grads = [((dws[l] + alpha * np.asarray(coefs[l], dtype=np.float64).T) / total_s).T
                  for l in range(n_layers)]
    intercept_grads = [dbs[l] / total_s for l in range(n_layers)]
    return objective, coef_grads, intercept_grads


def pre_activations(coefs, intercepts, X, activation, out_activation):
    """All hidden and output pre-activations z of every sample, concatenated (1-D)."""
    n_layers = len(coefs)
    hidden = [activation] * (n_layers - 1) if isinstance(activation, str) else list(activation)
    parts = []
    for x in np.asarray(X, dtype=np.float64):
        zs, _ = feedforward(coefs, intercepts, x, hidden, out_activation)
        parts.extend(zs)
    return np.concatenate(parts)


def outputs(coefs, intercepts, X, activation, out_activation):
    """Network outputs (n_samples, n_outputs)."""
    n_layers = len(coefs)
    hidden = [activation] * (n_layers - 1) if isinstance(activation, str) else list(activation)
    return np.array([feedforward(coefs, intercepts, x, hidden, out_activation)[1][-1]
                     for x in np.asarray(X, dtype=np.float64)])


# ---- any feed-forward graph (shortcut connections), one sample at a time ------------

def dag_loss_and_gradient(coefs, intercepts, skip_coefs, X, Y, activation="relu",
                          out_activation="identity", loss="squared_error", alpha=0.0,
                          sample_weight=None, huber_delta=1.0):
    """Objective and (coef_grads, intercept_grads, skip_grads) of a network whose layer t
    takes input from a set of earlier layers (0 = the input).

    ``coefs[t - 1]`` is the block from layer t-1 to layer t ((0, n_out) when t-1 is
    not a source of t); ``skip_coefs`` maps (s, t) to the other blocks (n_s, n_t).
    Written from the math: ``z^t = b^t + sum_s W^{s,t}^T a^s``; backwards
    ``e^s = sum over the layers t that s feeds of W^{s,t} delta^t`` and
    ``delta^s = g'(z^s) e^s``, each layer's error complete before it is used.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n_layers = len(coefs)
    hidden = [activation] * (n_layers - 1) if isinstance(activation, str) else list(activation)
    s_w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    blocks = {}  # (s, t) -> w (n_t, n_s)
    for t in range(1, n_layers + 1):
        if np.shape(coefs[t - 1])[0]:
            blocks[(t - 1, t)] = np.asarray(coefs[t - 1], dtype=np.float64).T
    for key, c in skip_coefs.items():
        blocks[tuple(key)] = np.asarray(c, dtype=np.float64).T
    grads = {key: np.zeros_like(w) for key, w in blocks.items()}
    dbs = [np.zeros(np.shape(b)[0]) for b in intercepts]
    data = 0.0
    for n in range(X.shape[0]):
        acts, zs = [X[n]], [None]
        for t in range(1, n_layers + 1):
            z = np.asarray(intercepts[t - 1], dtype=np.float64).copy()
            for (s, tt), w in blocks.items():
                if tt == t:
                    z = z + np.array([sum(w[j, i] * acts[s][i] for i in range(w.shape[1]))
                                      for j in range(w.shape[0])])
            zs.append(z)
            acts.append(g(hidden[t - 1] if t < n_layers else out_activation, z))
        data += s_w[n] * sample_loss(loss, out_activation, acts[-1], Y[n], huber_delta)
        deltas = [None] * (n_layers + 1)
        deltas[n_layers] = output_delta(loss, out_activation, zs[-1], acts[-1], Y[n],
                                        huber_delta)
        for s in range(n_layers - 1, 0, -1):
            e = np.zeros(len(zs[s]))
            for (src, t), w in blocks.items():
                if src == s:
                    e += np.array([sum(w[j, i] * deltas[t][j] for j in range(w.shape[0]))
                                   for i in range(w.shape[1])])
            deltas[s] = e * g_prime(hidden[s - 1], zs[s])
        for (s, t), w in blocks.items():
            grads[(s, t)] += s_w[n] * np.outer(deltas[t], acts[s])
        for t in range(1, n_layers + 1):
            dbs[t - 1] += s_w[n] * deltas[t]
    total = s_w.sum()
    sq = sum(float(np.sum(w ** 2)) for w in blocks.values())
    objective = data / total + 0.5 * alpha * sq / total
    done = {key: ((grads[key] + alpha * blocks[key]) / total).T for key in blocks}
    coef_grads = [done.get((t - 1, t), np.zeros((0, np.shape(coefs[t - 1])[1])))
                  for t in range(1, n_layers + 1)]
    skip_grads = {tuple(key): done[tuple(key)] for key in skip_coefs}
    return objective, coef_grads, [b / total for b in dbs], skip_grads
