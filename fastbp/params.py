"""The flat parameter buffer: its offset table, per-layer views and initialisers.

All weights and biases live in one 1-D array ``theta`` (llm.c's single
allocation): layer l's weights ``w[j, i]`` (n_out, n_in, C-order) followed by
its biases ``b[j]``.  Gradients and optimizer moments use buffers with the same
offsets.  scikit-learn's ``coefs_[l]`` (n_in, n_out) is the transposed view
``w.T`` -- no copy.

Topology.  Layers are numbered as in the math of backpropagation over any
feed-forward graph: 0 = the input, 1..H the hidden layers, H+1 the output.
Layer t takes input from a set S(t) of earlier layers::

    z^t = b^t + sum_{s in S(t)} a^s W^{s,t},    a^t = g_t(z^t)

A chain is S(t) = {t-1}; a shortcut network (FANN's) S(t) = {0, ..., t-1}.
The *chain block* W^{t-1,t} of each layer comes first, in today's order
(weights then biases, layer by layer), so a chain network's buffer is exactly
the one it always was; a layer that does not take layer t-1 as a source keeps
an empty chain block (0 inputs).  The other blocks ("shortcut blocks") follow
after all chain blocks, sorted by (target, source), weights only: the bias of
a layer lives with its chain block.
"""
from collections.abc import Mapping
from numbers import Integral

import numpy as np

from .codes import (L_BOFF, L_COLS, L_NIN, L_NOUT, L_WOFF, LOGISTIC, L_ACT, S_COLS, S_DST,
                    S_NIN, S_NOUT, S_SRC, S_WOFF)

__all__ = ["Layout", "normalize_connections", "chain_sources", "is_chain",
           "sources_of_weights", "connections_dict"]


def chain_sources(n_hidden):
    """The sources of layers 1..H+1 of a chain: ``((0,), (1,), ..., (H,))``."""
    return tuple((t - 1,) for t in range(1, n_hidden + 2))


def is_chain(sources):
    """True when ``sources`` (as from :func:`normalize_connections`) is a chain."""
    return all(tuple(s) == (t,) for t, s in enumerate(sources))


def _layer_number(key, n_hidden, what):
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (Integral, np.integer)):
        raise ValueError(f"connections: {what} {key!r} is not a layer number; layers are "
                         f"numbered 0 = the input, 1..{n_hidden} the hidden layers, "
                         f"{n_hidden + 1} the output")
    return int(key)


def normalize_connections(connections, n_hidden):
    """The sources of every layer 1..H+1, validated: a tuple of sorted tuples.

    ``connections`` is ``"chain"`` (S(t) = {t-1}), ``"shortcut"`` (S(t) = {0..t-1},
    the output included) or a mapping ``{layer: [sources]}`` that overrides the
    chain's sources of the layers it lists.  Layers are numbered 0 = the input,
    1..H the hidden layers, H+1 the output.  Raises ValueError naming the bad
    entry: a layer that does not exist, a source that is not an earlier layer, a
    repeated or missing source, a hidden layer whose output reaches no later
    layer on a path to the output.
    """
    out = n_hidden + 1
    if isinstance(connections, str):
        if connections == "chain":
            return chain_sources(n_hidden)
        if connections == "shortcut":
            return tuple(tuple(range(t)) for t in range(1, out + 1))
        raise ValueError(f"connections: unknown name {connections!r}; expected 'chain', "
                         "'shortcut' or a mapping {layer: [sources]}")
    if not isinstance(connections, Mapping):
        raise ValueError("connections must be 'chain', 'shortcut' or a mapping {layer: "
                         f"[sources]}}, got {type(connections).__name__}")
    sources = [list(s) for s in chain_sources(n_hidden)]
    seen = set()
    for key, value in connections.items():
        t = _layer_number(key, n_hidden, "key")
        if not 1 <= t <= out:
            raise ValueError(f"connections: layer {t} does not exist; with {n_hidden} hidden "
                             f"layer(s) the layers that take sources are 1..{out} "
                             f"({out} = the output, 0 = the input)")
        if t in seen:
            raise ValueError(f"connections: layer {t} is listed twice")
        seen.add(t)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValueError(f"connections[{t}]: expected a list of source layers, got "
                             f"{value!r}")
        srcs = [_layer_number(s, n_hidden, f"source of layer {t}") for s in value]
        if not srcs:
            raise ValueError(f"connections[{t}]: layer {t} needs at least one source")
        for s in srcs:
            if not 0 <= s < t:
                raise ValueError(f"connections[{t}]: source {s} is not an earlier layer "
                                 f"(the sources of layer {t} must be in 0..{t - 1})")
        if len(set(srcs)) != len(srcs):
            raise ValueError(f"connections[{t}]: repeated source in {srcs}")
        sources[t - 1] = sorted(srcs)
    reaches = {out}  # layers with a path to the output
    for h in range(n_hidden, 0, -1):
        if any(h in sources[t - 1] and t in reaches for t in range(h + 1, out + 1)):
            reaches.add(h)
        else:
            raise ValueError(f"connections: hidden layer {h} feeds no layer on a path to "
                             f"the output (its units would never be used); make it a source "
                             f"of a later layer")
    return tuple(tuple(s) for s in sources)


