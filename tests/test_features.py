"""Issue 14's training features, each shown on data shipped with scikit-learn.

* ``class_weight`` (classifier): scikit-learn's ``compute_class_weight`` meaning, times
  ``sample_weight``; partial_fit with a dict; model files.
* ``fit(..., X_val=, y_val=, sample_weight_val=)``: early stopping on the user's set, and
  ``validation_loss_curve_`` (user set, internal split, lbfgs).
* ``loss="poisson"``: scikit-learn's Poisson MLP, weight for weight.
* ``solver="rprop"``: the kernel against its twin and the formula, the engine step, a
  stated loss on digits, thread independence.
(Kernel/finite-difference checks of the Poisson loss: test_kernels, test_gradcheck.)
"""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.metrics import log_loss, recall_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

import fastbp
from helpers import assert_same_params

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              # the held-out half of the cancer subset has an outlier (column 16)
              pytest.mark.filterwarnings("ignore:input column .* training standard deviations")]


def _fit(model, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y, **kw)


@pytest.fixture(scope="module")
def imbalanced_cancer():
    """Breast cancer with 25 of the 212 malignant (class 0) tumours kept: 7% minority.

    Split in halves (stratified), standardised on the training half:
    train 12 malignant / 179 benign, test 13 / 178.
    """
    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == 0), 25, replace=False),
                           np.flatnonzero(y == 1)])
    X_tr, X_te, y_tr, y_te = train_test_split(X[keep], y[keep], test_size=0.5,
                                              stratify=y[keep], random_state=0)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), y_tr, scaler.transform(X_te), y_te


def _cancer_model(**kw):
    kw = {"max_iter": 60, **kw}
    return fastbp.MLPClassifier((8,), learning_rate_init=0.01, alpha=1e-3, random_state=0,
                                **kw)


# -- class_weight ---------------------------------------------------------------------------
def test_balanced_class_weight_raises_minority_recall(imbalanced_cancer):
    """Minority (malignant) recall on the held-out half: 9/13 = 0.69 unweighted,
    13/13 = 1.00 with class_weight='balanced' (accuracy 0.97 -> 0.93)."""
    X_tr, y_tr, X_te, y_te = imbalanced_cancer
    plain = _fit(_cancer_model(), X_tr, y_tr)
    balanced = _fit(_cancer_model(class_weight="balanced"), X_tr, y_tr)
    recall_plain = recall_score(y_te, plain.predict(X_te), pos_label=0)
    recall_balanced = recall_score(y_te, balanced.predict(X_te), pos_label=0)
    assert recall_plain == pytest.approx(9 / 13)
    assert recall_balanced == 1.0
    assert balanced.score(X_te, y_te) > 0.9


def test_class_weight_is_sklearns_sample_weight_times_sample_weight(imbalanced_cancer, rng):
    """'balanced' and a dict equal the per-sample weights scikit-learn computes for them,
    multiplied with sample_weight: bitwise the same weights after training."""
    X, y = imbalanced_cancer[:2]
    X, y = X[:80], y[:80]
    sw = rng.uniform(0.5, 2.0, len(y))
    for cw in ("balanced", {0: 3.0}):
        model = _fit(_cancer_model(class_weight=cw, max_iter=3), X, y, sample_weight=sw)
        ref = _fit(_cancer_model(max_iter=3), X, y,
                   sample_weight=sw * compute_sample_weight(cw, y))
        assert_same_params(model, ref)
        assert model.loss_curve_ == ref.loss_curve_


def test_class_weight_with_string_labels_lbfgs_and_partial_fit(rng):
    X = rng.standard_normal((40, 3))
    labels = np.array(["a", "b", "c"])[(X[:, 0] > 0.3).astype(int) + (X[:, 1] > 1).astype(int)]
    cw = {"a": 0.5, "c": 4.0}
    per_sample = compute_sample_weight(cw, labels)
    for solver in ("lbfgs", "sgd"):
        model = _fit(fastbp.MLPClassifier((4,), solver=solver, max_iter=4, random_state=0,
                                          class_weight=cw), X, labels)
        ref = _fit(fastbp.MLPClassifier((4,), solver=solver, max_iter=4, random_state=0),
                   X, labels, sample_weight=per_sample)
        assert_same_params(model, ref)
    # partial_fit: a dict works (classes up front), 'balanced' is refused with the remedy
    model = fastbp.MLPClassifier((4,), solver="sgd", random_state=0, class_weight=cw)
    ref = fastbp.MLPClassifier((4,), solver="sgd", random_state=0)
    for part in (slice(0, 20), slice(20, 40)):
        model.partial_fit(X[part], labels[part], classes=["a", "b", "c"])
        ref.partial_fit(X[part], labels[part], classes=["a", "b", "c"],
                        sample_weight=per_sample[part])
    assert_same_params(model, ref)
    with pytest.raises(ValueError, match="'balanced' is not supported by partial_fit"):
        fastbp.MLPClassifier(solver="sgd", class_weight="balanced").partial_fit(
            X, labels, classes=["a", "b", "c"])


