"""scikit-learn API compliance, fastbp's extras, and that training learns (issue 3).

* ``parametrize_with_checks`` on both estimators (adam and lbfgs instances, and
  rprop ones with issue 14's class_weight='balanced' and loss='poisson', and an adam
  classifier with dropout).  Only
  those three features' definitions mark checks xfail (``_expected_failures``).  scikit-learn
  itself skips, with its reason, exactly these checks:

  - check_array_api_input: skipped unless SCIPY_ARRAY_API=1 is set before scipy
    is imported; ``test_array_api_check_in_subprocess`` runs it with that setting.
  - check_classifiers_multilabel_output_format_decision_function: MLPClassifier
    has no decision_function (nor has scikit-learn's).

* clone, pickle, Pipeline, GridSearchCV(n_jobs=2) in loky worker processes.
* Extras: backends, per-layer activations, Huber loss, callbacks, ``history_``,
  ``verbose`` (``n_jobs``: test_threads.py).
* Learning: XOR, digits, breast cancer, Friedman #1 regression.
"""
import inspect
import os
import pickle
import re
import textwrap
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn.neural_network as sk
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp
from fastbp.trainer import EpochResult
from helpers import run_python

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CHECKED = [
    fastbp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, learning_rate_init=0.03,
                         random_state=0),
    fastbp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, learning_rate_init=0.03,
                        random_state=0),
    fastbp.MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=10, random_state=0),
    fastbp.MLPRegressor(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=10, random_state=0),
    # issue 14's features: class weights, Poisson loss, the rprop solver
    fastbp.MLPClassifier(hidden_layer_sizes=(5,), solver="rprop", max_iter=20,
                         learning_rate_init=0.03, class_weight="balanced", random_state=0),
    fastbp.MLPRegressor(loss="poisson", hidden_layer_sizes=(5,), solver="rprop", max_iter=100,
                        learning_rate_init=0.03, random_state=0),
    # and dropout (adam, the masks of a counter-based generator).  With 5 hidden units
    # 0.1: at 0.2 the training loss under the masks is noisy enough that the loss-based
    # stop (n_iter_no_change=20) ends check_class_weight_classifiers' fit at epoch 48,
    # short of its 87% bar (74%); dropout=0.0 and 0.1 run to 300 and 490 epochs (100%)
    fastbp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, learning_rate_init=0.03,
                         dropout=0.1, random_state=0),
]


