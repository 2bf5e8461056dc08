"""scikit-learn compatible estimators: ``MLPClassifier`` and ``MLPRegressor``.

Same parameters, attributes and numbers as scikit-learn's MLPs (same
``random_state`` gives the same starting weights and shuffles; sgd and adam
give the same weights epoch by epoch), trained by fastbp's compiled engine.
This module validates, encodes labels and delegates to ``trainer``.
"""
import copy
import functools
import os
import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize
from sklearn.base import (BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context,
                          is_classifier)
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import (_check_sample_weight, check_is_fitted, column_or_1d,
                                      validate_data)

from . import io
from .backends import BACKENDS
from .codes import ACTIVATION_CODES, HIDDEN_ACTIVATIONS, HP_HUBER
from .io import ModelFileError, jsonable
from .losses import loss_delta
from .network import Dropout, Network, as_rows, engine_array, engine_input, with_threads
from .optimizers import FULL_BATCH_SOLVERS, LEARNING_RATES, STOCHASTIC_SOLVERS, Optimizer
from .params import chain_sources, connections_dict, normalize_connections, sources_of_weights
from .scaling import InputStats, Standardizer
from .trainer import (DivergenceWarning, EpochLoop, EpochResult, FullBatchEpoch, LocalEpoch,
                      as_list, complete_history, curve_lengths, cut_curves, empty_history,
                      record, verbose_progress)

__all__ = ["MLPClassifier", "MLPRegressor", "DivergenceWarning", "FitRun", "load"]

SOLVERS = STOCHASTIC_SOLVERS + ("lbfgs",) + FULL_BATCH_SOLVERS


