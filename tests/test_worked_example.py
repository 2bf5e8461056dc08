"""One SGD step on a 3-2-1 network, worked out by hand (scikit-learn's ``test_fit``).

Network: 3 inputs -> 2 logistic hidden units -> 1 identity output, squared error
C = 1/2 (a - y)^2, plain SGD (no momentum), learning rate 0.1, one sample.
The weights are set through ``fastbp.params.Layout.pack`` from scikit-learn-shaped
coefs (n_in, n_out) and intercepts.

The numbers are chosen so every value is exact in binary except ln 3:

    x = (1, 2, 3),  y = 0.5

    hidden unit 1: w = (1, 1, -1),     b = 0     -> z = 1 + 2 - 3 + 0       = 0
                                                  a = sigmoid(0)             = 1/2
    hidden unit 2: w = (0.5, -0.25, 0), b = ln 3 -> z = 0.5 - 0.5 + 0 + ln 3 = ln 3
                                                  a = 1 / (1 + e^-ln3) = 1 / (1 + 1/3) = 3/4
    output:        w = (2, -4),        b = 1     -> z = 2 (1/2) - 4 (3/4) + 1  = -1
                                                  a = z (identity)          = -1

    loss    C = 1/2 (a - y)^2 = 1/2 (-1.5)^2 = 1.125
    delta_out = dC/dz_out = a - y             = -1.5

    output gradients:  dC/dw_j = delta_out * a_j = (-1.5 * 0.5, -1.5 * 0.75) = (-0.75, -1.125)
                       dC/db   = delta_out                                      = -1.5
    hidden deltas:     delta_j = a_j (1 - a_j) * w_out_j * delta_out
                       delta_1 = 0.25   *  2 * -1.5 = -0.75
                       delta_2 = 0.1875 * -4 * -1.5 =  1.125
    hidden gradients:  dC/dw_ji = delta_j x_i
                       unit 1: -0.75 * (1, 2, 3) = (-0.75, -1.5, -2.25)
                       unit 2:  1.125 * (1, 2, 3) = ( 1.125, 2.25, 3.375)
                       dC/db   = (-0.75, 1.125)

    SGD step theta <- theta - 0.1 * grad:
       hidden coefs (rows = inputs i, columns = units j, scikit-learn's layout):
          [[ 1    + 0.075,   0.5   - 0.1125 ],      [[ 1.075, 0.3875],
           [ 1    + 0.15,   -0.25  - 0.225  ],  =    [ 1.15, -0.475 ],
           [-1    + 0.225,   0     - 0.3375 ]]       [-0.775, -0.3375]]
       hidden intercepts: (0 + 0.075, ln 3 - 0.1125)
       output coefs: [[2 + 0.075], [-4 + 0.1125]] = [[2.075], [-3.8875]]
       output intercept: 1 + 0.15 = 1.15
"""
import numpy as np
import pytest

from fastbp.codes import ACTIVATION_CODES
from fastbp.api import loss_and_gradient
from fastbp.optimizers import Optimizer
from fastbp.params import Layout
from fastbp.network import Network
from fastbp.trainer import run_epoch

# Tiny shapes: CI also runs this module with NUMBA_DISABLE_JIT=1 (kernel bodies as Python).
pytestmark = pytest.mark.nojit

LN3 = np.log(3.0)
X = np.array([[1.0, 2.0, 3.0]])
Y = np.array([[0.5]])
COEFS = [np.array([[1.0, 0.5], [1.0, -0.25], [-1.0, 0.0]]), np.array([[2.0], [-4.0]])]
INTERCEPTS = [np.array([0.0, LN3]), np.array([1.0])]

GRAD_COEFS = [np.array([[-0.75, 1.125], [-1.5, 2.25], [-2.25, 3.375]]),
              np.array([[-0.75], [-1.125]])]
GRAD_INTERCEPTS = [np.array([-0.75, 1.125]), np.array([-1.5])]

NEW_COEFS = [np.array([[1.075, 0.3875], [1.15, -0.475], [-0.775, -0.3375]]),
             np.array([[2.075], [-3.8875]])]
NEW_INTERCEPTS = [np.array([0.075, LN3 - 0.1125]), np.array([1.15])]


def test_pack_puts_weights_where_the_views_read_them():
    layout = Layout([3, 2, 1], [ACTIVATION_CODES["logistic"], ACTIVATION_CODES["identity"]])
    theta = layout.pack(COEFS, INTERCEPTS, np.float64)
    assert theta.shape == (3 * 2 + 2 + 2 * 1 + 1,)
    # layer 0: w (2, 3) row j = hidden unit j over inputs, then b; layer 1: w (1, 2), b
    np.testing.assert_array_equal(theta, [1, 1, -1, 0.5, -0.25, 0, 0, LN3, 2, -4, 1])
    for got, want in zip(layout.coefs(theta), COEFS):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["loops", "blas", "python"])
def test_gradient_by_hand(backend):
    loss, coef_grads, intercept_grads = loss_and_gradient(
        COEFS, INTERCEPTS, X, Y, activation="logistic", out_activation="identity",
        loss="squared_error", backend=backend)
    assert loss == pytest.approx(1.125, rel=1e-15)
    for got, want in zip(coef_grads + intercept_grads, GRAD_COEFS + GRAD_INTERCEPTS):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("backend", ["loops", "blas", "python"])
def test_one_sgd_step_by_hand(backend):
    net = Network([3, 2, 1], ["logistic"], "identity", "squared_error", np.float64, backend)
    theta = net.layout.pack(COEFS, INTERCEPTS, np.float64)
    grad = np.zeros_like(theta)
    opt = Optimizer("sgd", theta.size, np.float64, learning_rate_init=0.1, momentum=0.0,
                    nesterovs_momentum=False)
    loss, _ = run_epoch(net, theta, grad, opt, X, Y, np.empty(0), np.empty(0, np.int64),
                        1, 0.0, 0.0)
    assert loss == pytest.approx(1.125, rel=1e-15)     # the loss before the step
    for got, want in zip(net.layout.coefs(theta), NEW_COEFS):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    for got, want in zip(net.layout.biases(theta), NEW_INTERCEPTS):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    # the step went downhill
    new_loss, _, _ = loss_and_gradient(net.layout.coefs(theta), net.layout.biases(theta), X, Y,
                                       activation="logistic", loss="squared_error")
    assert new_loss < 1.125