def _expected_failures(est):
    """Only where a parameter's own definition departs from a check's assumption."""
    if getattr(est, "class_weight", None) == "balanced":
        # 'balanced' counts samples, not their weights (scikit-learn's compute_class_weight):
        # repeating a row changes the class weights, weighting it by 2 does not
        reason = "class_weight='balanced' counts samples, as scikit-learn's does"
        return {"check_sample_weight_equivalence_on_dense_data": reason,
                "check_sample_weight_equivalence_on_sparse_data": reason}
    if getattr(est, "dropout", 0):
        # the masks are drawn per row of X: a repeated row gets masks of its own, a row
        # of weight 2 one mask counted twice (the same in expectation, not in the bits)
        reason = "dropout draws a mask per row: repeating a row is not weighting it by 2"
        return {"check_sample_weight_equivalence_on_dense_data": reason,
                "check_sample_weight_equivalence_on_sparse_data": reason}
    if getattr(est, "loss", None) == "poisson":
        # the check draws negative targets whatever the positive_only tag says
        return {"check_regressor_multioutput": "loss='poisson' refuses negative targets"}
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.slow
def test_array_api_check_in_subprocess():
    """The one check scikit-learn skips here, run where it is enabled."""
    code = textwrap.dedent("""
        import warnings
        from sklearn.utils.estimator_checks import check_array_api_input
        import fastbp
        warnings.simplefilter("ignore")
        for est in [fastbp.MLPClassifier((5,), max_iter=20, random_state=0),
                    fastbp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=20, random_state=0)]:
            check_array_api_input(type(est).__name__, est, array_namespace="numpy",
                                  expect_only_array_outputs=False)
        print("CHECKED")
    """)
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = run_python(code, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CHECKED" in out.stdout


# -- parameters and the partial_fit guard -----------------------------------------------
EXTRAS = {"scale", "backend", "n_jobs", "callbacks", "clip_norm", "init", "connections",
          "rprop_step_bounds", "dropout"}


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_parameters_and_defaults_are_sklearns(name):
    ours = getattr(fastbp, name)().get_params()
    theirs = getattr(sk, name)().get_params()
    extras = EXTRAS | ({"huber_delta"} if name == "MLPRegressor" else {"class_weight"})
    assert set(ours) == set(theirs) | extras
    assert {k: ours[k] for k in theirs} == theirs
    # positional parameters in scikit-learn's order (MLPRegressor's first is loss)
    pos = [p.name for p in inspect.signature(getattr(fastbp, name)).parameters.values()
           if p.kind == p.POSITIONAL_OR_KEYWORD]
    sk_pos = [p.name for p in inspect.signature(getattr(sk, name)).parameters.values()
              if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert pos == sk_pos
    assert getattr(fastbp, name).__doc__.count("hidden_layer_sizes") >= 1


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_partial_fit_only_for_stochastic_solvers_in_both_classes(name):
    cls = getattr(fastbp, name)
    for solver in ("sgd", "adam"):
        assert hasattr(cls(solver=solver), "partial_fit")
    model = cls(solver="lbfgs")
    assert not hasattr(model, "partial_fit")  # scikit-learn's regressor guard lets it through
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as err:
        model.partial_fit
    assert str(err.value.__cause__) == ("partial_fit is only available for stochastic "
                                        "optimizers. lbfgs is not stochastic.")
    model.set_params(solver="sgd")
    assert hasattr(model, "partial_fit")


def test_partial_fit_refuses_early_stopping_and_first_call_without_classes(rng):
    X = rng.standard_normal((20, 3))
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        fastbp.MLPRegressor(early_stopping=True).partial_fit(X, y.astype(float))
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        fastbp.MLPClassifier().partial_fit(X, y)


def test_invalid_parameters_are_reported_at_fit_not_init(rng):
    """(Each invalid parameter's message: test_reliability.py's BAD_INPUT.)"""
    X, y = rng.standard_normal((10, 2)), np.arange(10) % 2
    model = fastbp.MLPClassifier(solver="newton")
    assert model.solver == "newton"  # __init__ only stores
    with pytest.raises(ValueError, match="'solver' parameter of MLPClassifier"):
        model.fit(X, y)
    with pytest.raises(ValueError, match="'max_iter' parameter of MLPClassifier"):
        model.set_params(solver="sgd", max_iter=0).fit(X, y)  # set_params only stores too


def test_validation_fraction_zero_is_accepted_without_early_stopping(rng):
    X, y = rng.standard_normal((20, 2)), np.arange(20) % 2
    for module in (sk, fastbp):  # the same parameter range as scikit-learn's
        module.MLPClassifier((3,), max_iter=2, validation_fraction=0.0).fit(X, y)
    with pytest.raises(ValueError):
        fastbp.MLPClassifier((3,), max_iter=2, validation_fraction=0.0,
                             early_stopping=True).fit(X, y)


# -- warm starts beyond scikit-learn, and failed fits ------------------------------------
def test_warm_start_may_switch_solver_and_early_stopping(blobs):
    """scikit-learn fails here (no loss_curve_ after lbfgs, no validation_scores_ list)."""
    X, y = blobs
    model = fastbp.MLPClassifier((5,), solver="lbfgs", max_iter=5, warm_start=True,
                                 random_state=0).fit(X, y)
    assert not hasattr(model, "loss_curve_")
    lbfgs_w = model.coefs_[0].copy()
    model.set_params(solver="adam", max_iter=3).fit(X, y)
    assert len(model.loss_curve_) == 3 and model.validation_scores_ is None
    assert model.best_loss_ == min(model.loss_curve_)
    assert np.abs(model.coefs_[0] - lbfgs_w).max() > 0
    model.set_params(early_stopping=True, max_iter=2).fit(X, y)
    assert len(model.validation_scores_) == 2 and len(model.loss_curve_) == 5
    assert model.best_validation_score_ == max(model.validation_scores_)


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_failed_fit_leaves_the_model_unchanged(blobs, how):
    X, y = blobs
    model = fastbp.MLPClassifier((5,), max_iter=3, warm_start=True, random_state=0)
    model.partial_fit(X, y, classes=[0, 1, 2]) if how == "partial_fit" else model.fit(X, y)
    model.partial_fit(X, y) if how == "partial_fit" else model.fit(X, y)
    curve, history = model.loss_curve_, model.history_
    before = dict(curve=list(curve), n=len(history["loss"]), n_iter=model.n_iter_,
                  t=model.t_, w=[c.copy() for c in model.coefs_])

    def fail_at_second_epoch(info):
        if info.epoch == 2 or how == "partial_fit":
            raise RuntimeError("stop here")

    model.set_params(callbacks=fail_at_second_epoch)
    with pytest.raises(RuntimeError, match="stop here"):
        model.partial_fit(X, y) if how == "partial_fit" else model.fit(X, y)
    assert model.loss_curve_ is curve and curve == before["curve"]  # appended in place, cut
    assert model.history_ is history and all(len(v) == before["n"] for v in history.values())
    assert (model.n_iter_, model.t_) == (before["n_iter"], before["t"])
    for a, b in zip(model.coefs_, before["w"]):
        np.testing.assert_array_equal(a, b)
    model.set_params(callbacks=None)
    model.partial_fit(X, y) if how == "partial_fit" else model.fit(X, y)  # still usable
    assert model.loss_curve_ is curve and len(curve) > len(before["curve"])


@pytest.mark.parametrize("early_stopping", [False, True])
def test_divergence_keeps_curves_counters_and_weights_consistent(rng, early_stopping):
    """Rolling back over several epochs also removes them from every record."""
    X = rng.random((200, 3)) * 1e3
    y = X @ [1.0, 2.0, 3.0]
    model = fastbp.MLPRegressor(hidden_layer_sizes=(8,), activation="identity", solver="sgd",
                                learning_rate_init=0.1, max_iter=50, random_state=0,
                                early_stopping=early_stopping)
    with pytest.warns(fastbp.DivergenceWarning):
        model.fit(X, y)
    n = model.n_iter_
    assert 0 < n < 50
    assert len(model.loss_curve_) == len(model.history_["loss"]) == n
    assert model.loss_ == model.loss_curve_[-1]
    assert model.t_ == n * (180 if early_stopping else 200)
    if early_stopping:
        assert len(model.validation_scores_) == n
        assert model.best_validation_score_ == max(model.validation_scores_)
    else:
        assert model.best_loss_ == min(model.loss_curve_)
    assert np.isfinite(model.predict(X)).all()


# -- clone, pickle, Pipeline, GridSearchCV ------------------------------------------------
def test_clone_keeps_parameters_and_drops_fitted_state(blobs):
    X, y = blobs
    model = fastbp.MLPClassifier((7, 3), activation=["tanh", "relu"], max_iter=5,
                                 random_state=2, backend="blas", n_jobs=1,
                                 callbacks=[lambda info: False]).fit(X, y)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert not hasattr(twin, "coefs_") and not hasattr(twin, "classes_")
    twin.fit(X, y)
    for a, b in zip(twin.coefs_, model.coefs_):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_pickle_round_trip_predicts_identically(blobs, name, solver):
    X, y = blobs
    if name == "MLPRegressor":
        y = X @ [1.0, -1.0, 0.5, 2.0]
    model = getattr(fastbp, name)(hidden_layer_sizes=(6,), max_iter=8, solver=solver,
                                  random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.predict(X), model.predict(X))
    if name == "MLPClassifier":
        np.testing.assert_array_equal(copy.predict_proba(X), model.predict_proba(X))
    assert copy.get_params() == model.get_params()
    assert copy.n_iter_ == model.n_iter_ and copy.loss_ == model.loss_
    # an unfitted estimator pickles too, and a pickled fitted one trains on identically
    assert pickle.loads(pickle.dumps(clone(model))).get_params() == model.get_params()
    if solver == "adam":
        copy.partial_fit(X, y)
        model.partial_fit(X, y)
        np.testing.assert_array_equal(copy.coefs_[0], model.coefs_[0])


def test_pipeline_with_standard_scaler(blobs):
    X, y = blobs
    X = X * [1.0, 100.0, 0.01, 5.0] + 50.0  # badly scaled
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", fastbp.MLPClassifier((8,), max_iter=60, random_state=0,
                                                  learning_rate_init=0.02))])
    pipe.fit(X, y)
    Xs = StandardScaler().fit_transform(X)
    assert pipe.score(X, y) >= 0.9
    np.testing.assert_array_equal(pipe.predict_proba(X),
                                  pipe.named_steps["mlp"].predict_proba(Xs))
    assert pipe.named_steps["mlp"].n_features_in_ == 4


