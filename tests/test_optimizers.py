"""The optimizers: each update worked out by hand, the compiled step against its BLAS twin,
and the learning-rate schedules seen through the estimator.

* ``optimizer_step`` (``kernels_loop``, serial and parallel twins and their
  plain-Python source, and ``kernels_blas``) on two parameters with non-zero
  moments, one hand-checked step per rule: plain SGD, momentum, Nesterov, Adam,
  RMSprop, Adagrad.  ``beta1`` carries SGD's momentum; Adam's ``lr`` arrives
  bias-corrected.  The numbers are chosen so every step is exact in binary
  except the divisions by (sqrt(v) + eps).
* Two epochs of the estimator on a one-sample linear problem for every solver,
  from weights set by hand: checks the wiring from the estimator's parameters
  to the engine (momentum, Nesterov, beta_1, beta_2, epsilon) and Adam's bias
  correction, which lives outside the kernel.
* The schedules: ``constant``, ``invscaling`` (through the weights and
  ``history_``), ``adaptive`` (lr / 5 on a stall, stop once lr <= 1e-6) and
  adaptive being ignored by adam as in scikit-learn.
"""
import numpy as np
import pytest

from fastbp import MLPRegressor
from fastbp import kernels_blas as kb
from fastbp import kernels_loop as kl
from fastbp.codes import OPT_ADAGRAD, OPT_ADAM, OPT_RMSPROP, OPT_SGD
from helpers import assert_close, fit_quietly, tol_for

# Tiny shapes: CI also runs this module with NUMBA_DISABLE_JIT=1 (kernel bodies as Python).
pytestmark = pytest.mark.nojit

DTYPES = [np.float32, np.float64]
FORMS = ["serial", "parallel", "python", "blas"]


def optimizer_step(form):
    """``optimizer_step`` as compiled serial or parallel twin, plain Python, or BLAS twin."""
    if form == "blas":
        return kb.optimizer_step
    if form == "python":  # the source (itself under NUMBA_DISABLE_JIT)
        return getattr(kl.optimizer_step_serial, "py_func", kl.optimizer_step_serial)
    return getattr(kl, f"optimizer_step_{form}")


def step(form, dtype, code, theta, grad, m1, m2, lr, beta1=0.0, beta2=0.0, eps=0.0,
         nesterov=False):
    """One step on copies; returns (theta, m1, m2) after it."""
    theta, grad, m1, m2 = (np.array(a, dtype=dtype) for a in (theta, grad, m1, m2))
    optimizer_step(form)(code, theta, grad, m1, m2, float(lr), float(beta1), float(beta2),
                         float(eps), bool(nesterov))
    assert theta.dtype == m1.dtype == m2.dtype == dtype
    return theta, m1, m2


# ---- one step of each rule, by hand -------------------------------------------------
# Shared inputs: theta = (1, -2), g = (2, -4), velocity / first moment m1 = (0.5, -1).