@pytest.mark.parametrize("cw, match", [
    ({"z": 2.0}, "class_weight has labels \\['z'\\] that are not classes"),
    ({"a": -1.0}, "class_weight values must be finite numbers >= 0"),
    ({"a": 0.0, "b": 0.0}, "must have a positive sum"),
    ("heavy", "'class_weight' parameter of MLPClassifier"),
])
def test_bad_class_weight_is_named(rng, cw, match):
    X = rng.standard_normal((10, 2))
    y = np.array(["a", "b"])[np.arange(10) % 2]
    before = _fit(fastbp.MLPClassifier((3,), max_iter=2, random_state=0), X, y)
    coef = before.coefs_[0].copy()
    with pytest.raises(ValueError, match=match):
        before.set_params(class_weight=cw, warm_start=True).fit(X, y)
    assert np.array_equal(before.coefs_[0], coef)  # a failed fit changes nothing


def test_class_weight_for_multilabel_is_sklearns_compute_sample_weight(rng):
    X = rng.standard_normal((20, 2))
    Y = (rng.random((20, 3)) > 0.3).astype(int)
    kw = dict(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    model = _fit(fastbp.MLPClassifier(**kw, class_weight="balanced"), X, Y)
    ref = _fit(fastbp.MLPClassifier(**kw), X, Y,
               sample_weight=compute_sample_weight("balanced", Y))
    assert_same_params(model, ref)
    with pytest.raises(ValueError, match="multilabel .* must be 'balanced'"):
        fastbp.MLPClassifier(**kw, class_weight={1: 2.0}).fit(X, Y)


def test_class_weight_saved_and_loaded(tmp_path, rng):
    X = rng.standard_normal((30, 2))
    for y, cw in ((np.arange(30) % 2, {1: 2.5}),
                  (np.array(["x", "y", "z"])[np.arange(30) % 3], "balanced"),
                  ((np.arange(30) % 2).astype(float), {1: 2.5})):
        model = _fit(fastbp.MLPClassifier((3,), max_iter=2, random_state=0, class_weight=cw),
                     X, y)
        model.save(tmp_path / "m.fbp")
        loaded = fastbp.load(tmp_path / "m.fbp")
        assert loaded.class_weight == cw
        # a warm start from the loaded model weighs the classes as the original did
        again = _fit(loaded.set_params(warm_start=True, max_iter=1), X, y)
        assert again.n_iter_ == 1


# -- a validation set of the user's choosing ----------------------------------------------
@pytest.fixture(scope="module")
def digits_split():
    """Digits / 16: 1000 training rows, the next 400 as the user's validation set."""
    X, y = load_digits(return_X_y=True)
    X = X / 16
    return X[:1000], y[:1000], X[1000:1400], y[1000:1400]


def _stop_epoch(scores, tol, patience):
    """Where scikit-learn's early-stopping rule stops on this score curve (1-based)."""
    best, count = -np.inf, 0
    for epoch, score in enumerate(scores, 1):
        count = count + 1 if score < best + tol else 0
        best = max(best, score)
        if count > patience:
            return epoch
    return len(scores)


def test_early_stopping_on_a_user_set_stops_where_its_curve_says(digits_split):
    X, y, X_val, y_val = digits_split
    model = fastbp.MLPClassifier((16,), max_iter=100, learning_rate_init=0.01,
                                 early_stopping=True, n_iter_no_change=5, random_state=0)
    _fit(model, X, y, X_val=X_val, y_val=y_val)
    scores = model.validation_scores_
    assert len(scores) == len(model.validation_loss_curve_) == model.n_iter_ < 100
    assert model.n_iter_ == _stop_epoch(scores, model.tol, 5)
    best = int(np.argmax(scores))
    # the kept weights are the best epoch's: its score and its loss on the user's set
    assert model.score(X_val, y_val) == scores[best] == model.best_validation_score_
    assert log_loss(y_val, model.predict_proba(X_val)) == pytest.approx(
        model.validation_loss_curve_[best], rel=1e-12)
    assert model.history_["validation_loss"] == model.validation_loss_curve_
    assert model.history_["validation_score"] == scores
    # the internal split is not used: the whole of X trains (same as without early
    # stopping for the epochs both ran)
    plain = _fit(fastbp.MLPClassifier((16,), max_iter=3, learning_rate_init=0.01,
                                      random_state=0), X, y)
    assert plain.loss_curve_ == model.loss_curve_[:3]


def test_validation_loss_curve_without_early_stopping_and_with_the_internal_split(
        digits_split):
    X, y, X_val, y_val = digits_split
    seen = []
    kw = dict(hidden_layer_sizes=(8,), max_iter=4, random_state=0)
    model = _fit(fastbp.MLPClassifier(**kw, callbacks=seen.append), X, y, X_val=X_val,
                 y_val=y_val, sample_weight_val=np.full(len(y_val), 2.0))
    assert model.validation_scores_ is None  # no early stopping: no scores kept
    assert len(model.validation_loss_curve_) == 4
    assert [info.validation_loss for info in seen] == model.validation_loss_curve_
    assert model.validation_loss_curve_[-1] == pytest.approx(
        log_loss(y_val, model.predict_proba(X_val)), rel=1e-12)
    # the same training as without the validation set (bitwise)
    ref = _fit(fastbp.MLPClassifier(**kw), X, y)
    assert_same_params(model, ref)
    assert ref.validation_loss_curve_ is None
    assert ref.history_["validation_loss"] == [None] * 4
    # internal split: a curve too, and early stopping as before
    split = _fit(fastbp.MLPClassifier(**kw, early_stopping=True), X, y)
    assert len(split.validation_loss_curve_) == len(split.validation_scores_) == 4
    # lbfgs: one value per iteration
    lb = _fit(fastbp.MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=5,
                                  random_state=0), X, y / 9.0, X_val=X_val, y_val=y_val / 9.0)
    assert len(lb.validation_loss_curve_) == lb.n_iter_
    assert lb.validation_loss_curve_[-1] == pytest.approx(
        0.5 * np.mean((lb.predict(X_val) - y_val / 9.0) ** 2), rel=1e-12)