@pytest.mark.slow
def test_grid_search_with_two_worker_processes(blobs):
    X, y = blobs
    grid = {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(3,), (8,)]}
    base = fastbp.MLPClassifier(max_iter=30, random_state=0, learning_rate_init=0.02)
    results = []
    for n_jobs in (1, 2):
        search = GridSearchCV(base, grid, cv=3, n_jobs=n_jobs, error_score="raise")
        search.fit(X, y)
        results.append(search)
    serial, parallel = results
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_array_equal(parallel.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])
    assert parallel.best_score_ > 0.7  # the majority class is 52%; 0.78 here
    np.testing.assert_array_equal(parallel.predict(X), serial.predict(X))


# -- beyond scikit-learn: backends --------------------------------------------------------
@pytest.mark.parametrize("params", [
    dict(solver="adam", shuffle=True, early_stopping=True, validation_fraction=0.3),
    dict(solver="sgd", batch_size=7, alpha=0.1, clip_norm=1.0),
    dict(solver="rmsprop", batch_size=4, clip_norm=1.0),
    dict(solver="adagrad", batch_size=4, clip_norm=1.0),
    dict(solver="lbfgs", max_iter=6),
], ids=["adam-early-stopping", "sgd-clip", "rmsprop-clip", "adagrad-clip", "lbfgs"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_backends_give_the_loops_result(rng, params, sparse):
    X = rng.standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    if sparse:
        X[rng.random(X.shape) < 0.5] = 0.0
        X = sp.csr_matrix(X)
    kw = dict(hidden_layer_sizes=(4, 3), activation="tanh", random_state=0, max_iter=3)
    kw.update(params)
    fitted = {}
    for backend in ("loops", "loops-serial", "blas", "python"):
        fitted[backend] = fastbp.MLPClassifier(backend=backend, **kw).fit(X, y)
    ref = fitted["loops"]
    for backend, model in fitted.items():
        assert model.n_iter_ == ref.n_iter_
        for a, b in zip(model.coefs_ + model.intercepts_, ref.coefs_ + ref.intercepts_):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * np.abs(b).max(),
                                       err_msg=backend)
        np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=1e-10)
        if params["solver"] != "lbfgs":
            np.testing.assert_allclose(model.loss_curve_, ref.loss_curve_, rtol=1e-10)


