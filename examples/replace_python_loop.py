"""Replace a per-example Python backprop loop (network2-style) with one fastbp call.

    python examples/replace_python_loop.py

The first half is the classic loop of Nielsen's ``network2.py``: sigmoid hidden and
output units, cross-entropy cost, L2 regularisation by weight decay
``w <- (1 - eta*lmbda/n) w - (eta/m) sum_x dC_x/dw`` and mini-batch SGD, one
training example at a time.  The second half trains the same network with
``fastbp.MLPClassifier`` from the same starting weights, checks that both end with
the same weights, and prints the speed-up.

The mapping (network2 -> fastbp / scikit-learn names):

    sizes=[n_in, h, n_out]     -> hidden_layer_sizes=(h,)  (inner layers only),
                                  activation="logistic" (sigmoid hidden units)
    sigmoid output +
    CrossEntropyCost           -> one-hot targets given as a multilabel ``y``: the
                                  output is then one sigmoid per unit with binary
                                  log-loss, whose output delta is network2's (a - y)
                                  (a plain label vector would give softmax instead)
    eta                        -> learning_rate_init=eta, solver="sgd", momentum=0,
                                  learning_rate="constant"
    mini_batch_size            -> batch_size=mini_batch_size
    epochs                     -> max_iter=epochs, with n_iter_no_change >= max_iter and
                                  tol=0 so no epoch is skipped by early stopping
    lmbda                      -> alpha = lmbda * mini_batch_size / n
        network2 shrinks w by eta*lmbda/n per step; scikit-learn adds alpha*w to the
        batch-summed gradient and divides by the batch size, i.e. shrinks by
        eta*alpha/m: equal when alpha/m = lmbda/n.  (Biases are not decayed in either.)
    random.shuffle per epoch   -> shuffle=True draws a different order; for identical
                                  weights both sides here use the data in order
                                  (network2 without its shuffle, fastbp shuffle=False)
    weights[l] (n_out, n_in)   -> coefs_[l] (n_in, n_out) = weights[l].T
    biases[l]  (n_out, 1)      -> intercepts_[l] (n_out,)

What still differs by default: fastbp starts from scikit-learn's Glorot-uniform
weights, network2 from N(0, 1/n_in); here fastbp is given network2's start.  And n
should be a multiple of mini_batch_size: on a short last batch network2 still decays
by eta*lmbda/n while scikit-learn's decay is eta*alpha/(that batch's size).
"""
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits

import fastbp


# -- the Python loop, network2-style ---------------------------------------------------------
def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


class Network:
    """network2's Network with CrossEntropyCost, its default weight initializer and SGD."""

    def __init__(self, sizes, rng):
        self.sizes = sizes
        self.biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]
        self.weights = [rng.standard_normal((y, x)) / np.sqrt(x)
                        for x, y in zip(sizes[:-1], sizes[1:])]

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def SGD(self, training_data, epochs, mini_batch_size, eta, lmbda):
        n = len(training_data)
        for _ in range(epochs):
            # network2 calls random.shuffle(training_data) here; see the mapping above
            mini_batches = [training_data[k:k + mini_batch_size]
                            for k in range(0, n, mini_batch_size)]
            for mini_batch in mini_batches:
                self.update_mini_batch(mini_batch, eta, lmbda, n)

    def update_mini_batch(self, mini_batch, eta, lmbda, n):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [(1 - eta * (lmbda / n)) * w - (eta / len(mini_batch)) * nw
                        for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = activations[-1] - y  # CrossEntropyCost.delta: (a - y), no sigma' term
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, len(self.sizes)):
            z = zs[-l]
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sigmoid_prime(z)
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w


# -- the same training with fastbp ------------------------------------------------------------
def fastbp_twin(net, X, Y, epochs, mini_batch_size, eta, lmbda):
    """A fastbp.MLPClassifier that trains exactly as ``Network.SGD`` from ``net``'s weights."""
    n = X.shape[0]
    model = fastbp.MLPClassifier(
        hidden_layer_sizes=tuple(net.sizes[1:-1]),  # sizes -> inner layers only
        activation="logistic",                      # sigmoid hidden units
        solver="sgd", momentum=0.0, learning_rate="constant",
        learning_rate_init=eta,                     # eta
        batch_size=mini_batch_size,                 # mini_batch_size
        alpha=lmbda * mini_batch_size / n,          # lmbda (see the module docstring)
        max_iter=epochs,                            # epochs
        n_iter_no_change=epochs, tol=0.0,           # never stop before `epochs`
        shuffle=False)
    # Give it network2's starting point: a 1-epoch fit creates the fitted state, then
    # coefs_/intercepts_ are assigned and warm_start continues from them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the 1-epoch fit
        model.set_params(max_iter=1).fit(X[:mini_batch_size], Y[:mini_batch_size])
    model.coefs_ = [w.T.copy() for w in net.weights]
    model.intercepts_ = [b.ravel().copy() for b in net.biases]
    return model.set_params(max_iter=epochs, warm_start=True)


def main():
    eta, lmbda, mini_batch_size, epochs = 0.5, 5.0, 10, 20
    X, labels = load_digits(return_X_y=True)
    X = X[:1000] / 16.0                      # n = 1000, a multiple of mini_batch_size
    labels = labels[:1000]
    Y = np.eye(10)[labels]                   # one-hot rows: a multilabel y for fastbp
    n = X.shape[0]
    rng = np.random.default_rng(0)
    net = Network([64, 30, 10], rng)

    model = fastbp_twin(net, X, Y, epochs, mini_batch_size, eta, lmbda)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # ConvergenceWarning: max_iter is the plan here
        model.fit(X, Y)                      # compile (or load from cache) before timing
        model = fastbp_twin(net, X, Y, epochs, mini_batch_size, eta, lmbda)
        t0 = time.perf_counter()
        model.fit(X, Y)
        t_fastbp = time.perf_counter() - t0

    # network2's data layout: a list of (x (64, 1), y (10, 1)) column-vector tuples
    training_data = [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X, Y)]
    t0 = time.perf_counter()
    net.SGD(training_data, epochs, mini_batch_size, eta, lmbda)
    t_loop = time.perf_counter() - t0

    diff = max(max(np.abs(w.T - c).max() for w, c in zip(net.weights, model.coefs_)),
               max(np.abs(b.ravel() - i).max() for b, i in zip(net.biases, model.intercepts_)))
    assert diff < 1e-9, f"weights differ by {diff:.3g}"
    acc_loop = np.mean([np.argmax(net.feedforward(x)) == y
                        for (x, _), y in zip(training_data, labels)])
    acc_fastbp = np.mean(np.argmax(model.predict_proba(X), axis=1) == labels)
    print(f"{n} digits, sizes [64, 30, 10], eta {eta}, lmbda {lmbda}, "
          f"mini_batch_size {mini_batch_size}, {epochs} epochs")
    print(f"python loop (network2-style): {t_loop:8.3f} s   training accuracy {acc_loop:.4f}")
    print(f"fastbp.MLPClassifier:         {t_fastbp:8.3f} s   training accuracy {acc_fastbp:.4f}")
    print(f"same weights: largest difference {diff:.2e}")
    print(f"speed-up: {t_loop / t_fastbp:.1f}x")


if __name__ == "__main__":
    main()