def sources_of_weights(coefs, skip_keys):
    """The topology weights describe: ``coefs[l]`` with 0 rows (l > 0) = layer l+1
    does not take layer l as a source; ``skip_keys`` the (source, layer) pairs of
    the shortcut blocks.  Validated as by :func:`normalize_connections`."""
    n_hidden = len(coefs) - 1
    mapping = {t: [t - 1] if (t == 1 or np.shape(coefs[t - 1])[0] != 0) else []
               for t in range(1, n_hidden + 2)}
    for key in skip_keys:
        try:
            s, t = (int(v) for v in key)
        except (TypeError, ValueError):
            raise ValueError(f"skip_coefs: key {key!r} is not a (source, layer) pair") from None
        if t not in mapping:
            raise ValueError(f"skip_coefs[{key!r}]: layer {t} does not exist (layers "
                             f"1..{n_hidden + 1})")
        if s == t - 1:
            raise ValueError(f"skip_coefs[{key!r}]: the block from layer {s} to {t} is the "
                             f"chain block coefs[{t - 1}]")
        mapping[t].append(s)
    return normalize_connections(mapping, n_hidden)


def connections_dict(sources):
    """``{layer: [sources]}`` of every layer (JSON-ready once keys are strings)."""
    return {t: list(src) for t, src in enumerate(sources, start=1)}


