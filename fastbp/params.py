"""The flat parameter buffer: its offset table, per-layer views and initialisers.

All weights and biases live in one 1-D array ``theta`` (llm.c's single
allocation): layer l's weights ``w[j, i]`` (n_out, n_in, C-order) followed by
its biases ``b[j]``.  Gradients and optimizer moments use buffers with the same
offsets.  scikit-learn's ``coefs_[l]`` (n_in, n_out) is the transposed view
``w.T`` -- no copy.
"""
import numpy as np

from .codes import L_BOFF, L_COLS, L_NIN, L_NOUT, L_WOFF, LOGISTIC, L_ACT

__all__ = ["Layout"]


class Layout:
    """Architecture and offsets of a network: ``sizes = [n_in, h1, ..., n_out]``.

    ``activations`` has one code per weight layer (hidden layers then output).
    """

    def __init__(self, sizes, activations):
        sizes = [int(s) for s in sizes]
        if len(activations) != len(sizes) - 1:
            raise ValueError("need one activation per weight layer")
        self.sizes = sizes
        self.activations = [int(a) for a in activations]
        self.n_layers = len(sizes) - 1
        table = np.zeros((self.n_layers, L_COLS), dtype=np.int64)
        off = 0
        for l in range(self.n_layers):
            n_in, n_out = sizes[l], sizes[l + 1]
            table[l, L_NIN] = n_in
            table[l, L_NOUT] = n_out
            table[l, L_WOFF] = off
            off += n_in * n_out
            table[l, L_BOFF] = off
            off += n_out
            table[l, L_ACT] = self.activations[l]
        self.n_params = off
        self.table = table

    # -- parameters -----------------------------------------------------------
    def weights(self, theta):
        """Per-layer ``w`` views (n_out, n_in) of a flat buffer."""
        t = self.table
        return [theta[t[l, L_WOFF]:t[l, L_BOFF]].reshape(t[l, L_NOUT], t[l, L_NIN])
                for l in range(self.n_layers)]

    def biases(self, theta):
        """Per-layer ``b`` views (n_out,) of a flat buffer."""
        t = self.table
        return [theta[t[l, L_BOFF]:t[l, L_BOFF] + t[l, L_NOUT]] for l in range(self.n_layers)]

    def coefs(self, theta):
        """scikit-learn's ``coefs_``: views ``w.T`` of shape (n_in, n_out)."""
        return [w.T for w in self.weights(theta)]

    def pack(self, coefs, intercepts, dtype):
        """A new flat buffer from scikit-learn-shaped lists (copies)."""
        theta = np.empty(self.n_params, dtype=dtype)
        for l, (c, b) in enumerate(zip(coefs, intercepts)):
            c = np.asarray(c)
            b = np.asarray(b)
            n_in, n_out = self.sizes[l], self.sizes[l + 1]
            if c.shape != (n_in, n_out) or b.shape != (n_out,):
                raise ValueError(
                    f"layer {l}: expected coefs of shape {(n_in, n_out)} and "
                    f"intercepts of shape {(n_out,)}, got {c.shape} and {b.shape}")
            self.weights(theta)[l][...] = c.T
            self.biases(theta)[l][...] = b
        return theta

    def init(self, rng, dtype, method="glorot", factor_codes=None):
        """Fresh parameters drawn from ``rng`` (a ``numpy.random.RandomState``).

        glorot: scikit-learn's draw, in its order (per layer: coefs (n_in, n_out)
        then intercepts), bound ``sqrt(f / (n_in + n_out))`` with f = 2 for a
        logistic layer and 6 otherwise -- the same ``random_state`` gives
        scikit-learn's starting weights.  ``factor_codes`` gives the
        activation that picks f per layer (scikit-learn uses the hidden
        activation for every layer).
        he: weights ~ N(0, 2 / n_in) (relu-family nets), biases 0.
        """
        codes = factor_codes if factor_codes is not None else self.activations
        coefs, intercepts = [], []
        for l in range(self.n_layers):
            n_in, n_out = self.sizes[l], self.sizes[l + 1]
            if method == "glorot":
                f = 2.0 if codes[l] == LOGISTIC else 6.0
                bound = np.sqrt(f / (n_in + n_out))
                coefs.append(rng.uniform(-bound, bound, (n_in, n_out)))
                intercepts.append(rng.uniform(-bound, bound, n_out))
            elif method == "he":
                coefs.append(rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_out)))
                intercepts.append(np.zeros(n_out))
            else:
                raise ValueError(f"unknown init {method!r}; expected 'glorot' or 'he'")
        return self.pack([c.astype(dtype) for c in coefs],
                         [b.astype(dtype) for b in intercepts], dtype)