# -- per-layer activations ----------------------------------------------------------------
ACT = {"identity": lambda z: z, "logistic": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
       "relu": lambda z: np.maximum(z, 0), "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
       "softplus": lambda z: np.logaddexp(0, z)}


def _numpy_forward(model, X, acts, out):
    a = X
    for l, (w, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        z = a @ w + b
        a = ACT[acts[l]](z) if l < len(acts) else out(z)
    return a


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("acts", [["tanh", "relu", "logistic"],
                                  ["leaky_relu", "softplus", "identity"]])
def test_per_layer_activations_forward_and_train(blobs, acts):
    X, y = blobs
    model = fastbp.MLPClassifier((6, 5, 4), activation=acts, max_iter=40, random_state=0,
                                 learning_rate_init=0.01)
    model.fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), _numpy_forward(model, X, acts, _softmax),
                               rtol=1e-12, atol=1e-14)
    assert model.loss_curve_[-1] < 0.8 * model.loss_curve_[0]
    assert model.activation == acts  # the parameter is stored as given


@pytest.mark.parametrize("act", ["relu", "logistic"])
def test_activation_list_of_one_name_equals_the_name(blobs, act):
    X, y = blobs
    kw = dict(hidden_layer_sizes=(5, 4), max_iter=3, random_state=0)
    a = fastbp.MLPClassifier(activation=act, **kw).fit(X, y)
    b = fastbp.MLPClassifier(activation=[act, act], **kw).fit(X, y)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(p, q)


# -- Huber loss -----------------------------------------------------------------------------
def _huber_objective(coefs, intercepts, X, y, delta, alpha, act=np.tanh):
    """Independent NumPy objective: mean Huber over samples + alpha/2 ||W||^2 / n."""
    a = X
    for l, (w, b) in enumerate(zip(coefs, intercepts)):
        a = a @ w + b
        if l < len(coefs) - 1:
            a = act(a)
    r = a.ravel() - y
    h = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    return h.mean() + 0.5 * alpha * sum((w ** 2).sum() for w in coefs) / len(y)