@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_step_by_hand(form, dtype):
    # v <- mu v - lr g;  theta <- theta + v        (mu = 0.5, lr = 0.25)
    #   v     = 0.5 (0.5, -1) - 0.25 (2, -4) = (0.25 - 0.5, -0.5 + 1) = (-0.25, 0.5)
    #   theta = (1, -2) + (-0.25, 0.5)                                 = (0.75, -1.5)
    theta, m1, m2 = step(form, dtype, OPT_SGD, [1, -2], [2, -4], [0.5, -1], [7, 7],
                         lr=0.25, beta1=0.5)
    assert_close(m1, [-0.25, 0.5], what="velocity")
    assert_close(theta, [0.75, -1.5], what="theta")
    assert_close(m2, [7, 7], 0.0, "sgd leaves the second moment alone")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_sgd_step_by_hand(form, dtype):
    # momentum 0: the old velocity is forgotten, theta <- theta - lr g
    #   v     = 0 (0.5, -1) - 0.25 (2, -4) = (-0.5, 1)
    #   theta = (1, -2) + (-0.5, 1)        = (0.5, -1)
    theta, m1, _ = step(form, dtype, OPT_SGD, [1, -2], [2, -4], [0.5, -1], [0, 0],
                        lr=0.25, beta1=0.0)
    assert_close(m1, [-0.5, 1.0], what="velocity")
    assert_close(theta, [0.5, -1.0], what="theta")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nesterov_step_by_hand(form, dtype):
    # v <- mu v - lr g;  theta <- theta + mu v - lr g   (scikit-learn's form; mu 0.5, lr 0.25)
    #   v     = (-0.25, 0.5)                                      (as with plain momentum)
    #   theta = (1, -2) + 0.5 (-0.25, 0.5) - 0.25 (2, -4)
    #         = (1 - 0.125 - 0.5, -2 + 0.25 + 1)                  = (0.375, -0.75)
    theta, m1, _ = step(form, dtype, OPT_SGD, [1, -2], [2, -4], [0.5, -1], [0, 0],
                        lr=0.25, beta1=0.5, nesterov=True)
    assert_close(m1, [-0.25, 0.5], what="velocity")
    assert_close(theta, [0.375, -0.75], what="theta")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step_by_hand(form, dtype):
    # m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  theta <- theta - lr m / (sqrt(v) + eps)
    # with b1 = 0.5, b2 = 0.75, eps = 0.5, lr = 0.3 (already bias-corrected by the caller),
    # theta = (1, -1), m = (0.5, -1), v = (4, 16):
    #   m     = 0.5 (0.5, -1) + 0.5 (2, -4)     = (1.25, -2.5)
    #   v     = 0.75 (4, 16) + 0.25 (4, 16)     = (4, 16),   sqrt(v) = (2, 4)
    #   theta = (1 - 0.3 * 1.25 / (2 + 0.5), -1 + 0.3 * 2.5 / (4 + 0.5))
    #         = (1 - 0.15, -1 + 1/6)            = (0.85, -0.8333...)
    # (eps outside the root: sqrt(v + eps) would give 1 - 0.375 / sqrt(4.5) = 0.8232...)
    theta, m1, m2 = step(form, dtype, OPT_ADAM, [1, -1], [2, -4], [0.5, -1], [4, 16],
                         lr=0.3, beta1=0.5, beta2=0.75, eps=0.5)
    assert_close(m1, [1.25, -2.5], what="first moment")
    assert_close(m2, [4.0, 16.0], what="second moment")
    assert_close(theta, [0.85, -1 + 1 / 6], what="theta")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_step_by_hand(form, dtype):
    # v <- rho v + (1 - rho) g^2;  theta <- theta - lr g / (sqrt(v) + eps)
    # with rho = beta2 = 0.75, eps = 0.5, lr = 0.3, theta = (1, -1), v = (4, 16):
    #   v     = 0.75 (4, 16) + 0.25 (4, 16)          = (4, 16),  sqrt(v) = (2, 4)
    #   theta = (1 - 0.3 * 2 / 2.5, -1 + 0.3 * 4 / 4.5) = (1 - 0.24, -1 + 0.2666...)
    #         = (0.76, -0.7333...)
    theta, m1, m2 = step(form, dtype, OPT_RMSPROP, [1, -1], [2, -4], [0.5, -1], [4, 16],
                         lr=0.3, beta1=0.9, beta2=0.75, eps=0.5)
    assert_close(m2, [4.0, 16.0], what="mean square")
    assert_close(theta, [0.76, -1 + 1.2 / 4.5], what="theta")
    assert_close(m1, [0.5, -1], 0.0, "rmsprop leaves the first moment alone")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_step_by_hand(form, dtype):
    # v <- v + g^2;  theta <- theta - lr g / (sqrt(v) + eps)
    # with eps = 0.5, lr = 0.3, theta = (1, -1), v = (5, 9):
    #   v     = (5 + 4, 9 + 16)                     = (9, 25),  sqrt(v) = (3, 5)
    #   theta = (1 - 0.3 * 2 / 3.5, -1 + 0.3 * 4 / 5.5) = (1 - 0.171428..., -1 + 0.218181...)
    #         = (0.828571..., -0.781818...)
    theta, m1, m2 = step(form, dtype, OPT_ADAGRAD, [1, -1], [2, -4], [0.5, -1], [5, 9],
                         lr=0.3, beta1=0.9, beta2=0.75, eps=0.5)
    assert_close(m2, [9.0, 25.0], what="sum of squares")
    assert_close(theta, [1 - 0.6 / 3.5, -1 + 1.2 / 5.5], what="theta")
    assert_close(m1, [0.5, -1], 0.0, "adagrad leaves the first moment alone")


# ---- the compiled step against its BLAS twin over longer vectors --------------------

RULES = [("sgd", OPT_SGD, False), ("sgd-nesterov", OPT_SGD, True), ("adam", OPT_ADAM, False),
         ("rmsprop", OPT_RMSPROP, False), ("adagrad", OPT_ADAGRAD, False)]