class Layout:
    """Architecture and offsets of a network: ``sizes = [n_in, h1, ..., n_out]``.

    ``activations`` has one code per weight layer (hidden layers then output).
    ``sources`` (from :func:`normalize_connections`; None = a chain) gives the
    source layers of layers 1..H+1.  ``table`` is the layer table (row l =
    layer l+1; ``L_NIN`` = 0 when the layer does not take layer l as a
    source), ``skips`` the shortcut-block table (``codes.S_*``) and
    ``skip_keys`` its (source, target) pairs.
    """

    def __init__(self, sizes, activations, sources=None):
        sizes = [int(s) for s in sizes]
        if len(activations) != len(sizes) - 1:
            raise ValueError("need one activation per weight layer")
        self.sizes = sizes
        self.activations = [int(a) for a in activations]
        self.n_layers = len(sizes) - 1
        if sources is None:
            sources = chain_sources(self.n_layers - 1)
        sources = tuple(tuple(int(s) for s in src) for src in sources)
        if len(sources) != self.n_layers:
            raise ValueError("need the sources of every weight layer")
        self.sources = sources
        self.chain = is_chain(sources)
        table = np.zeros((self.n_layers, L_COLS), dtype=np.int64)
        off = 0
        for l in range(self.n_layers):
            n_in = sizes[l] if l in sources[l] else 0
            n_out = sizes[l + 1]
            table[l, L_NIN] = n_in
            table[l, L_NOUT] = n_out
            table[l, L_WOFF] = off
            off += n_in * n_out
            table[l, L_BOFF] = off
            off += n_out
            table[l, L_ACT] = self.activations[l]
        self.skip_keys = [(s, t) for t in range(1, self.n_layers + 1)
                          for s in sources[t - 1] if s != t - 1]
        skips = np.zeros((len(self.skip_keys), S_COLS), dtype=np.int64)
        for k, (s, t) in enumerate(self.skip_keys):
            skips[k, S_SRC] = s
            skips[k, S_DST] = t
            skips[k, S_NIN] = sizes[s]
            skips[k, S_NOUT] = sizes[t]
            skips[k, S_WOFF] = off
            off += sizes[s] * sizes[t]
        self.n_params = off
        self.table = table
        self.skips = skips
        self.n_blocks = self.n_layers + len(self.skip_keys)
        self.fan_in = [sum(sizes[s] for s in src) for src in sources]

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
        """scikit-learn's ``coefs_``: views ``w.T`` of shape (n_in, n_out).

        n_in is 0 for a layer that does not take the layer before it as a source.
        """
        return [w.T for w in self.weights(theta)]

    def skip_weights(self, theta):
        """Per shortcut block (``skip_keys`` order) its ``w`` view (n_out, n_in)."""
        s = self.skips
        return [theta[s[k, S_WOFF]:s[k, S_WOFF] + s[k, S_NIN] * s[k, S_NOUT]]
                .reshape(s[k, S_NOUT], s[k, S_NIN]) for k in range(len(self.skip_keys))]

    def skip_coefs(self, theta):
        """``skip_coefs_``: {(source, target): view ``w.T`` (n_source, n_target)}."""
        return {key: w.T for key, w in zip(self.skip_keys, self.skip_weights(theta))}

    def pack(self, coefs, intercepts, dtype, skip_coefs=None):
        """A new flat buffer from scikit-learn-shaped lists (copies).

        ``skip_coefs`` maps every (source, target) of ``skip_keys`` to an
        (n_source, n_target) array; None or {} for a chain.
        """
        theta = np.empty(self.n_params, dtype=dtype)
        if len(coefs) != self.n_layers or len(intercepts) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} coefs and intercepts, got "
                             f"{len(coefs)} and {len(intercepts)}")
        for l, (c, b) in enumerate(zip(coefs, intercepts)):
            c = np.asarray(c)
            b = np.asarray(b)
            n_in, n_out = int(self.table[l, L_NIN]), self.sizes[l + 1]
            if c.shape != (n_in, n_out) or b.shape != (n_out,):
                raise ValueError(
                    f"layer {l}: expected coefs of shape {(n_in, n_out)} and "
                    f"intercepts of shape {(n_out,)}, got {c.shape} and {b.shape}")
            self.weights(theta)[l][...] = c.T
            self.biases(theta)[l][...] = b
        skip_coefs = {} if skip_coefs is None else skip_coefs
        keys = {tuple(int(v) for v in k) for k in skip_coefs}
        if keys != set(self.skip_keys):
            missing = sorted(set(self.skip_keys) - keys)
            extra = sorted(keys - set(self.skip_keys))
            raise ValueError(f"skip_coefs: expected the blocks {self.skip_keys}"
                             + (f"; missing {missing}" if missing else "")
                             + (f"; not in the topology {extra}" if extra else ""))
        given = {tuple(int(v) for v in k): v for k, v in skip_coefs.items()}
        for (s, t), w in zip(self.skip_keys, self.skip_weights(theta)):
            c = np.asarray(given[(s, t)])
            if c.shape != (self.sizes[s], self.sizes[t]):
                raise ValueError(f"skip_coefs[{(s, t)}]: expected shape "
                                 f"{(self.sizes[s], self.sizes[t])}, got {c.shape}")
            w[...] = c.T
        return theta

    def init(self, rng, dtype, method="glorot", factor_codes=None):
        """Fresh parameters drawn from ``rng`` (a ``numpy.random.RandomState``).

        glorot: scikit-learn's draw, in its order (per layer: coefs (n_in, n_out)
        then intercepts), bound ``sqrt(f / (fan_in + n_out))`` with f = 2 for a
        logistic layer and 6 otherwise -- the same ``random_state`` gives
        scikit-learn's starting weights.  ``factor_codes`` gives the
        activation that picks f per layer (scikit-learn uses the hidden
        activation for every layer).
        he: weights ~ N(0, 2 / fan_in) (relu-family nets), biases 0.

        fan_in is the layer's total fan-in, summed over all its sources (n_in for
        a chain).  The shortcut blocks are drawn after every chain block and
        bias, in ``skip_keys`` order, with their target layer's scale: a chain
        network draws exactly what it always did.
        """
        codes = factor_codes if factor_codes is not None else self.activations
        if method not in ("glorot", "he"):
            raise ValueError(f"unknown init {method!r}; expected 'glorot' or 'he'")
        coefs, intercepts = [], []

        def draw(l, shape):
            fan_in, n_out = self.fan_in[l], self.sizes[l + 1]
            if method == "glorot":
                f = 2.0 if codes[l] == LOGISTIC else 6.0
                bound = np.sqrt(f / (fan_in + n_out))
                return rng.uniform(-bound, bound, shape)
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)

        for l in range(self.n_layers):
            n_in, n_out = int(self.table[l, L_NIN]), self.sizes[l + 1]
            coefs.append(draw(l, (n_in, n_out)))
            intercepts.append(draw(l, n_out) if method == "glorot" else np.zeros(n_out))
        skip_coefs = {(s, t): draw(t - 1, (self.sizes[s], self.sizes[t])).astype(dtype)
                      for s, t in self.skip_keys}
        return self.pack([c.astype(dtype) for c in coefs],
                         [b.astype(dtype) for b in intercepts], dtype, skip_coefs)
