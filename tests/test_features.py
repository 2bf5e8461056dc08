"""Issue 14's training features, each shown on data shipped with scikit-learn.

* ``class_weight`` (classifier): scikit-learn's ``compute_class_weight`` meaning, times
  ``sample_weight``; partial_fit with a dict; model files.
"""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import recall_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

import fastbp
from helpers import assert_same_params

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


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


def test_class_weight_refused_for_multilabel(rng):
    X = rng.standard_normal((10, 2))
    Y = (rng.random((10, 3)) > 0.5).astype(int)
    with pytest.raises(ValueError, match="class_weight is not supported for multilabel"):
        fastbp.MLPClassifier((3,), max_iter=2, class_weight="balanced").fit(X, Y)


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
