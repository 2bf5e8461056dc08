"""Optimizers as flat-buffer updates (the compiled step is
``kernels_loop.optimizer_step``) and the per-epoch learning-rate schedules.

The semantics and names are scikit-learn's (``_stochastic_optimizers``):

* ``sgd``: velocity ``v <- momentum v - lr g``; ``theta += momentum v - lr g``
  (Nesterov) or ``theta += v``.  Schedules: ``constant``; ``invscaling``
  ``lr = lr0 / (t + 1) ** power_t`` with t the samples seen, set at each
  epoch's end; ``adaptive``: lr / 5 when the loss stalls, stop below 1e-6.
* ``adam``: scikit-learn's bias-corrected step size
  ``lr_t = lr0 sqrt(1 - beta_2^t) / (1 - beta_1^t)``, t counting batches.
* ``rmsprop`` (decay ``beta_2``) and ``adagrad``: ``theta -= lr g / (sqrt(v) + eps)``.
* ``rprop`` (full batch, iRPROP-; ``kernels_loop.rprop_step``): m1 holds the
  per-weight step sizes (starting at ``learning_rate_init``), m2 the previous
  gradient; ``step_bounds`` = (smallest, largest) step.
"""
import numpy as np

from .codes import OPT_ADAGRAD, OPT_ADAM, OPT_NONE, OPT_RMSPROP, OPT_RPROP, OPT_SGD

SOLVER_CODES = {"sgd": OPT_SGD, "adam": OPT_ADAM, "rmsprop": OPT_RMSPROP,
                "adagrad": OPT_ADAGRAD, "none": OPT_NONE, "rprop": OPT_RPROP}
FULL_BATCH_SOLVERS = ("rprop",)  # epochs of EpochLoop, one full-batch step each
STOCHASTIC_SOLVERS = ("sgd", "adam", "rmsprop", "adagrad")
LEARNING_RATES = ("constant", "invscaling", "adaptive")


class Optimizer:
    """State of one optimizer over a flat parameter vector of ``n_params``."""

    def __init__(self, solver, n_params, dtype, learning_rate_init, learning_rate="constant",
                 momentum=0.9, nesterovs_momentum=True, power_t=0.5, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, step_bounds=(1e-6, 50.0)):
        self.solver = solver
        self.code = SOLVER_CODES[solver]
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.schedule = learning_rate if solver == "sgd" else "constant"
        self.momentum = float(momentum)
        self.nesterov = bool(nesterovs_momentum)
        self.power_t = float(power_t)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.t = 0  # Adam's batch counter
        self.step_bounds = (float(step_bounds[0]), float(step_bounds[1]))
        self.m1 = np.zeros(n_params, dtype=dtype)
        self.m2 = np.zeros(n_params, dtype=dtype)
        if solver == "rprop":
            self.m1[...] = self.learning_rate_init  # the initial step size of every weight

    def engine_settings(self):
        """The numbers the engine needs for this optimizer's step, in order:
        (code, learning rate, momentum, beta_1, beta_2, epsilon, nesterov, step
        count); ``network.Network.context`` puts them where the engine reads them."""
        return (self.code, self.learning_rate, self.momentum, self.beta_1, self.beta_2,
                self.epsilon, self.nesterov, self.t)

    def iteration_ends(self, time_step):
        """End-of-epoch schedule (scikit-learn's ``iteration_ends``)."""
        if self.schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        """On a stalled loss: True to stop, or (adaptive) divide lr by 5 and go on."""
        if self.schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    def snapshot(self):
        """Copy of the mutable state (for rollback)."""
        return (self.m1.copy(), self.m2.copy(), self.t, self.learning_rate)

    def restore(self, snap):
        m1, m2, self.t, self.learning_rate = snap
        self.m1[...] = m1
        self.m2[...] = m2