@pytest.fixture
def outliers(rng):
    X = rng.standard_normal((120, 3))
    y = X @ [1.5, -2.0, 0.5] + 0.1 * rng.standard_normal(120)
    y_dirty = y.copy()
    y_dirty[:12] += 30.0  # 10% gross outliers
    return X, y, y_dirty


def test_huber_loss_value_and_gradient_are_right(outliers):
    X, _, y = outliers
    delta, alpha = 0.7, 0.05
    model = fastbp.MLPRegressor(loss="huber", huber_delta=delta, hidden_layer_sizes=(4,),
                                activation="tanh", solver="lbfgs", alpha=alpha, max_iter=25,
                                random_state=0)
    model.fit(X, y)
    coefs, intercepts = model.coefs_, model.intercepts_
    f = _huber_objective(coefs, intercepts, X, y, delta, alpha)
    assert model.loss_ == pytest.approx(f, rel=1e-12)
    # analytic gradient (fastbp's engine) vs central differences of the NumPy objective
    _, gw, gb = fastbp.loss_and_gradient(coefs, intercepts, X, y, activation="tanh",
                                         loss="huber", huber_delta=delta, alpha=alpha)
    params = [np.array(c, copy=True) for c in coefs] + [np.array(b, copy=True)
                                                       for b in intercepts]
    analytic = np.concatenate([g.ravel() for g in gw + gb])
    numeric = []
    eps = 1e-6
    for p in params:
        for k in range(p.size):
            old = p.flat[k]
            p.flat[k] = old + eps
            up = _huber_objective(params[:2], params[2:], X, y, delta, alpha)
            p.flat[k] = old - eps
            down = _huber_objective(params[:2], params[2:], X, y, delta, alpha)
            p.flat[k] = old
            numeric.append((up - down) / (2 * eps))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(analytic).max() > 1e-4  # not a trivially zero gradient (25 iterations)


def test_huber_resists_outliers_and_large_delta_is_squared_error(outliers, rng):
    X, y_clean, y = outliers
    kw = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate_init=0.02, max_iter=150,
              random_state=0, batch_size=20)
    huber = fastbp.MLPRegressor(loss="huber", huber_delta=0.5, **kw).fit(X, y)
    square = fastbp.MLPRegressor(loss="squared_error", **kw).fit(X, y)
    wide = fastbp.MLPRegressor(loss="huber", huber_delta=1e6, **kw).fit(X, y)
    Xt = rng.standard_normal((200, 3))
    yt = Xt @ [1.5, -2.0, 0.5]
    assert huber.score(Xt, yt) > 0.95  # learns the clean relation
    assert huber.score(Xt, yt) > square.score(Xt, yt) + 0.02
    for a, b in zip(wide.coefs_, square.coefs_):  # delta beyond every residual: squared error
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="huber_delta"):
        fastbp.MLPRegressor(loss="huber", huber_delta=0.0).fit(X, y)