def test_user_set_overrides_a_forced_validation_fraction_with_a_warning(digits_split):
    X, y, X_val, y_val = digits_split
    model = fastbp.MLPClassifier((4,), max_iter=2, early_stopping=True,
                                 validation_fraction=0.3, random_state=0)
    with pytest.warns(UserWarning, match="validation_fraction=0.3 is ignored"):
        model.fit(X, y, X_val=X_val, y_val=y_val)


@pytest.mark.parametrize("change, match", [
    (lambda Xv, yv: (Xv[:, :5], yv), "validation data .*X has 5 features, but "
                                     "MLPClassifier is expecting 64"),
    (lambda Xv, yv: (Xv, np.where(yv == 3, 11, yv)), "y_val has classes not in the "
                                                     "training y: \\[11\\]"),
    (lambda Xv, yv: (np.where(Xv > 0.5, np.nan, Xv), yv), "validation data .*NaN"),
    (lambda Xv, yv: (Xv, yv[:10]), "validation data .*inconsistent numbers of samples"),
    (lambda Xv, yv: (Xv, None), "X_val and y_val must be given together"),
])
def test_bad_validation_data_is_named_and_changes_nothing(digits_split, change, match):
    X, y, X_val, y_val = digits_split
    model = _fit(fastbp.MLPClassifier((4,), max_iter=2, random_state=0), X, y)
    before = model.coefs_[0].copy()
    Xv, yv = change(X_val, y_val)
    with pytest.raises(ValueError, match=match):
        model.set_params(warm_start=True).fit(X, y, X_val=Xv, y_val=yv)
    assert np.array_equal(model.coefs_[0], before)
    with pytest.raises(ValueError, match="sample_weight_val: .*"):
        model.fit(X, y, X_val=X_val, y_val=y_val, sample_weight_val=-np.ones(len(y_val)))


def test_regressor_validation_width_and_file_round_trip(tmp_path, rng):
    X = rng.standard_normal((40, 3))
    Y = X[:, :2] ** 2
    model = _fit(fastbp.MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0),
                 X, Y, X_val=X[:10], y_val=Y[:10])
    with pytest.raises(ValueError, match="y_val has 1 output\\(s\\), y has 2"):
        fastbp.MLPRegressor(max_iter=2).fit(X, Y, X_val=X[:10], y_val=Y[:10, 0])
    model.save(tmp_path / "r.fbp")
    loaded = fastbp.load(tmp_path / "r.fbp")
    assert loaded.validation_loss_curve_ == model.validation_loss_curve_
    assert loaded.history_["validation_loss"] == model.validation_loss_curve_