@pytest.mark.parametrize("form", ["serial", "parallel", "python"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,code,nesterov", RULES, ids=[r[0] for r in RULES])
@pytest.mark.parametrize("p", [1, 7, 1001])
def test_optimizer_step_matches_blas_twin(rng, form, dtype, name, code, nesterov, p):
    theta = rng.standard_normal(p).astype(dtype)
    m1 = (rng.standard_normal(p) * 0.1).astype(dtype)
    m2 = (rng.random(p) * 0.1).astype(dtype)
    state = [theta.copy(), m1.copy(), m2.copy()]
    ref = [theta.copy(), m1.copy(), m2.copy()]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(3):      # a few steps so the moments evolve
        grad = rng.standard_normal(p).astype(dtype)
        lr = 0.01 * (t + 1)
        optimizer_step(form)(code, state[0], grad, state[1], state[2], lr, beta1, beta2, eps,
                             nesterov)
        kb.optimizer_step(code, ref[0], grad, ref[1], ref[2], lr, beta1, beta2, eps, nesterov)
    for got, want, what in zip(state, ref, ("theta", "m1", "m2")):
        assert got.dtype == dtype
        assert_close(got, want, tol_for(dtype), f"{name} {what}")
    assert not np.array_equal(state[0], theta), "the parameters did not move"


# ---- two epochs of the estimator, by hand ----------------------------------------------
# A network with no hidden layer and an identity output is a = w1 x1 + w2 x2 + b.  One
# sample x = (1, 2), y = 1, squared error C = 1/2 (a - y)^2, no L2, batch of 1: each epoch
# is one step with the gradient dC/d(w1, w2, b) = (a - y) (x1, x2, 1).
# Start: w = (1, 1), b = 0  ->  a = 3, a - y = 2, C = 2, g1 = (2, 4, 2).
X1 = np.array([[1.0, 2.0]])
Y1 = np.array([1.0])


def two_epochs(**params):
    """The estimator after two epochs from w = (1, 1), b = 0, with a fresh optimizer.

    The weights are set the supported way for a warm start: fit once (any
    weights), assign ``coefs_`` and ``intercepts_``, fit again with
    ``warm_start=True`` (a new optimizer state, as ``fit`` always makes).
    """
    kw = dict(hidden_layer_sizes=(), learning_rate_init=0.1, alpha=0.0, batch_size=1,
              shuffle=False, max_iter=1, warm_start=True, random_state=0)
    kw.update(params)
    model = fit_quietly(MLPRegressor(**kw), X1, Y1)
    model.coefs_ = [np.array([[1.0], [1.0]])]
    model.intercepts_ = [np.array([0.0])]
    model.set_params(max_iter=2)
    return fit_quietly(model, X1, Y1)


def assert_weights(model, w1, w2, b, loss1, loss2):
    """theta = (w1, w2, b) after the two steps; the epoch losses (at theta0, theta1)."""
    assert_close([*model.coefs_[0].ravel(), *model.intercepts_[0]], [w1, w2, b], 1e-12,
                 "weights after two steps")
    assert model.n_iter_ == 2
    assert_close(model.loss_curve_[-2:], [loss1, loss2], 1e-12, "epoch losses")


def test_estimator_plain_sgd_by_hand():
    # theta1 = (1, 1, 0) - 0.1 (2, 4, 2)            = (0.8, 0.6, -0.2)
    # a = 0.8 + 1.2 - 0.2 = 1.8, a - y = 0.8, C = 0.32, g2 = (0.8, 1.6, 0.8)
    # theta2 = (0.8, 0.6, -0.2) - 0.1 (0.8, 1.6, 0.8) = (0.72, 0.44, -0.28)
    model = two_epochs(solver="sgd", momentum=0.0)
    assert_weights(model, 0.72, 0.44, -0.28, 2.0, 0.32)
    assert model.history_["learning_rate"][-2:] == [0.1, 0.1]   # constant schedule


def test_estimator_momentum_by_hand():
    # v1 = -0.1 g1 = (-0.2, -0.4, -0.2);  theta1 = theta0 + v1 = (0.8, 0.6, -0.2)
    # g2 = (0.8, 1.6, 0.8) (as for plain SGD)
    # v2 = 0.9 v1 - 0.1 g2 = (-0.18 - 0.08, -0.36 - 0.16, -0.18 - 0.08) = (-0.26, -0.52, -0.26)
    # theta2 = theta1 + v2 = (0.54, 0.08, -0.46)
    model = two_epochs(solver="sgd", momentum=0.9, nesterovs_momentum=False)
    assert_weights(model, 0.54, 0.08, -0.46, 2.0, 0.32)


def test_estimator_nesterov_by_hand():
    # v1 = -0.1 g1 = (-0.2, -0.4, -0.2)
    # theta1 = theta0 + 0.9 v1 - 0.1 g1 = (1 - 0.18 - 0.2, 1 - 0.36 - 0.4, 0 - 0.18 - 0.2)
    #        = (0.62, 0.24, -0.38)
    # a = 0.62 + 0.48 - 0.38 = 0.72, a - y = -0.28, C = 0.0392, g2 = (-0.28, -0.56, -0.28)
    # v2 = 0.9 v1 - 0.1 g2 = (-0.18 + 0.028, -0.36 + 0.056, -0.18 + 0.028)
    #    = (-0.152, -0.304, -0.152)
    # theta2 = theta1 + 0.9 v2 - 0.1 g2
    #        = (0.62 - 0.1368 + 0.028, 0.24 - 0.2736 + 0.056, -0.38 - 0.1368 + 0.028)
    #        = (0.5112, 0.0224, -0.4888)
    model = two_epochs(solver="sgd", momentum=0.9, nesterovs_momentum=True)
    assert_weights(model, 0.5112, 0.0224, -0.4888, 2.0, 0.0392)


def test_estimator_adam_with_bias_correction_by_hand():
    # b1 = 0.9, b2 = 0.999, lr = 0.1; epsilon 1e-300 vanishes beside sqrt(v).
    # Step size with scikit-learn's bias correction: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t).
    # t = 1: m = 0.1 g1 = (0.2, 0.4, 0.2);  v = 0.001 g1^2 = (0.004, 0.016, 0.004)
    #        lr_1 = 0.1 sqrt(0.001) / 0.1 = sqrt(0.001);  sqrt(v) = sqrt(0.001) |g1|
    #        step = lr_1 m / sqrt(v) = sqrt(0.001) 0.1 g1 / (sqrt(0.001) |g1|) = 0.1 sign(g1)
    #        theta1 = (0.9, 0.9, -0.1)
    #        (without the correction the step would be 0.1 * 0.1 / sqrt(0.001) = 0.316)
    # a = 0.9 + 1.8 - 0.1 = 2.6, a - y = 1.6, C = 1.28, g2 = (1.6, 3.2, 1.6)
    # t = 2: m = 0.9 (0.2, 0.4, 0.2) + 0.1 (1.6, 3.2, 1.6)            = (0.34, 0.68, 0.34)
    #        v = 0.999 (0.004, 0.016, 0.004) + 0.001 (2.56, 10.24, 2.56)
    #          = (0.006556, 0.026224, 0.006556)
    #        lr_2 = 0.1 sqrt(1 - 0.999^2) / (1 - 0.9^2) = 0.1 sqrt(0.001999) / 0.19
    #             = 0.0235316725...
    #        step = lr_2 * 0.34 / sqrt(0.006556) = 0.0235316725 * 0.34 / 0.0809691299
    #             = 0.0988125804... for all three (m and sqrt(v) both scale with x)
    #        theta2 = (0.9 - 0.0988125804, 0.9 - 0.0988125804, -0.1 - 0.0988125804)
    step2 = 0.1 * np.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2) * 0.34 / np.sqrt(0.006556)
    assert step2 == pytest.approx(0.0988125804, abs=1e-10)
    model = two_epochs(solver="adam", beta_1=0.9, beta_2=0.999, epsilon=1e-300)
    assert_weights(model, 0.9 - step2, 0.9 - step2, -0.1 - step2, 2.0, 1.28)


def test_estimator_rmsprop_by_hand():
    # decay beta_2 = 0.75, lr = 0.1, epsilon 1e-300 (vanishes)
    # v1 = 0.25 g1^2 = (1, 4, 1), sqrt = (1, 2, 1); step = 0.1 g1 / sqrt(v1) = (0.2, 0.2, 0.2)
    # theta1 = (0.8, 0.8, -0.2); a = 0.8 + 1.6 - 0.2 = 2.2, a - y = 1.2, C = 0.72,
    # g2 = (1.2, 2.4, 1.2)
    # v2 = 0.75 (1, 4, 1) + 0.25 (1.44, 5.76, 1.44) = (1.11, 4.44, 1.11)
    # step = 0.1 * 1.2 / sqrt(1.11) = 0.12 / 1.0535653753 = 0.1138989595 (all three)
    # theta2 = (0.8 - 0.1138989595, 0.8 - 0.1138989595, -0.2 - 0.1138989595)
    step2 = 0.12 / np.sqrt(1.11)
    assert step2 == pytest.approx(0.1138989595, abs=1e-10)
    model = two_epochs(solver="rmsprop", beta_2=0.75, epsilon=1e-300)
    assert_weights(model, 0.8 - step2, 0.8 - step2, -0.2 - step2, 2.0, 0.72)


def test_estimator_adagrad_by_hand():
    # lr = 0.1, epsilon 1e-300 (vanishes)
    # v1 = g1^2 = (4, 16, 4), sqrt = (2, 4, 2); step = 0.1 g1 / sqrt(v1) = (0.1, 0.1, 0.1)
    # theta1 = (0.9, 0.9, -0.1); a = 2.6, a - y = 1.6, C = 1.28, g2 = (1.6, 3.2, 1.6)
    # v2 = (4 + 2.56, 16 + 10.24, 4 + 2.56) = (6.56, 26.24, 6.56)
    # step = 0.1 * 1.6 / sqrt(6.56) = 0.16 / 2.5612496950 = 0.0624695048 (all three)
    # theta2 = (0.9 - 0.0624695048, 0.9 - 0.0624695048, -0.1 - 0.0624695048)
    step2 = 0.16 / np.sqrt(6.56)
    assert step2 == pytest.approx(0.0624695048, abs=1e-10)
    model = two_epochs(solver="adagrad", epsilon=1e-300)
    assert_weights(model, 0.9 - step2, 0.9 - step2, -0.1 - step2, 2.0, 1.28)


# ---- learning-rate schedules ---------------------------------------------------------

def test_invscaling_sets_the_rate_from_the_samples_seen():
    # lr = lr0 / (t + 1)^power_t at each epoch's end, t = samples seen (t_, which a warm
    # start continues: the first fit saw 1 sample).  Epoch 1 uses lr0 = 0.1 (a fresh
    # optimizer); then t = 2, so epoch 2 uses 0.1 / sqrt(3) = 0.0577350269.
    # theta1 = (0.8, 0.6, -0.2) (as for plain SGD), g2 = (0.8, 1.6, 0.8)
    # theta2 = theta1 - 0.0577350269 g2 = (0.8 - 0.0461880215, 0.6 - 0.0923760431,
    #                                      -0.2 - 0.0461880215)
    lr2 = 0.1 / np.sqrt(3)
    model = two_epochs(solver="sgd", momentum=0.0, learning_rate="invscaling", power_t=0.5)
    assert model.history_["learning_rate"][-2:] == pytest.approx([0.1, lr2], rel=1e-15)
    assert_weights(model, 0.8 - 0.8 * lr2, 0.6 - 1.6 * lr2, -0.2 - 0.8 * lr2, 2.0, 0.32)


def stalling_fit(rng, **params):
    """A fit whose every epoch after the first counts as a stall (tol far above any gain)."""
    X = rng.standard_normal((20, 3))
    y = X @ [1.0, -1.0, 0.5]
    kw = dict(hidden_layer_sizes=(4,), batch_size=5, tol=10.0, n_iter_no_change=1,
              max_iter=50, random_state=0)
    kw.update(params)
    return fit_quietly(MLPRegressor(**kw), X, y)


def test_adaptive_divides_the_rate_by_5_on_stalls_then_stops(rng):
    # Epoch 1 sets the best loss; each later epoch is a stall.  Once more than
    # n_iter_no_change = 1 epochs in a row stalled (after epochs 3, 5, 7, ...), the rate
    # is divided by 5 and the count restarts, until it is already <= 1e-6: then training
    # stops.  From lr0 = 1e-5:
    #   epochs 1-3: 1e-5;  after 3: 1e-5 > 1e-6 -> 2e-6
    #   epochs 4-5: 2e-6;  after 5: 2e-6 > 1e-6 -> 4e-7
    #   epochs 6-7: 4e-7;  after 7: 4e-7 <= 1e-6 -> stop, n_iter_ = 7
    model = stalling_fit(rng, solver="sgd", learning_rate="adaptive", learning_rate_init=1e-5)
    assert model.n_iter_ == 7
    assert model.history_["learning_rate"] == pytest.approx(
        [1e-5] * 3 + [2e-6] * 2 + [4e-7] * 2, rel=1e-15)


@pytest.mark.parametrize("solver,schedule", [("sgd", "constant"), ("adam", "adaptive")])
def test_without_adaptive_sgd_the_first_stall_stops(rng, solver, schedule):
    # The same stalls end training after epoch 3; 'adaptive' applies to sgd only, as
    # in scikit-learn (adam keeps its rate).
    model = stalling_fit(rng, solver=solver, learning_rate=schedule, learning_rate_init=1e-3)
    assert model.n_iter_ == 3
    assert model.history_["learning_rate"] == [1e-3] * 3