# -- callbacks, history_, verbose -------------------------------------------------
def test_callbacks_receive_epoch_results_and_true_stops(blobs):
    X, y = blobs
    seen, also = [], []

    def stop_at_three(info):
        seen.append(info)
        return info.epoch == 3

    model = fastbp.MLPClassifier((5,), max_iter=50, random_state=0,
                                 callbacks=[stop_at_three, also.append])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a requested stop is no failure
        model.fit(X, y)
    assert model.n_iter_ == 3 and len(model.loss_curve_) == 3
    assert [r.epoch for r in seen] == [1, 2, 3] and len(also) == 3  # every callback called
    assert all(isinstance(r, EpochResult) for r in seen)
    assert [r.loss for r in seen] == model.loss_curve_
    assert seen[0].as_dict().keys() == {"epoch", "loss", "validation_score", "learning_rate",
                                        "seconds", "grad_norms", "validation_loss"}
    # lbfgs: one call per iteration; True stops it without a convergence warning
    lb = fastbp.MLPClassifier((5,), solver="lbfgs", max_iter=50, random_state=0,
                              callbacks=lambda info: info.epoch == 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        lb.fit(X, y)
    assert lb.n_iter_ == 4 and len(lb.history_["loss"]) == 4


def test_history_is_always_recorded(blobs):
    X, y = blobs
    n = len(y)
    model = fastbp.MLPClassifier((5, 4), solver="sgd", learning_rate="invscaling",
                                 learning_rate_init=0.1, power_t=0.5, max_iter=4,
                                 batch_size=n, shuffle=False, warm_start=True, random_state=0)
    model.fit(X, y)
    h = model.history_
    assert set(h) == {"loss", "validation_score", "learning_rate", "seconds", "grad_norms",
                      "validation_loss"}
    assert all(len(v) == 4 for v in h.values())
    assert h["loss"] == model.loss_curve_
    assert h["validation_score"] == [None] * 4
    # invscaling: the rate used in epoch k is lr0 / (1 + samples seen before it)^power_t
    assert h["learning_rate"] == pytest.approx([0.1 / (1 + k * n) ** 0.5 if k else 0.1
                                                for k in range(4)])
    assert all(s >= 0 for s in h["seconds"])
    assert all(len(g) == 3 and np.isfinite(g).all() for g in h["grad_norms"])
    # full batch: epoch 1's norms are those of the gradient at the starting weights
    start_w = [c.copy() for c in model.coefs_]
    start_b = [b.copy() for b in model.intercepts_]
    model.set_params(max_iter=1)
    model.fit(X, y)  # warm start from start_w
    Y = np.eye(3)[y]
    _, gw, gb = fastbp.loss_and_gradient(start_w, start_b, X, Y, activation="relu",
                                         out_activation="softmax", loss="log_loss",
                                         alpha=model.alpha)
    expected = [np.sqrt((w ** 2).sum() + (b ** 2).sum()) for w, b in zip(gw, gb)]
    np.testing.assert_allclose(model.history_["grad_norms"][-1], expected, rtol=1e-10)
    assert len(model.history_["loss"]) == 5  # warm starts append
    es = fastbp.MLPClassifier((5,), early_stopping=True, max_iter=3, random_state=0)
    es.fit(X, y)
    assert es.history_["validation_score"] == es.validation_scores_


def test_verbose_prints_one_line_per_epoch(blobs, capsys):
    X, y = blobs
    model = fastbp.MLPClassifier((5,), max_iter=4, early_stopping=True, verbose=True,
                                 random_state=0, n_iter_no_change=100)
    model.fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == model.n_iter_ == 4
    pattern = re.compile(r"Iteration (\d+), loss = ([0-9.]+), validation score = ([0-9.]+), "
                         r"validation loss = ([0-9.]+), time = ([0-9.]+)s$")
    for k, line in enumerate(lines):
        m = pattern.match(line)
        assert m, line
        assert int(m.group(1)) == k + 1
        assert float(m.group(2)) == pytest.approx(model.loss_curve_[k], abs=1e-8)
        assert float(m.group(3)) == pytest.approx(model.validation_scores_[k], abs=1e-6)
        assert float(m.group(4)) == pytest.approx(model.validation_loss_curve_[k], abs=1e-8)
    quiet = clone(model).set_params(verbose=False)
    quiet.fit(X, y)
    assert capsys.readouterr().out == ""


# -- training learns ----------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_xor(solver):
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    model = fastbp.MLPClassifier((8,), activation="tanh", solver=solver, random_state=1,
                                 learning_rate_init=0.1, max_iter=400, batch_size=4)
    model.fit(X, y)
    np.testing.assert_array_equal(model.predict(X), y)
    assert model.predict_proba(X)[y == 1, 1].min() > 0.5


def test_digits_accuracy():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=0,
                                          stratify=y)
    model = fastbp.MLPClassifier((64,), max_iter=30, learning_rate_init=0.01, random_state=0)
    model.fit(Xtr, ytr)
    assert model.score(Xte, yte) >= 0.95


def test_breast_cancer_accuracy():
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(),
                          fastbp.MLPClassifier((16,), max_iter=50, learning_rate_init=0.01,
                                               random_state=0))
    model.fit(Xtr, ytr)
    assert model.score(Xte, yte) >= 0.95


def test_friedman_regression_r2():
    """Friedman #1 (non-linear, noise sd 0.5): held-out R^2 >= 0.9."""
    X, y = make_friedman1(n_samples=1000, noise=0.5, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    model = make_pipeline(StandardScaler(),
                          fastbp.MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=200,
                                              learning_rate_init=0.01, random_state=0))
    model.fit(Xtr, ytr)
    assert model.score(Xte, yte) >= 0.9