_PARAMS_DOC = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Width of each hidden layer (all >= 1).
    activation : str or list of str, default='relu'
        Hidden activation: 'identity', 'logistic', 'tanh', 'relu',
        'leaky_relu' (slope 0.01) or 'softplus'; a list gives one per hidden
        layer.
    solver : {'adam', 'sgd', 'lbfgs', 'rmsprop', 'adagrad', 'rprop'}, default='adam'
        'sgd', 'adam' and 'lbfgs' are scikit-learn's; 'rmsprop' (decay
        ``beta_2``), 'adagrad' and 'rprop' are fastbp's.  'rprop' is iRPROP-
        (FANN's default): full batch, one step per epoch (``max_iter``
        epochs, scikit-learn's ``tol``/``n_iter_no_change``/``early_stopping``
        rules), a step size per weight that grows by 1.2 while its gradient
        keeps its sign and halves when it flips; the steps start at
        ``learning_rate_init`` (0.01 to 0.1 usually suits it) and stay
        within ``rprop_step_bounds``.
    alpha : float, default=1e-4
        L2 penalty: ``alpha / 2 * ||W||^2 / sum(sample_weight)`` is added to the loss.
    batch_size : int or 'auto', default='auto'
        Mini-batch size; 'auto' = min(200, n_samples); 1 is plain stochastic
        gradient descent and n_samples (or more) full batch.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Step-size schedule for 'sgd' (scikit-learn's meaning).
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
        Exponent of 'invscaling'.
    max_iter : int, default=200
        Epochs for stochastic solvers; iterations for 'lbfgs'.
    shuffle : bool, default=True
        Shuffle the samples every epoch (scikit-learn's shuffle sequence).
    random_state : int, RandomState instance or None, default=None
        Drives initialisation, shuffling and the validation split exactly as
        in scikit-learn.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print one line per epoch: loss, validation score, epoch time.
    warm_start : bool, default=False
        Start from the previous ``coefs_``/``intercepts_`` (which may be
        assigned before calling fit).
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data, stop when its score
        stalls and restore the best weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's (and rmsprop's ``beta_2``) parameters.
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Maximum loss evaluations for 'lbfgs'.
    backend : {'loops', 'loops-serial', 'blas', 'python'}, default='loops'
        'loops': the compiled loop kernels; 'blas': the same math on NumPy
        matrices; 'python': the loop kernels as plain Python (slow; tiny nets).
    n_jobs : int or None, default=None
        Threads for the compiled kernels during fit/predict (None = all).
    callbacks : callable or list of callables, default=None
        Called after each epoch with a ``fastbp.trainer.EpochResult``
        (``epoch, loss, validation_score, learning_rate, seconds,
        grad_norms``); returning True stops training.
    clip_norm : float or None, default=None
        Clip each mini-batch gradient to this global L2 norm.
    init : {'glorot', 'he'}, default='glorot'
        'glorot' is scikit-learn's uniform initialisation.  With shortcut
        connections both scale by a layer's total fan-in (all its sources).
    scale : {None, 'standard'}, default=None
        'standard': standardize each input column with the mean and standard
        deviation of the first fit's X (scikit-learn's StandardScaler), inside
        the model: predict applies it, model files store it (``scaler_``).
        Dense X only.  In Python a Pipeline with a StandardScaler does the same;
        this keeps the scaling in the ``.fbp`` file.
    connections : 'chain', 'shortcut' or dict, default='chain'
        Which layers feed which.  Layers are numbered 0 = the input, 1..H the
        hidden layers, H+1 the output.  'chain': each layer is fed by the one
        before it (scikit-learn's MLP).  'shortcut': every layer, the output
        included, is fed by all earlier layers and the input (FANN's shortcut
        network).  A dict ``{layer: [sources]}`` sets the sources of the
        layers it lists (earlier layers only; a layer not listed keeps its
        chain source), e.g. ``{3: [0, 2]}``: the input also feeds layer 3.
        ``coefs_[l]`` holds the chain block from layer l to layer l+1 (0 rows
        when l is not a source of l+1); the other blocks are in
        ``skip_coefs_``.
    rprop_step_bounds : (float, float), default=(1e-6, 50.0)
        Smallest and largest per-weight step of 'rprop' (0 <= min < max).
    dropout : float or list of float, default=0.0
        Inverted dropout of the hidden layers while training: each hidden
        unit's output is set to 0 with this probability, the kept ones are
        divided by ``1 - dropout``; a list gives one rate per hidden layer
        (0 <= rate < 1; 0 = off).  ``predict``, ``score`` and the
        early-stopping score never drop; ``loss_curve_`` is the loss under the
        masks.  The masks come from a counter-based generator seeded from
        ``random_state``: the same for any ``n_jobs`` and backend, fresh for every
        mini-batch, continued by ``partial_fit`` and ``warm_start`` (and by a
        model file).  The stochastic solvers only ('sgd', 'adam', 'rmsprop',
        'adagrad'); 'lbfgs' and 'rprop' need one fixed objective and refuse it.
"""

_CLASS_WEIGHT_DOC = """    class_weight : dict, 'balanced' or None, default=None
        Weight of each class (scikit-learn's ``compute_class_weight``):
        a dict ``{label: weight}`` (missing classes weigh 1), or 'balanced',
        ``n_samples / (n_classes * np.bincount(y))`` counted on the ``y`` of
        each ``fit``.  Multiplied with ``sample_weight``, so it reaches the loss,
        the gradient and the early-stopping score alike.  ``partial_fit``
        takes a dict (classes given up front), not 'balanced'.  For a
        multilabel y only 'balanced' (scikit-learn's ``compute_sample_weight``
        for several outputs), and not in partial_fit.
"""

_ATTRIBUTES_DOC = """
    Attributes (besides scikit-learn's)
    -----------------------------------
    skip_coefs_ : dict
        ``{(source, layer): array (n_source, n_layer)}``: the weights of the
        connections that are not chain blocks ({} for a chain).  Like
        ``coefs_`` they view the model's parameters, and assigning arrays of
        the same shapes before a ``warm_start`` fit sets the starting point.
    history_ : dict
        Per epoch ``loss``, ``validation_score``, ``learning_rate``,
        ``seconds`` and ``grad_norms``: the mean gradient norm of each layer
        (chain weights and biases), then of each block of ``skip_coefs_`` in
        its key order.
"""


def _common_constraints():
    return {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(HIDDEN_ACTIVATIONS)), list, tuple],
        "solver": [StrOptions(set(SOLVERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions(set(LEARNING_RATES))],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions(set(BACKENDS))],
        "n_jobs": [Interval(Integral, None, None, closed="neither"), None],
        "callbacks": [callable, list, tuple, None],
        "clip_norm": [Interval(Real, 0, None, closed="neither"), None],
        "init": [StrOptions({"glorot", "he"})],
        "rprop_step_bounds": [tuple, list],
        "scale": [StrOptions({"standard"}), None],
        "connections": [StrOptions({"chain", "shortcut"}), dict],
        "dropout": [Interval(Real, 0, 1, closed="left"), list, tuple],
    }


def _stochastic_only(estimator):
    """The one guard for ``partial_fit`` (shared by both classes)."""
    if estimator.solver not in STOCHASTIC_SOLVERS:
        raise AttributeError("partial_fit is only available for stochastic optimizers. "
                             "%s is not stochastic." % estimator.solver)
    return True


class _Fit:
    """Everything a fit produces; assigned to the estimator only on success."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class _BaseMLP(BaseEstimator):
    _parameter_constraints = _common_constraints()

    def __init__(self, hidden_layer_sizes, activation, solver, alpha, batch_size,
                 learning_rate, learning_rate_init, power_t, max_iter, loss, shuffle,
                 random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
                 early_stopping, validation_fraction, beta_1, beta_2, epsilon,
                 n_iter_no_change, max_fun, backend, n_jobs, callbacks, clip_norm, init,
                 scale=None, connections="chain", rprop_step_bounds=(1e-6, 50.0), dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.n_jobs = n_jobs
        self.callbacks = callbacks
        self.clip_norm = clip_norm
        self.init = init
        self.rprop_step_bounds = rprop_step_bounds
        self.scale = scale
        self.connections = connections
        self.dropout = dropout

    # -- structure ------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        for s in sizes:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, (Integral, np.integer)) \
                    or s <= 0:
                raise ValueError(f"hidden_layer_sizes must be positive integers, got {sizes}.")
        return [int(s) for s in sizes]

    def _hidden_activations(self, n_hidden):
        act = self.activation
        if isinstance(act, str):
            return [act] * n_hidden
        act = list(act)
        for a in act:
            if not (isinstance(a, str) and a in HIDDEN_ACTIVATIONS):
                raise ValueError(f"activation: unknown name {a!r}; expected one of "
                                 f"{sorted(HIDDEN_ACTIVATIONS)}")
        if len(act) != n_hidden:
            raise ValueError(f"activation has {len(act)} entries but there are {n_hidden} "
                             "hidden layers; give one name per hidden layer.")
        return act

    def _dropout_rates(self, n_hidden):
        """The validated dropout rate of each hidden layer (``dropout``), refused with
        the full-batch solvers."""
        rates = self.dropout
        if isinstance(rates, (list, tuple, np.ndarray)):
            rates = list(rates)
            if len(rates) != n_hidden:
                raise ValueError(f"dropout has {len(rates)} rates but there are {n_hidden} "
                                 "hidden layers; give one rate, or one per hidden layer.")
        else:
            rates = [rates] * n_hidden
        for r in rates:
            if isinstance(r, (bool, np.bool_)) or not isinstance(r, (Real, np.floating,
                                                                        np.integer)) \
                    or not 0.0 <= float(r) < 1.0:
                raise ValueError(f"dropout rates must be numbers in [0, 1), got "
                                 f"{self.dropout!r}.")
        rates = [float(r) for r in rates]
        if any(rates) and self.solver not in STOCHASTIC_SOLVERS:
            raise ValueError(f"dropout={self.dropout!r} needs a stochastic solver ('sgd', "
                             f"'adam', 'rmsprop', 'adagrad'); solver={self.solver!r} "
                             "minimises one fixed full-batch objective, which random masks "
                             "would change at every step. Set dropout=0.0 or choose "
                             "another solver.")
        return rates

    def _sources(self, n_hidden):
        """The validated sources of layers 1..H+1 for the ``connections`` parameter."""
        return normalize_connections(self.connections, n_hidden)

    def _fitted_sources(self):
        """The topology of the fitted weights (``coefs_`` and ``skip_coefs_``)."""
        return sources_of_weights(self.coefs_, list(getattr(self, "skip_coefs_", None) or {}))

    def _network(self, n_features, n_outputs, dtype, hidden_sizes=None, hidden_acts=None,
                 out_activation=None, sources=None):
        if hidden_sizes is None:
            hidden_sizes = [c.shape[1] for c in self.coefs_[:-1]]
            hidden_acts = self._hidden_acts_
            out_activation = self.out_activation_
            sources = self._fitted_sources()
        return Network([n_features] + hidden_sizes + [n_outputs], hidden_acts, out_activation,
                       self._loss_name(), dtype, self.backend, self._huber_delta(),
                       mean_outputs=self._mean_outputs(), sources=sources)

    def _mean_outputs(self):
        """Whether ``loss_`` averages over the outputs (scikit-learn's squared error
        does; its Poisson deviance and log-loss sum them)."""
        return not is_classifier(self) and self._loss_name() != "poisson"

    def _huber_delta(self):
        return 1.0

    def _encode_labels(self, labels, first_pass):
        return None  # regressors: targets are numbers

    # -- fitting: the lifecycle is FitRun's ------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None, sample_weight_val=None):
        """Fit the model to data matrix X and target(s) y.

        ``X_val, y_val`` (and ``sample_weight_val``): a validation set of your
        choosing (scikit-learn's HistGradientBoosting names).  Early stopping
        then scores it instead of an internal ``validation_fraction`` split;
        with or without early stopping its loss is recorded per epoch in
        ``validation_loss_curve_``.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False,
                         validation=(X_val, y_val, sample_weight_val))

    def _fit(self, X, y, sample_weight=None, incremental=False, validation=(None, None, None)):
        # parameters were validated by ``_fit_context`` (scikit-learn's decorator of
        # fit/partial_fit: once per fit, once for a series of partial_fit calls)
        with FitRun(self, incremental) as run:
            X, Y, sw = self._prepare_data(X, y, sample_weight, incremental, run.first_pass)
            val = self._prepare_validation(*validation, X.dtype, Y.shape[1])
            fit = run.start(X.shape[1], Y.shape[1], X.dtype)
            X = run.record_inputs(fit, X)
            if val is not None and fit.scaler_ is not None:  # the user's set, scaled alike
                val.X = as_rows(fit.scaler_.transform(val.X))
            run.solve_local(fit, X, Y, sw, val)
            run.commit(fit)
        return self

    def _prepare_validation(self, X_val, y_val, sample_weight_val, dtype, n_outputs):
        """The user's validation set, checked like X/y (errors name X_val, y_val,
        sample_weight_val), or None when none is given."""
        if X_val is None and y_val is None:
            if sample_weight_val is not None:
                raise ValueError("sample_weight_val was given without X_val and y_val.")
            return None
        if X_val is None or y_val is None:
            raise ValueError("X_val and y_val must be given together (got only "
                             f"{'X_val' if y_val is None else 'y_val'}).")
        try:
            X_val, y_val = validate_data(self, X_val, y_val, accept_sparse=["csr", "csc"],
                                         multi_output=True, y_numeric=not is_classifier(self),
                                         dtype=(np.float64, np.float32), reset=False)
            if y_val.ndim == 2 and y_val.shape[1] == 1:
                y_val = column_or_1d(y_val, warn=True)
            Y_val = self._encode_validation_target(y_val)
        except ValueError as exc:
            raise type(exc)(f"validation data (X_val, y_val): {exc}") from None
        X_val = as_rows(X_val, dtype)
        Y_val = np.ascontiguousarray(Y_val.reshape(X_val.shape[0], -1), dtype=dtype)
        if Y_val.shape[1] != n_outputs:
            raise ValueError(f"validation data (X_val, y_val): y_val has {Y_val.shape[1]} "
                             f"output(s), y has {n_outputs}.")
        if sample_weight_val is None:
            sw = np.empty(0, dtype=dtype)
        else:
            try:
                sw = _check_sample_weight(sample_weight_val, X_val, dtype=dtype,
                                          ensure_non_negative=True)
            except ValueError as exc:
                raise ValueError(f"sample_weight_val: {exc}") from None
            if not np.isfinite(sw).all():
                raise ValueError("sample_weight_val contains NaN or infinity.")
            sw = np.ascontiguousarray(sw)
        sw = self._class_weighted(Y_val, sw, False, validation=True)
        if sw.shape[0] and not sw.sum() > 0:
            raise ValueError("sample_weight_val must have a positive sum.")
        return ValidationSet(self, X_val, Y_val, y_val, sw)

    def _encode_validation_target(self, y_val):
        """Regressors: y_val as it is (numbers, checked finite by validate_data)."""
        return np.asarray(y_val)

    def _prepare_data(self, X, y, sample_weight, incremental, first_pass):
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if not first_pass and X.dtype != self.coefs_[0].dtype:
            X = X.astype(self.coefs_[0].dtype)
        X = as_rows(X)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        Y = engine_array(y, X.dtype)
        if sample_weight is None:
            sw = np.empty(0, dtype=X.dtype)
        else:
            sw = _check_sample_weight(sample_weight, X, dtype=X.dtype,
                                      ensure_non_negative=True)
            if not np.isfinite(sw).all():
                raise ValueError("sample_weight contains NaN or infinity.")
            if not sw.sum() > 0:
                raise ValueError("sample_weight must have a positive sum.")
            sw = engine_array(sw)
        sw = self._class_weighted(Y, sw, incremental)
        return X, Y, sw

    def _class_weighted(self, Y, sw, incremental, validation=False):
        return sw  # regressors: no classes

    # -- prediction -----------------------------------------------------------
    def _keep(self, net, theta):
        """Expose ``theta`` as ``coefs_``/``intercepts_`` (views) and keep both for predict."""
        self.coefs_ = net.layout.coefs(theta)
        self.intercepts_ = net.layout.biases(theta)
        self.skip_coefs_ = net.layout.skip_coefs(theta)
        self._predictor = (net, theta, tuple(self.coefs_), tuple(self.intercepts_),
                           self.out_activation_, tuple(self._hidden_acts_),
                           dict(self.skip_coefs_))

    def _predictor_net(self, n_features, dtype):
        """(Network, flat parameters) for prediction.

        The kept ones while ``coefs_``/``intercepts_`` are still the committed
        arrays (in-place edits of them reach the kept buffer, which they view);
        packed anew when a user assigned other arrays, or changed the backend
        or activations.
        """
        kept = self.__dict__.get("_predictor")
        if kept is not None:
            net, theta, coefs, intercepts, out_act, hidden, skips = kept
            now = getattr(self, "skip_coefs_", None) or {}
            if (net.backend == self.backend and out_act == self.out_activation_
                    and hidden == tuple(self._hidden_acts_)
                    and len(coefs) == len(self.coefs_) and len(intercepts) == len(self.intercepts_)
                    and all(a is b for a, b in zip(coefs, self.coefs_))
                    and all(a is b for a, b in zip(intercepts, self.intercepts_))
                    and skips.keys() == now.keys()
                    and all(skips[k] is now[k] for k in skips)):
                return net, theta
        net = self._network(n_features, self.n_outputs_, dtype)
        return net, net.layout.pack(self.coefs_, self.intercepts_, dtype,
                                    getattr(self, "skip_coefs_", None))

    def _plain_array(self, X):
        """True when ``X`` is a 2-D float32/float64 ndarray of the fitted width, for a
        model fitted without feature names: if it is also finite, it needs none of
        ``validate_data``'s conversions or messages (~70% of a one-row predict)."""
        return (type(X) is np.ndarray and X.ndim == 2 and X.shape[0] > 0
                and X.dtype in (np.float64, np.float32)
                and X.shape[1] == getattr(self, "n_features_in_", -1)
                and not hasattr(self, "feature_names_in_"))

    def _forward(self, X, check_input=True):
        if "coefs_" not in self.__dict__:  # scikit-learn's check scans every attribute
            check_is_fitted(self)
        stats = self.__dict__.get("input_stats_")
        plain = check_input and self._plain_array(X)
        if plain and stats is not None and X.flags.c_contiguous and stats.inside(X):
            pass  # finite and within the training range: one compiled pass said both
        elif check_input:
            if not (plain and np.isfinite(X).all()):
                X = validate_data(self, X, accept_sparse=["csr", "csc"],
                                  dtype=(np.float64, np.float32), reset=False)
            if stats is not None:
                stats.check(X, getattr(self, "feature_names_in_", None))
        dtype = self.coefs_[0].dtype
        scaler = self.__dict__.get("scaler_")
        if scaler is not None:
            X = scaler.transform(X if X.dtype == dtype else X.astype(dtype))
        X = engine_input(X, dtype)
        net, theta = self._predictor_net(X[0].shape[1], dtype)
        return net.predict(theta, X, n_jobs=self.n_jobs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self):
        state = super().__getstate__()
        # coefs_ view the kept buffer; a copy (pickle, deepcopy) would split them apart
        state.pop("_predictor", None)
        return state

    # -- model files (format: fastbp.io) ----------------------------------------
    def save(self, path):
        """Write this fitted model to ``path`` (see ``fastbp.io``; atomic, no pickle)."""
        check_is_fitted(self)
        arrays, meta = _file_contents(self)
        # version 2 only where needed: a chain model stays readable by older fastbp
        return io.write(path, arrays, meta, version=2 if getattr(self, "skip_coefs_", None) else 1)

    def _save_labels(self, arrays, meta):
        pass

    def _load_labels(self, meta, arrays, path):
        pass


class FitRun:
    """One fit of a fastbp estimator: start -> epochs -> commit, rolled back on failure.

    The lifecycle shared by ``fit``, ``partial_fit``, warm starts and
    ``fastbp.dask.fit``.  As a context manager it snapshots the estimator; if
    anything fails before ``commit`` returns, the estimator is left as it was:
    attributes restored and the curves a warm start appends to (in place, as
    scikit-learn does) cut back, which keeps each partial_fit call O(1) in the
    length of the history.
    """

    def __init__(self, est, incremental=False):
        self.est = est
        self.incremental = incremental
        self.hidden_sizes = est._hidden_sizes()
        self.hidden_acts = est._hidden_activations(len(self.hidden_sizes))
        self.sources = est._sources(len(self.hidden_sizes))
        self.dropout_rates = est._dropout_rates(len(self.hidden_sizes))
        self.first_pass = not hasattr(est, "coefs_") or (not est.warm_start and not incremental)
        self.rng = check_random_state(est.random_state)

    def __enter__(self):
        self._saved = self.est.__dict__.copy()  # validation may set classes_ and friends
        self._lengths = curve_lengths(self.est)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            cut_curves(self._lengths)
            self.est.__dict__.clear()
            self.est.__dict__.update(self._saved)
        return False

    # -- start ------------------------------------------------------------------
    def start(self, n_features, n_outputs, dtype):
        """The fit record (with its Network ``net`` and parameters ``theta``): fresh
        weights on a first pass, the previous ones on a warm start or partial_fit."""
        est, hidden_sizes, hidden_acts = self.est, self.hidden_sizes, self.hidden_acts
        if self.first_pass:
            out_act = est._output_activation()
            net = est._network(n_features, n_outputs, dtype, hidden_sizes, hidden_acts,
                               out_act, self.sources)
            codes = net.layout.activations
            if isinstance(est.activation, str):  # scikit-learn: one factor for all layers
                factor_codes = [ACTIVATION_CODES[est.activation]] * len(codes)
            elif hidden_acts:  # each layer its own; the output layer the last hidden one's
                factor_codes = codes[:-1] + codes[-2:-1]
            else:  # no hidden layer: scikit-learn's default factor
                factor_codes = [ACTIVATION_CODES["relu"]]
            theta = net.layout.init(self.rng, dtype, est.init, factor_codes)
            fit = _Fit(n_iter_=0, t_=0, n_outputs_=n_outputs, n_layers_=len(hidden_sizes) + 2,
                       out_activation_=out_act, _hidden_acts_=hidden_acts,
                       history_=empty_history(), _no_improvement_count=0, _optimizer=None,
                       input_stats_=None, scaler_=None)
        else:
            if [c.shape[1] for c in est.coefs_[:-1]] != hidden_sizes or \
                    est.coefs_[-1].shape[1] != n_outputs:
                raise ValueError(
                    "warm_start/partial_fit: hidden_layer_sizes or the number of outputs "
                    "changed since the previous fit; fit a new model instead.")
            if est._fitted_sources() != self.sources:
                raise ValueError(
                    "warm_start/partial_fit: connections changed since the previous fit "
                    f"(fitted: {connections_dict(est._fitted_sources())}, now: "
                    f"{connections_dict(self.sources)}); fit a new model instead.")
            # scikit-learn continues with the current activation, the first fit's output
            net = est._network(n_features, n_outputs, dtype, hidden_sizes, hidden_acts,
                               est.out_activation_, self.sources)
            theta = net.layout.pack(est.coefs_, est.intercepts_, dtype,
                                    getattr(est, "skip_coefs_", None))
            # scalars and the curves (appended to in place) as they are; the optimizer's
            # moments are updated in place, so they are copied
            fit = _Fit(**{k: getattr(est, k) for k in _FIT_ATTRS if hasattr(est, k)})
            fit._optimizer = copy.deepcopy(getattr(est, "_optimizer", None))
            fit._hidden_acts_ = hidden_acts
            fit.input_stats_ = getattr(est, "input_stats_", None)
            fit.scaler_ = getattr(est, "scaler_", None)
            if not hasattr(fit, "history_"):
                fit.history_ = empty_history()
            complete_history(fit.history_)
        if est.solver != "lbfgs":
            self._stochastic_state(fit)
        self._dropout_state(fit)
        fit.net, fit.theta = net, theta
        return fit

    def _dropout_state(self, fit):
        """The dropout masks' seed and step counter: drawn from ``random_state`` (after
        the weights) by the first fit that drops out, continued by later ones."""
        if getattr(fit, "_dropout_step", None) is None:
            fit._dropout_step = 0
        if getattr(fit, "_dropout_seed", None) is None:
            fit._dropout_seed = None
            if any(self.dropout_rates):
                fit._dropout_seed = int(self.rng.randint(0, 2 ** 63 - 1, dtype=np.int64))
                fit._dropout_step = 0

    def dropout(self, fit):
        """The ``network.Dropout`` of this fit, or None when no layer is dropped."""
        if not any(self.dropout_rates):
            return None
        return Dropout(self.dropout_rates, fit._dropout_seed, fit._dropout_step)

    def _stochastic_state(self, fit):
        """scikit-learn's stopping attributes, made where missing or of the other mode.

        A first fit gets exactly scikit-learn's initial values.  A warm start
        keeps the previous values; where the previous fit was 'lbfgs' or used the
        other ``early_stopping`` setting (scikit-learn fails there) they are created.
        """
        if getattr(fit, "loss_curve_", None) is None:
            fit.loss_curve_ = []
        if getattr(fit, "_no_improvement_count", None) is None:
            fit._no_improvement_count = 0
        if self.est.early_stopping:
            if getattr(fit, "validation_scores_", None) is None:
                fit.validation_scores_ = []
                fit.best_validation_score_ = -np.inf
                fit.best_loss_ = None
        elif getattr(fit, "best_loss_", None) is None:
            fit.best_loss_ = np.inf
            fit.validation_scores_ = None
            fit.best_validation_score_ = None

    def record_inputs(self, fit, X):
        """Record X's column statistics in the fit (merged with earlier ones on a warm
        start or partial_fit) and return X as the network sees it: standardized with
        ``scale='standard'`` (by the first fit's statistics), else X itself."""
        stats = InputStats.of(X)
        fit.input_stats_ = stats if fit.input_stats_ is None else fit.input_stats_.merged(stats)
        if self.est.scale is None:
            fit.scaler_ = None
            return X
        if fit.scaler_ is None:
            if not self.first_pass:
                raise ValueError("scale='standard' was not set when this model was first "
                                 "fitted; its weights expect unscaled inputs. Fit a new model.")
            fit.scaler_ = Standardizer.from_stats(stats)
        return fit.scaler_.transform(X)

    def set_classes(self, labels):
        """Classifiers: the label encoding for ``labels`` (all of y's distinct labels)."""
        return self.est._encode_labels(labels, self.first_pass)

    # -- epochs -----------------------------------------------------------------
    def optimizer(self, n_params, dtype):
        """A fresh optimizer with the estimator's settings."""
        est = self.est
        return Optimizer(est.solver, n_params, dtype, est.learning_rate_init,
                         est.learning_rate, est.momentum, est.nesterovs_momentum,
                         est.power_t, est.beta_1, est.beta_2, est.epsilon,
                         self.step_bounds())

    def step_bounds(self):
        """``rprop_step_bounds``, checked: two numbers, 0 <= min < max < inf."""
        bounds = self.est.rprop_step_bounds
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError("rprop_step_bounds must be two numbers (min, max), got "
                             f"{bounds!r}.") from None
        if not (0.0 <= lo < hi < np.inf):
            raise ValueError(f"rprop_step_bounds must satisfy 0 <= min < max < inf, got "
                             f"{bounds!r}.")
        return lo, hi

    def batch_size(self, n):
        """The mini-batch size for ``n`` samples (scikit-learn's clipping and warning)."""
        est = self.est
        if est.batch_size == "auto":
            return min(200, n)
        if est.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                          "It is going to be clipped")
        return int(np.clip(est.batch_size, 1, n))

    @property
    def clip(self):
        return float(self.est.clip_norm) if self.est.clip_norm else 0.0

    def solve_local(self, fit, X, Y, sw, val=None):
        """Train on in-memory data with the estimator's solver and n_jobs threads;
        ``val``: the user's ``ValidationSet`` or None."""
        if self.est.solver == "lbfgs":
            with_threads(self.est.n_jobs, self.lbfgs, fit, X, Y, sw, val)
        else:
            with_threads(self.est.n_jobs, self._stochastic, fit, X, Y, sw, val)

    def _stochastic(self, fit, X, Y, sw, val=None):
        """scikit-learn's ``_fit_stochastic``: the epoch loop over local data."""
        est = self.est
        if est.early_stopping and self.incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if val is not None:
            if est.early_stopping and est.validation_fraction != 0.1:
                warnings.warn(f"validation_fraction={est.validation_fraction} is ignored: "
                              "early stopping scores the given X_val, y_val.", UserWarning)
        elif est.early_stopping:
            X, Y, sw, X_val, Y_val, y_val, sw_val = self._split(X, Y, sw)
            val = ValidationSet(est, X_val, Y_val, y_val, sw_val)
        dropout = self.dropout(fit)
        if est.solver in FULL_BATCH_SOLVERS:
            step = FullBatchEpoch(fit.net, X, Y, sw, est.alpha)
        else:
            step = LocalEpoch(fit.net, X, Y, sw, self.batch_size(X.shape[0]), est.alpha,
                              self.clip, est.shuffle, self.rng, dropout)
        self._validation_state(fit, val)
        self.epochs(fit, step, step.n_rows, None if val is None else val.bind(fit.net))
        if dropout is not None:  # masks used so far (rolled-back epochs included)
            fit._dropout_step = dropout.step

    def _validation_state(self, fit, val):
        """``validation_loss_curve_``: a list (appended to on warm starts) while
        this fit has validation data, None otherwise."""
        if val is None:
            fit.validation_loss_curve_ = None
        elif getattr(fit, "validation_loss_curve_", None) is None:
            fit.validation_loss_curve_ = []

    def epochs(self, fit, step, n_samples, validate=None):
        """Run ``trainer.EpochLoop`` with ``step`` and the estimator's stopping rules."""
        est = self.est
        if not hasattr(fit, "validation_loss_curve_"):
            self._validation_state(fit, None)
        opt = fit._optimizer
        # new moments too when shortcut blocks were added since (skip_coefs_ and
        # connections assigned before partial_fit): the old ones have another size
        if not self.incremental or opt is None or opt.m1.shape[0] != fit.theta.size:
            fit._optimizer = self.optimizer(fit.theta.size, fit.theta.dtype)
        EpochLoop(fit, step, n_samples=n_samples, max_iter=est.max_iter, tol=est.tol,
                  n_iter_no_change=est.n_iter_no_change, early_stopping=est.early_stopping,
                  validate=validate, verbose=est.verbose, callbacks=est.callbacks,
                  convergence_warning=ConvergenceWarning).run(self.incremental)

    def _split(self, X, Y, sw):
        """scikit-learn's early-stopping split (same random draws)."""
        est = self.est
        stratify = Y if (is_classifier(est) and Y.shape[1] == 1) else None
        arrays = (X, Y) if not sw.shape[0] else (X, Y, sw)
        parts = train_test_split(*arrays, random_state=self.rng,
                                 test_size=est.validation_fraction, stratify=stratify)
        X_tr, X_val, Y_tr, Y_val = parts[:4]
        sw_tr, sw_val = (parts[4], parts[5]) if sw.shape[0] else (sw, None)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        if is_classifier(est):
            y_val = est._label_binarizer.inverse_transform(Y_val if Y_val.shape[1] > 1
                                                           else Y_val.ravel())
        else:
            y_val = Y_val.ravel() if Y_val.shape[1] == 1 else Y_val
        sw_val = np.empty(0, dtype=X.dtype) if sw_val is None else sw_val
        return (as_rows(X_tr), engine_array(Y_tr), engine_array(sw_tr),
                X_val, np.ascontiguousarray(Y_val), y_val, sw_val)

    def lbfgs(self, fit, X, Y, sw, val=None):
        """Full-batch L-BFGS (scipy) on ``fit.net.loss_grad`` (local or a cluster's)."""
        est = self.est
        net, theta = fit.net, fit.theta
        dtype = theta.dtype
        grad = np.empty_like(theta)
        last = {}
        history = fit.history_

        def fun(x):
            theta[...] = x
            data, reg, g = net.loss_grad(theta, X, Y, sw, est.alpha, grad)
            last["data"], last["reg"] = data, reg
            return data + reg, g.astype(np.float64)

        t0 = [time.perf_counter()]
        state = {"epoch": 0, "stopped": False}
        callbacks = as_list(est.callbacks)
        self._validation_state(fit, val)
        validate = None if val is None else val.bind(net)
        report = verbose_progress(est.max_iter) if est.verbose else None

        def callback(intermediate_result):
            # called once per accepted L-BFGS iteration; the last evaluation is its point
            state["epoch"] += 1
            val_loss = None
            if validate is not None:
                val_loss = validate(intermediate_result.x.astype(dtype))[1]
                fit.validation_loss_curve_.append(val_loss)
            info = EpochResult(state["epoch"], float(intermediate_result.fun), None, None,
                               time.perf_counter() - t0[0],
                               [float(np.linalg.norm(g)) for g in _layer_grads(net, grad)],
                               val_loss)
            record(history, info)
            t0[0] = time.perf_counter()
            if report is not None:
                report(info)
            if any([bool(cb(info)) for cb in callbacks]):  # call every callback
                state["stopped"] = True
                raise StopIteration

        x0 = theta.astype(np.float64)
        try:
            res = scipy.optimize.minimize(
                fun, x0, method="L-BFGS-B", jac=True, callback=callback,
                options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol})
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user: keeping the last weights.")
            res = None
        finally:
            if report is not None:
                report.close()
        if res is not None:
            if res.status != 0 and not state["stopped"]:
                warnings.warn("lbfgs failed to converge after %d iteration(s) (status=%d): %s"
                              % (res.nit, res.status, res.message), ConvergenceWarning)
            fit.n_iter_ = min(int(res.nit), est.max_iter)
            theta[...] = res.x.astype(dtype)
        fun(theta.astype(np.float64))
        # scikit-learn's reported loss: the engine's data term (already averaged over
        # the outputs for regressors, ``Network.mean_outputs``) plus the L2 term
        fit.loss_ = float(last["data"] + last["reg"])

    # -- commit -----------------------------------------------------------------
    def commit(self, fit):
        """Assign what the fit produced to the estimator (only finite parameters)."""
        est, net, theta = self.est, fit.net, fit.theta
        if not np.isfinite(theta).all():  # never commit a broken model
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        for k in _FIT_ATTRS:  # only those this solver makes (scikit-learn's set)
            if hasattr(fit, k):
                setattr(est, k, getattr(fit, k))
        net.release()  # the training workspace; prediction takes its own
        est._keep(net, theta)


class ValidationSet:
    """Validation data of a fit (the user's X_val, y_val or the internal split).

    ``X`` (rows as the engine reads them), ``Y`` the encoded targets (n, n_outputs)
    of the model dtype, ``y`` the targets as the score function takes them,
    ``sw`` the weights (empty: all 1).  ``bind(net)`` gives the trainer's
    ``validate(theta)`` -> (score, loss): scikit-learn's score (accuracy, R^2)
    and the data term of the objective, ``sum_n s_n C_n / sum_n s_n`` (the
    training loss without the L2 term), from one forward pass.
    """

    def __init__(self, est, X, Y, y, sw):
        self.est, self.X, self.Y, self.y, self.sw = est, X, Y, y, sw

    def bind(self, net):
        return functools.partial(self.evaluate, net)

    def evaluate(self, net, theta):
        out = net.predict(theta, self.X)
        sw = self.sw
        if not np.isfinite(out).all():
            return np.nan, np.nan
        eps = float(np.finfo(out.dtype).eps)
        total = loss_delta(out, self.Y, sw, net.loss_code, net.layout.activations[-1],
                           float(net.hp[HP_HUBER]), eps, net.mean_outputs, np.empty_like(out))
        loss = total / (float(sw.sum(dtype=np.float64)) if sw.shape[0] else out.shape[0])
        score = self.est._score_function(self.y, self.est._decode(out),
                                         sample_weight=sw if sw.shape[0] else None)
        return float(score), float(loss)


# The fitted attributes a fit commits (besides coefs_/intercepts_ and the input
# checks' n_features_in_, feature_names_in_, classes_): only those its solver made.
_FIT_ATTRS = ("n_iter_", "t_", "n_outputs_", "n_layers_", "out_activation_", "_hidden_acts_",
              "loss_curve_", "history_", "best_loss_", "validation_scores_",
              "best_validation_score_", "_no_improvement_count", "_optimizer", "loss_",
              "validation_loss_curve_", "input_stats_", "scaler_", "_dropout_seed",
              "_dropout_step")
_REQUIRED = object()
# What a model file keeps of them: file key -> (attribute, conversion on load, default;
# _REQUIRED: the file must have it).  n_layers_ is len(coefs_) + 1.
_FILE_ATTRS = {
    "out_activation": ("out_activation_", None, _REQUIRED),
    "hidden_activations": ("_hidden_acts_", list, _REQUIRED),
    "dtype": (None, None, _REQUIRED),
    "n_outputs": ("n_outputs_", int, _REQUIRED),
    "n_iter": ("n_iter_", int, _REQUIRED),
    "t": ("t_", int, 0),
    "loss": ("loss_", None, None),
    "loss_curve": ("loss_curve_", None, None),
    "validation_scores": ("validation_scores_", None, None),
    "validation_loss_curve": ("validation_loss_curve_", None, None),
    "history": ("history_", None, None),
    # the dropout masks' stream (files before dropout: none drawn yet)
    "dropout_seed": ("_dropout_seed", None, None),
    "dropout_step": ("_dropout_step", int, 0),
}
# ...and what a loaded model starts afresh (a warm start from it begins new stopping
# bookkeeping and optimizer moments).
_FRESH_ON_LOAD = {"best_loss_": None, "best_validation_score_": None,
                  "_no_improvement_count": 0, "_optimizer": None}


def _file_contents(model):
    """(arrays, meta) of a fitted model's file (``fastbp.io`` writes them)."""
    arrays = {}
    for l, (c, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        arrays[f"coef_{l}"] = np.ascontiguousarray(c)
        arrays[f"intercept_{l}"] = np.ascontiguousarray(b)
    sources = model._fitted_sources()
    skips = getattr(model, "skip_coefs_", None) or {}
    for (s, t), c in skips.items():
        arrays[f"skip_coef_{s}_{t}"] = np.ascontiguousarray(c)
    meta = {
        "estimator": type(model).__name__,
        "params": {k: jsonable(v) for k, v in model.get_params().items()
                   if k not in ("callbacks",)},
        "n_layers": len(model.coefs_),
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": jsonable(getattr(model, "feature_names_in_", None)),
    }
    for key, (attr, convert, default) in _FILE_ATTRS.items():
        if key == "dtype":
            meta[key] = str(model.coefs_[0].dtype)
        elif default is _REQUIRED:
            meta[key] = jsonable(getattr(model, attr))
        else:
            meta[key] = jsonable(getattr(model, attr, default))
    stats = getattr(model, "input_stats_", None)
    if stats is not None:
        arrays.update(stats.arrays())
        meta["input_n_samples"] = stats.n_samples
    scaler = getattr(model, "scaler_", None)
    if scaler is not None:  # older fastbp would ignore it and predict garbage: refuse
        arrays.update(scaler.arrays())
        meta["format_version"] = 2
    meta["connections"] = jsonable(connections_dict(sources))
    model._save_labels(arrays, meta)
    return arrays, meta


def _from_file(cls, meta, data, path):
    """The fitted model a file's (meta, arrays) describe (``load``)."""
    n_layers = int(meta["n_layers"])
    coefs = [data[f"coef_{l}"] for l in range(n_layers)]
    intercepts = [data[f"intercept_{l}"] for l in range(n_layers)]
    dtype = np.dtype(meta["dtype"])
    sizes = [int(meta["n_features_in"])] + [c.shape[1] for c in coefs]
    # files before shortcut connections have no "connections": a chain
    sources = (normalize_connections(meta["connections"], n_layers - 1)
               if meta.get("connections") is not None else chain_sources(n_layers - 1))
    skips = {}
    for t, src in enumerate(sources, start=1):
        for s in src:
            if s != t - 1:
                skips[(s, t)] = data[f"skip_coef_{s}_{t}"]
    for l, (c, b) in enumerate(zip(coefs, intercepts)):
        n_in = sizes[l] if l in sources[l] else 0
        if c.dtype != dtype or b.dtype != dtype or c.shape != (n_in, sizes[l + 1]) \
                or b.shape != (sizes[l + 1],):
            raise ModelFileError(f"{path}: layer {l} arrays have inconsistent shapes or "
                                 "dtype")
        if not (np.isfinite(c).all() and np.isfinite(b).all()):
            raise ModelFileError(f"{path}: layer {l} holds non-finite weights")
    for (s, t), c in skips.items():
        if c.dtype != dtype or c.shape != (sizes[s], sizes[t]):
            raise ModelFileError(f"{path}: shortcut block {(s, t)} has an inconsistent shape "
                                 "or dtype")
        if not np.isfinite(c).all():
            raise ModelFileError(f"{path}: shortcut block {(s, t)} holds non-finite weights")
    params = {k: v for k, v in meta["params"].items() if k in cls().get_params()}
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    if isinstance(params.get("connections"), dict):  # JSON keys are strings
        params["connections"] = {int(k): list(v) for k, v in params["connections"].items()}
    model = cls(**params)
    model.coefs_ = coefs
    model.intercepts_ = intercepts
    model.skip_coefs_ = skips
    model.n_features_in_ = sizes[0]
    if meta.get("feature_names_in") is not None:
        model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    model.n_layers_ = n_layers + 1
    for key, (attr, convert, default) in _FILE_ATTRS.items():
        if attr is None:
            continue
        value = meta[key] if default is _REQUIRED else meta.get(key, default)
        setattr(model, attr, convert(value) if convert is not None else value)
    for attr, value in _FRESH_ON_LOAD.items():
        setattr(model, attr, value)
    model._load_labels(meta, data, path)
    model.input_stats_ = InputStats.from_file(meta, data, sizes[0])
    model.scaler_ = Standardizer.from_file(data, sizes[0])
    if model.scaler_ is not None and model.scale is None:
        raise ModelFileError(f"{path}: the file holds a scaler but scale is not set")
    if isinstance(params.get("class_weight"), dict):  # JSON made its labels strings
        model.class_weight = _labels_as_classes(params["class_weight"], model.classes_, path)
    if model.n_outputs_ != sizes[-1]:
        raise ModelFileError(f"{path}: n_outputs does not match the last layer")
    net = model._network(sizes[0], model.n_outputs_, dtype)
    model._keep(net, net.layout.pack(coefs, intercepts, dtype, skips))
    return model


def _labels_as_classes(weights, classes, path):
    """A saved ``class_weight`` dict (labels as JSON strings) keyed by ``classes`` again."""
    by_text = {str(c): c for c in np.asarray(classes).tolist()}
    out = {}
    for c in list(by_text.values()):  # an int key of float classes was saved as "1"
        if isinstance(c, float) and c.is_integer():
            by_text.setdefault(str(int(c)), c)
    for key, value in weights.items():
        if key not in by_text:
            raise ModelFileError(f"{path}: class_weight names a label {key!r} that is not "
                                 "a class")
        out[by_text[key]] = value
    return out


def load(path):
    """Read a model written by ``save``; returns a fitted estimator (``fastbp.load``)."""
    path = os.fspath(path)
    meta, data = io.read(path)
    try:
        cls = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[meta["estimator"]]
        return _from_file(cls, meta, data, path)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: incomplete or inconsistent model file "
                             f"({type(exc).__name__}: {exc})") from None


def _class_index(Y):
    """Index into ``classes_`` of each row of a binarized (single-label) target."""
    if Y.shape[1] == 1:
        return (Y[:, 0] > 0.5).astype(np.intp)
    return np.argmax(Y, axis=1)


def _class_weights(class_weight, classes, labels, y_type, counts=None):
    """The per-class weights (aligned with ``classes``) of ``class_weight``, or None."""
    if class_weight is None:
        return None
    if y_type == "multilabel-indicator":
        raise ValueError("per-class weights are not defined for a multilabel (2-D indicator) "
                         "y; 'balanced' weighs its samples instead (fit only).")
    classes = np.asarray(classes)
    if isinstance(class_weight, dict):
        unknown = [k for k in class_weight if k not in set(classes.tolist())]
        if unknown:
            raise ValueError(f"class_weight has labels {unknown} that are not classes "
                             f"(classes_ = {classes.tolist()}).")
        bad = [v for v in class_weight.values()
               if not (isinstance(v, (Real, np.number)) and np.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(f"class_weight values must be finite numbers >= 0, got {bad}.")
        # compute_class_weight's dict: classes it does not name weigh 1
        return np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
    if counts is None:
        counts = np.array([np.count_nonzero(labels == c) for c in classes])
    counts = np.asarray(counts, dtype=np.float64)
    if not (counts > 0).all():
        raise ValueError(f"class_weight='balanced': classes {classes[counts == 0].tolist()} "
                         "have no samples in y.")
    # compute_class_weight's formula: n_samples / (n_classes * bincount(y))
    return counts.sum() / (len(classes) * counts)


def _combine_weights(cw, index, sw, dtype):
    """Per-sample weights: the class weight of each sample's class times sample_weight."""
    w = np.asarray(cw, dtype=np.float64)[index]
    if sw.shape[0]:
        w = w * sw
    w = np.ascontiguousarray(w, dtype=dtype)
    if not w.sum() > 0:
        raise ValueError("sample_weight times class_weight must have a positive sum (every "
                         "sample has weight 0).")
    return w


def _layer_grads(net, grad):
    """Per layer (chain weights and biases), then per shortcut block, its gradient (flat)."""
    return [np.concatenate([w.ravel(), b]) for w, b in
            zip(net.layout.weights(grad), net.layout.biases(grad))] + \
        [w.ravel() for w in net.layout.skip_weights(grad)]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = ("Multi-layer perceptron classifier trained by fastbp's compiled backprop.\n\n"
               "Same parameters, attributes and results as ``sklearn.neural_network."
               "MLPClassifier``; softmax output for multiclass, logistic for binary and "
               "multilabel, log-loss.\n\n    Parameters\n    ----------" + _PARAMS_DOC
               + _CLASS_WEIGHT_DOC + _ATTRIBUTES_DOC)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="loops", n_jobs=None, callbacks=None, clip_norm=None, init="glorot",
                 scale=None, connections="chain", class_weight=None,
                 rprop_step_bounds=(1e-6, 50.0), dropout=0.0):
        self.class_weight = class_weight
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, activation=activation,
                         solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init,
                         power_t=power_t, max_iter=max_iter, loss="log_loss", shuffle=shuffle,
                         random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         backend=backend, n_jobs=n_jobs, callbacks=callbacks,
                         clip_norm=clip_norm, init=init, scale=scale,
                         connections=connections, rprop_step_bounds=rprop_step_bounds,
                         dropout=dropout)

    _parameter_constraints = {**_BaseMLP._parameter_constraints,
                              "class_weight": [StrOptions({"balanced"}), dict, None]}
    _parameter_constraints.pop("loss", None)

    def class_weights(self, labels=None, counts=None):
        """One weight per class of ``classes_`` (``sklearn.utils.class_weight.
        compute_class_weight``'s meaning of ``class_weight``), or None when unset.

        'balanced' counts the training ``labels``, or takes ``counts`` (samples
        per class of ``classes_``, as ``fastbp.dask.fit`` gathers them).
        """
        return _class_weights(self.class_weight, self.classes_, labels,
                              self._label_binarizer.y_type_, counts)

    def _class_weighted(self, Y, sw, incremental, validation=False):
        """sample weights times the class weights of each sample's class.

        'balanced' counts the classes of ``Y`` itself: for a validation set (as
        scikit-learn's HistGradientBoosting does), only the classes present in it.
        """
        if self.class_weight is None:
            return sw
        multilabel = self._label_binarizer.y_type_ == "multilabel-indicator"
        if multilabel and incremental:
            raise ValueError("class_weight with a multilabel y is not supported by partial_fit.")
        if multilabel:
            return self._multilabel_weighted(Y, sw)
        if validation and isinstance(self.class_weight, str):
            index = _class_index(Y)
            counts = np.bincount(index, minlength=len(self.classes_)).astype(np.float64)
            present = counts > 0
            cw = np.zeros(len(counts))
            cw[present] = len(index) / (np.count_nonzero(present) * counts[present])
            return _combine_weights(cw, index, sw, Y.dtype)
        if incremental and isinstance(self.class_weight, str):
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit: one call sees only "
                "part of y. Compute the weights on all of y with sklearn.utils.class_weight."
                "compute_class_weight('balanced', classes=classes, y=y) and pass "
                "class_weight=dict(zip(classes, weights)).")
        index = _class_index(Y)
        cw = self.class_weights(np.asarray(self.classes_)[index])
        return _combine_weights(cw, index, sw, Y.dtype)

    def _multilabel_weighted(self, Y, sw):
        """Multilabel y: 'balanced' as scikit-learn's ``compute_sample_weight`` has it for
        several outputs (per label column, 0 and 1 balanced; the product over columns)."""
        if not isinstance(self.class_weight, str):
            raise ValueError("class_weight for a multilabel (2-D indicator) y must be "
                             "'balanced'; a dict names classes of a single-label y.")
        w = compute_sample_weight("balanced", Y.astype(np.int64))
        return _combine_weights(np.ones(1), np.zeros(len(w), dtype=np.intp), sw * w
                                if sw.shape[0] else w, Y.dtype)

    def _loss_name(self):
        return "log_loss"

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        y = self._label_binarizer.transform(y).astype(X.dtype)
        return X, y

    def _encode_validation_target(self, y_val):
        """y_val binarized like y; a label not seen in y is refused."""
        lb = self._label_binarizer
        if lb.y_type_ == "multilabel-indicator":
            if np.ndim(y_val) != 2 or np.shape(y_val)[1] != len(self.classes_):
                raise ValueError(f"y_val must be a 2-D label indicator with "
                                 f"{len(self.classes_)} columns, like y.")
        else:
            unseen = np.setdiff1d(unique_labels(y_val), self.classes_)
            if len(unseen):
                raise ValueError(f"y_val has classes not in the training y: "
                                 f"{unseen.tolist()} (classes_ = "
                                 f"{np.asarray(self.classes_).tolist()}).")
        return lb.transform(y_val)

    @available_if(_stochastic_only)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``classes`` is required on the first call."""
        saved = self.__dict__.copy()
        try:
            if _check_partial_fit_first_call(self, classes):
                self._label_binarizer = LabelBinarizer()
                if type_of_target(y).startswith("multilabel"):
                    self._label_binarizer.fit(y)
                else:
                    self._label_binarizer.fit(classes)
            return self._fit(X, y, sample_weight=sample_weight, incremental=True)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _decode(self, y_pred):
        if y_pred.shape[1] == 1:  # not n_outputs_: also used mid-fit, before it is set
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    _score_function = staticmethod(accuracy_score)

    def predict(self, X):
        """Predicted class labels."""
        return self._decode(self._forward(X))

    def predict_proba(self, X):
        """Class probabilities, columns ordered as ``classes_``."""
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(y_prob, out=y_prob)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _encode_labels(self, labels, first_pass):
        """The LabelBinarizer for y's distinct ``labels`` (``FitRun.set_classes``)."""
        if first_pass:
            binarizer = LabelBinarizer().fit(labels)
            self._label_binarizer = binarizer
            self.classes_ = binarizer.classes_
        elif set(LabelBinarizer().fit(labels).classes_) != set(self.classes_):
            raise ValueError(
                "warm_start can only be used where `y` has the same classes as in the "
                f"previous call to fit. Previously got {self.classes_}, `y` has {labels}")
        return self._label_binarizer

    def _save_labels(self, arrays, meta):
        classes = np.asarray(self.classes_)
        if classes.dtype == object:
            try:
                classes = classes.astype(str)
            except (TypeError, ValueError) as exc:
                raise ValueError("class labels must be numbers or strings to be saved") from exc
        arrays["classes"] = classes
        lb = self._label_binarizer
        meta["label_binarizer"] = {"y_type": lb.y_type_, "neg_label": int(lb.neg_label),
                                   "pos_label": int(lb.pos_label),
                                   "classes_dtype": str(np.asarray(self.classes_).dtype)}

    def _load_labels(self, meta, data, path):
        lbm = meta["label_binarizer"]
        classes = data["classes"]
        lb = LabelBinarizer(neg_label=lbm["neg_label"], pos_label=lbm["pos_label"])
        if lbm["y_type"] == "multilabel-indicator":
            lb.fit(np.eye(len(classes), dtype=int)[:, :] if len(classes) > 1
                   else np.array([[0], [1]]))
        else:
            lb.fit(classes)
        if lb.y_type_ != lbm["y_type"]:
            raise ModelFileError(f"{path}: label information is inconsistent")
        self._label_binarizer = lb
        self.classes_ = lb.classes_


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = ("Multi-layer perceptron regressor trained by fastbp's compiled backprop.\n\n"
               "Same parameters, attributes and results as ``sklearn.neural_network."
               "MLPRegressor``; identity output.\n\n    Parameters\n    ----------\n"
               "    loss : {'squared_error', 'huber', 'poisson'}, default='squared_error'\n"
               "        'poisson': half the Poisson deviance with an exp output\n"
               "        (scikit-learn >= 1.7's); y must be >= 0.\n"
               "    huber_delta : float, default=1.0\n"
               "        Where the Huber loss turns from quadratic to linear." + _PARAMS_DOC
               + _ATTRIBUTES_DOC)

    _parameter_constraints = {**_BaseMLP._parameter_constraints,
                              "loss": [StrOptions({"squared_error", "huber", "poisson"})],
                              "huber_delta": [Interval(Real, 0, None, closed="neither")]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 huber_delta=1.0, backend="loops", n_jobs=None, callbacks=None,
                 clip_norm=None, init="glorot", scale=None, connections="chain",
                 rprop_step_bounds=(1e-6, 50.0), dropout=0.0):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, activation=activation,
                         solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init,
                         power_t=power_t, max_iter=max_iter, loss=loss, shuffle=shuffle,
                         random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         backend=backend, n_jobs=n_jobs, callbacks=callbacks,
                         clip_norm=clip_norm, init=init, scale=scale,
                         connections=connections, rprop_step_bounds=rprop_step_bounds,
                         dropout=dropout)
        self.huber_delta = huber_delta

    def _loss_name(self):
        return self.loss

    def _huber_delta(self):
        return float(self.huber_delta)

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self._check_target_range(y, "y")
        return X, y

    def _check_target_range(self, y, name):
        if self.loss == "poisson" and (np.asarray(y) < 0).any():
            row = int(np.flatnonzero((np.asarray(y) < 0).reshape(len(y), -1).any(axis=1))[0])
            raise ValueError(f"loss='poisson' requires {name} >= 0 (counts or rates); {name} "
                             f"has negative values (first in row {row}).")

    def _encode_validation_target(self, y_val):
        """y_val as it is (numbers, checked finite by validate_data), in the loss's range."""
        self._check_target_range(y_val, "y_val")
        return np.asarray(y_val)

    @available_if(_stochastic_only)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _decode(self, y_pred):
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    _score_function = staticmethod(r2_score)

    def predict(self, X):
        """Predicted values, (n_samples,) or (n_samples, n_outputs)."""
        return self._decode(self._forward(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # multi-output targets are supported (so are they by scikit-learn's MLPRegressor,
        # whose tag stays False); the tag enables scikit-learn's multi-output checks
        tags.target_tags.multi_output = True
        tags.target_tags.positive_only = self.loss == "poisson"
        return tags