# -- loss="poisson" (regressor) --------------------------------------------------------------
@pytest.fixture(scope="module")
def diabetes_rates():
    """Diabetes, standardised features, target / 100 (positive rates, 0.25 to 3.46)."""
    X, y = load_diabetes(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), y / 100.0


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_poisson_matches_sklearn(diabetes_rates, solver):
    """scikit-learn >= 1.7's Poisson MLP (exp output, half Poisson deviance, delta
    exp(z) - y): the same weights, loss curve and loss from the same random_state."""
    sk_mlp = pytest.importorskip("sklearn.neural_network")
    if "poisson" not in sk_mlp.MLPRegressor._parameter_constraints["loss"][0].options:
        pytest.skip("this scikit-learn has no Poisson MLP (added in 1.7)")
    X, y = diabetes_rates
    kw = dict(loss="poisson", hidden_layer_sizes=(8,), max_iter=5, random_state=0,
              solver=solver, learning_rate_init=0.01)
    for target in (y, np.c_[y, 0.5 * y]):  # one and two outputs (the deviance sums them)
        ref = _fit(sk_mlp.MLPRegressor(**kw), X, target)
        model = _fit(fastbp.MLPRegressor(**kw), X, target)
        assert model.out_activation_ == ref.out_activation_ == "exp"
        assert_same_params(model, ref, tol=1e-9)
        assert model.loss_ == pytest.approx(ref.loss_, rel=1e-9)
        if solver != "lbfgs":
            np.testing.assert_allclose(model.loss_curve_, ref.loss_curve_, rtol=1e-9)
        np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-9)


def test_poisson_refuses_negative_targets_and_round_trips(diabetes_rates, tmp_path):
    X, y = diabetes_rates
    with pytest.raises(ValueError, match="loss='poisson' requires y >= 0 .* row 3"):
        fastbp.MLPRegressor(loss="poisson").fit(X, np.where(np.arange(len(y)) == 3, -1.0, y))
    model = _fit(fastbp.MLPRegressor(loss="poisson", hidden_layer_sizes=(4,), max_iter=3,
                                     random_state=0), X, y)
    with pytest.raises(ValueError, match="requires y_val >= 0"):
        model.fit(X, y, X_val=X[:5], y_val=-y[:5])
    assert model.__sklearn_tags__().target_tags.positive_only
    assert (model.predict(X) > 0).all()
    model.save(tmp_path / "p.fbp")
    loaded = fastbp.load(tmp_path / "p.fbp")
    assert loaded.loss == "poisson" and loaded.out_activation_ == "exp"
    assert np.array_equal(loaded.predict(X), model.predict(X))


# -- solver="rprop" (iRPROP-, full batch) ---------------------------------------------------
def _rprop_reference(theta, grad, step, prev, lo, hi):
    """iRPROP- written out per weight (Igel & Huesken 2000, eta+ 1.2, eta- 0.5)."""
    theta, step, prev = theta.copy(), step.copy(), prev.copy()
    for k in range(theta.shape[0]):
        g = float(grad[k])
        if g * prev[k] > 0:
            step[k] = min(step[k] * 1.2, hi)
        elif g * prev[k] < 0:
            step[k] = max(step[k] * 0.5, lo)
            g = 0.0
        theta[k] -= np.sign(g) * step[k]
        prev[k] = g
    return theta, step, prev


