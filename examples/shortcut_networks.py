"""Shortcut connections: a deep, narrow net that learns where its chain twin cannot.

    python examples/shortcut_networks.py

Layers are numbered 0 = the input, 1..H the hidden layers, H+1 the output.  A chain
(scikit-learn's MLP) feeds each layer from the one before it; ``connections="shortcut"``
(FANN's shortcut network) feeds every layer, the output included, from *all* earlier
layers and the input; a dict ``{layer: [sources]}`` picks any other feed-forward graph.

With six hidden logistic layers of 8 units, the error reaching the first layer of the
chain has been multiplied by g' <= 1/4 six times: its gradient vanishes and sgd stays at
chance.  The shortcut net of the same widths gets the output's error straight into
every layer, and learns.  ``history_["grad_norms"]`` shows it: one mean gradient norm
per layer, then one per shortcut block (``skip_coefs_`` order).
"""
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import fastbp


def main():
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=0, stratify=y)
    # a few border pixels are (almost) always 0 in the training split, so a test digit
    # that touches them is "far outside the training range": known here, not a mistake
    warnings.simplefilter("ignore", fastbp.InputRangeWarning)
    settings = dict(hidden_layer_sizes=(8,) * 6, activation="logistic", solver="sgd",
                    learning_rate_init=0.1, momentum=0.9, max_iter=30, n_iter_no_change=1000,
                    random_state=0)
    models = {}
    for connections in ("chain", "shortcut", {7: [0, 6]}):
        model = fastbp.MLPClassifier(connections=connections, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_tr, y_tr)
        name = connections if isinstance(connections, str) else f"dict {connections}"
        models[name] = model
        norms = np.array(model.history_["grad_norms"])
        n_params = sum(c.size + b.size for c, b in zip(model.coefs_, model.intercepts_)) + \
            sum(c.size for c in model.skip_coefs_.values())
        print(f"{name:>20}: {n_params:5d} parameters, {len(model.skip_coefs_):2d} shortcut "
              f"blocks, first-layer gradient norm (epoch 1) {norms[0, 0]:.2e}, "
              f"test accuracy {model.score(X_te, y_te):.3f}")
    short = models["shortcut"]
    print("shortcut blocks (source, layer) -> shape:",
          {key: value.shape for key, value in list(short.skip_coefs_.items())[:4]}, "...")

    # coefs_ keep scikit-learn's meaning (the chain blocks); zeroing every shortcut
    # block turns the shortcut net into a chain with those weights
    chain_view = fastbp.MLPClassifier(**settings).set_params(max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        chain_view.fit(X_tr[:50], y_tr[:50])
    chain_view.coefs_ = [c.copy() for c in short.coefs_]
    chain_view.intercepts_ = [b.copy() for b in short.intercepts_]
    zeroed = {key: np.zeros_like(value) for key, value in short.skip_coefs_.items()}
    saved = short.skip_coefs_
    short.skip_coefs_ = zeroed
    same = np.allclose(short.predict_proba(X_te), chain_view.predict_proba(X_te), rtol=1e-12)
    short.skip_coefs_ = saved
    print(f"shortcut net with its shortcut blocks zeroed == chain with the same coefs_: {same}")


if __name__ == "__main__":
    main()
