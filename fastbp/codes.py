"""Numeric codes the compiled code branches on, and the layout of the engine's
control vectors.

Activations, losses and optimizers reach compiled code as small integers
(a function-typed argument would miss Numba's cache on every run and block
inlining).  The engine's inputs ``hp``, ``ip``, the layer table and ``stats``
are flat vectors; their slots are named here and filled in ``network.py``
only.
"""

# Activation codes (see activations.py).
IDENTITY, LOGISTIC, TANH, RELU, LEAKY_RELU, SOFTPLUS, SOFTMAX, EXP = range(8)
ACTIVATION_CODES = {
    "identity": IDENTITY,
    "logistic": LOGISTIC,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "softplus": SOFTPLUS,
    "softmax": SOFTMAX,
    "exp": EXP,
}
HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu", "leaky_relu", "softplus")
OUTPUT_ACTIVATIONS = ("identity", "logistic", "softmax", "exp")
LEAKY_SLOPE = 0.01

# Loss codes (see losses.py).
SQUARED_ERROR, LOG_LOSS, HUBER, POISSON = range(4)
LOSS_CODES = {"squared_error": SQUARED_ERROR, "log_loss": LOG_LOSS, "huber": HUBER,
              "poisson": POISSON}

# Optimizer codes (see optimizers.py).
OPT_SGD, OPT_ADAM, OPT_RMSPROP, OPT_ADAGRAD, OPT_NONE, OPT_RPROP = range(6)

# Layout of the float64 hyper-parameter vector ``hp`` given to the engine.
# HP_MOMENTUM is SGD's momentum, HP_BETA1 Adam's first-moment decay: the engine
# hands the one its optimizer uses to ``optimizer_step`` as ``beta1``.
HP_LR, HP_ALPHA, HP_MOMENTUM, HP_BETA1, HP_BETA2, HP_EPS, HP_CLIP, HP_HUBER, HP_PROB_EPS = range(9)
# iRPROP-'s step-size bounds (rprop_epoch)
HP_STEP_MIN, HP_STEP_MAX = 9, 10
HP_SIZE = 11
# After HP_SIZE: one dropout rate per row of the layer table (the rate of that layer's
# outputs; 0 = kept whole, always 0 for the output layer), read only by engines compiled
# with ``engine.DROPOUT`` on.
# Layout of the int64 control vector ``ip`` given to the engine.  A workspace
# holds blocks of up to ``cap`` rows: ``train_epoch`` walks mini-batches of
# IP_BATCH rows, ``loss_grad`` and ``predict`` chunks of IP_CHUNK rows (both
# are set to the workspace's ``cap``).
# IP_DROP_SEED and IP_DROP_STEP: the dropout masks' seed (0 <= seed < 2**63) and the
# step counter (one per mini-batch; ``train_epoch`` advances it), read only by engines
# compiled with ``engine.DROPOUT`` on (``kernels_loop.dropout_key``).
(IP_OPT, IP_LOSS, IP_PAR_MIN, IP_NESTEROV, IP_STEP, IP_WSQ_OFF, IP_MEAN_OUT, IP_BATCH,
 IP_CHUNK, IP_DROP_SEED, IP_DROP_STEP) = range(11)
IP_SIZE = 11
# Columns of the int64 layer table (one row per weight layer).
L_NIN, L_NOUT, L_WOFF, L_BOFF, L_ACT, L_AOFF, L_DOFF = range(7)
L_COLS = 7
# Columns of the int64 shortcut-block table (one row per weight block that is not a
# chain block: source layer S_SRC feeds target layer S_DST, layers numbered 0 = the
# input, 1..H hidden, H+1 output).  The block's weights ``w[j, i]`` (S_NOUT, S_NIN)
# sit at S_WOFF of the flat buffer; S_DB is the offset into the workspace of a
# scratch row that receives the bias sums the shared kernels also compute.  The
# engine finds the table in ``ip[IP_SIZE:]`` (S_COLS numbers per block; empty for
# a chain), rows sorted by (S_DST, S_SRC).
S_SRC, S_DST, S_NIN, S_NOUT, S_WOFF, S_DB = range(6)
S_COLS = 6
# Layout of the float64 statistics vector written by the engine.
ST_LOSS, ST_SAMPLES, ST_DIVERGED, ST_BATCHES, ST_DATA, ST_REG, ST_SWSUM, ST_GNORM = range(8)
# gradient norms follow from ST_GNORM on: one per layer (its chain weights and biases),
# then one per shortcut block