@pytest.mark.parametrize("form", ["serial", "parallel", "python", "blas"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [1, 7, 33])
def test_rprop_step_kernel_vs_twin_and_formula(rng, form, dtype, p):
    from fastbp import kernels_blas, kernels_loop
    serial = kernels_loop.rprop_step_serial
    kernel = {"serial": serial, "parallel": kernels_loop.rprop_step_parallel,
              "python": getattr(serial, "py_func", serial),
              "blas": kernels_blas.rprop_step}[form]
    theta = rng.standard_normal(p).astype(dtype)
    grad = rng.standard_normal(p).astype(dtype)
    grad[::5] = 0.0  # no move, step kept
    prev = rng.standard_normal(p).astype(dtype)
    prev[1::4] = 0.0  # first step, or after a sign change
    step = rng.uniform(1e-7, 60.0, p).astype(dtype)  # some beyond either bound
    lo, hi = 1e-6, 50.0
    ref = _rprop_reference(theta.astype(np.float64), grad.astype(np.float64),
                           step.astype(np.float64), prev.astype(np.float64), lo, hi)
    kernel(theta, grad, step, prev, lo, hi)
    tol = 1e-6 if dtype == np.float32 else 1e-15
    for got, want in zip((theta, step, prev), ref):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_rprop_epoch_is_the_full_batch_gradient_then_the_step(rng):
    """engine.rprop_epoch on every backend == loss_grad, then the formula."""
    from fastbp.network import Network
    from fastbp.optimizers import Optimizer
    X = rng.standard_normal((30, 4))
    Y = rng.standard_normal((30, 2))
    sw = rng.uniform(0.5, 2.0, 30)
    results = []
    for backend in ("loops", "blas", "python"):
        net = Network([4, 5, 2], ["tanh"], "identity", "squared_error", np.float64, backend)
        theta = net.layout.init(np.random.RandomState(0), np.float64, "glorot", [2, 2])
        opt = Optimizer("rprop", theta.size, np.float64, 0.05, step_bounds=(1e-6, 0.2))
        opt.m2[...] = rng.standard_normal(theta.size) if not results else results[0][3]
        prev0 = opt.m2.copy()
        data, reg, grad = net.loss_grad(theta, X, Y, sw, 0.1)
        want = _rprop_reference(theta, grad, opt.m1, prev0, 1e-6, 0.2)
        stats = net.rprop_epoch(theta, np.empty_like(theta), opt, X, Y, sw, 0.1)
        assert stats[4] + stats[5] == pytest.approx(data + reg, rel=1e-12)
        for got, ref in zip((theta, opt.m1, opt.m2), want):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
        results.append((theta, opt.m1, opt.m2, prev0))


def test_rprop_reaches_a_stated_loss_on_digits(digits_split):
    """Digits / 16 (first 1000 rows), 16 tanh... relu units: 40 full-batch iRPROP- steps
    from steps of 0.05 reach a training log-loss below 0.06 (measured 0.048) and
    training accuracy above 0.98; loops and blas backends agree."""
    X, y = digits_split[:2]
    kw = dict(hidden_layer_sizes=(16,), solver="rprop", max_iter=40, learning_rate_init=0.05,
              random_state=0)
    model = _fit(fastbp.MLPClassifier(**kw), X, y)
    assert model.n_iter_ == 40 and len(model.loss_curve_) == 40
    assert model.loss_ < 0.06
    assert model.score(X, y) > 0.98
    twin = _fit(fastbp.MLPClassifier(**kw, backend="blas"), X, y)
    np.testing.assert_allclose(twin.loss_curve_, model.loss_curve_, rtol=1e-9)
    # early stopping on a user set, model files and bad bounds
    stop = _fit(fastbp.MLPClassifier(**kw, early_stopping=True, n_iter_no_change=3), X, y,
                X_val=digits_split[2], y_val=digits_split[3])
    assert stop.n_iter_ == _stop_epoch(stop.validation_scores_, stop.tol, 3)
    with pytest.raises(ValueError, match="rprop_step_bounds must satisfy 0 <= min < max"):
        fastbp.MLPClassifier(solver="rprop", rprop_step_bounds=(1.0, 0.5)).fit(X, y)
    assert not hasattr(fastbp.MLPClassifier(solver="rprop"), "partial_fit")


def test_rprop_is_bitwise_the_same_for_one_and_two_threads(digits_split):
    """64-64-10 on 1000 rows: 1024-row chunks x 64 x 64 multiply-adds pass the parallel
    threshold, so the parallel kernels run; the results do not depend on the threads."""
    X, y = digits_split[:2]
    kw = dict(hidden_layer_sizes=(64,), solver="rprop", max_iter=3, learning_rate_init=0.05,
              random_state=0)
    one = _fit(fastbp.MLPClassifier(**kw, n_jobs=1), X, y)
    two = _fit(fastbp.MLPClassifier(**kw, n_jobs=2), X, y)
    assert_same_params(one, two)
    assert one.loss_curve_ == two.loss_curve_


def test_poisson_model_exports_to_onnx(diabetes_rates):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    X, y = diabetes_rates
    model = _fit(fastbp.MLPRegressor(loss="poisson", hidden_layer_sizes=(4,), max_iter=5,
                                     random_state=0), X, y)
    session = ort.InferenceSession(fastbp.to_onnx(model).SerializeToString())
    out = session.run(None, {session.get_inputs()[0].name: X})[0]
    np.testing.assert_allclose(out.ravel(), model.predict(X), rtol=1e-12)
