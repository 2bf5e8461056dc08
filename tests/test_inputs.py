"""Input types (issue 3, requirement 3).

NumPy C and F order, pandas DataFrame/Series (``feature_names_in_`` and
scikit-learn's feature-name checks), scipy.sparse CSR/CSC (trained through the
CSR kernels, never densified, equal to dense to 1e-10), Python lists, labels of
any type, and ``sample_weight`` in ``fit`` and ``partial_fit`` in every form
scikit-learn accepts.
"""
import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sklearn.neural_network as sk
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import fastbp
from fastbp.backends import get_engine
from helpers import assert_same_params, params_of

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TOL = 1e-10


def _clf(**kw):
    params = dict(hidden_layer_sizes=(5, 4), max_iter=4, batch_size=8, random_state=0,
                  learning_rate_init=0.01)
    params.update(kw)
    return fastbp.MLPClassifier(**params)


def _reg(**kw):
    params = dict(hidden_layer_sizes=(5,), max_iter=4, batch_size=8, random_state=0,
                  learning_rate_init=0.01)
    params.update(kw)
    return fastbp.MLPRegressor(**params)


@pytest.fixture
def data(rng):
    X = rng.standard_normal((30, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    yr = X @ rng.standard_normal(4)
    return X, y, yr


# -- NumPy layouts and Python lists -----------------------------------------------------
def test_c_and_f_order_give_identical_models(data):
    X, y, _ = data
    c = _clf().fit(np.ascontiguousarray(X), y)
    f = _clf().fit(np.asfortranarray(X), y)
    assert_same_params(c, f)  # bitwise
    np.testing.assert_array_equal(c.predict_proba(np.asfortranarray(X)), c.predict_proba(X))


def test_strided_and_readonly_input(data):
    X, y, _ = data
    wide = np.repeat(X, 2, axis=1)[:, ::2]  # a non-contiguous view equal to X
    assert not wide.flags.c_contiguous and not wide.flags.f_contiguous
    ro = X.copy()
    ro.setflags(write=False)
    ref = _clf().fit(X, y)
    for Xv in (wide, ro):
        model = _clf().fit(Xv, y)
        assert_same_params(model, ref, tol=1e-12)
    assert not ro.flags.writeable  # untouched


def test_predict_skips_validation_only_for_plainly_valid_arrays(data, monkeypatch):
    # a finite float ndarray of the fitted width skips validate_data (most of a one-row
    # predict); anything else still goes through it, with scikit-learn's messages
    import fastbp.estimators as est
    X, y, _ = data
    model = _clf().fit(X, y)
    calls = []
    real = est.validate_data
    monkeypatch.setattr(est, "validate_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    for Xv in (X, X[:1], X.astype(np.float32)):
        np.testing.assert_array_equal(model.predict_proba(Xv), model.predict_proba(Xv.tolist()))
    assert len(calls) == 3  # the three lists only
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    with pytest.raises(ValueError, match="4 features"):
        model.predict(X[:, :3])
    with pytest.raises(ValueError, match="0 sample"):
        model.predict(X[:0])
    with pytest.raises(NotFittedError, match="not fitted"):
        _clf().predict(X)
    framed = _clf().fit(pd.DataFrame(X, columns=list("abcd")), y)
    with pytest.warns(UserWarning, match="feature names"):
        framed.predict(X)


def test_python_lists(data):
    X, y, yr = data
    ref = _clf().fit(X, y)
    model = _clf().fit(X.tolist(), y.tolist())
    assert_same_params(model, ref, tol=1e-12)
    np.testing.assert_array_equal(model.predict(X.tolist()), ref.predict(X))
    reg = _reg().fit(X.tolist(), yr.tolist())
    assert_same_params(reg, _reg().fit(X, yr), tol=1e-12)
    multi = _reg().fit(X.tolist(), np.c_[yr, -yr].tolist())
    assert multi.predict(X).shape == (30, 2)


def test_integer_X_is_treated_as_float64(data):
    X, y, _ = data
    Xi = np.round(X * 10).astype(np.int32)
    model = _clf().fit(Xi, y)
    assert model.coefs_[0].dtype == np.float64
    assert_same_params(model, _clf().fit(Xi.astype(float), y), tol=1e-12)


# -- pandas -----------------------------------------------------------------------------
def test_dataframe_keeps_feature_names_and_matches_ndarray(data):
    X, y, yr = data
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = _clf().fit(df, pd.Series(y, name="target"))
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c", "d"])
    assert model.n_features_in_ == 4
    plain = _clf().fit(X, y)
    assert_same_params(model, plain, tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matching frame: no warning
        np.testing.assert_array_equal(model.predict(df), plain.predict(X))
    reg = _reg().fit(df, pd.Series(yr))
    np.testing.assert_array_equal(reg.feature_names_in_, df.columns)
    reg2 = _reg().fit(df, pd.DataFrame({"u": yr, "v": 2 * yr}))
    assert reg2.predict(df).shape == (30, 2)


def test_ndarray_fit_has_no_feature_names(data):
    X, y, _ = data
    model = _clf().fit(X, y)
    assert not hasattr(model, "feature_names_in_")
    assert model.n_features_in_ == 4


def _outcome(func):
    """(exception type, message) or (warning categories and messages) of func()."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            func()
        except Exception as exc:  # noqa: BLE001 - compared with scikit-learn's
            return type(exc).__name__, str(exc)
    return [(w.category.__name__, str(w.message)) for w in caught
            if not issubclass(w.category, ConvergenceWarning)]


@pytest.mark.parametrize("case", ["renamed", "reordered", "ndarray after frame",
                                  "frame after ndarray", "partial_fit renamed",
                                  "warm_start renamed"])
def test_feature_name_checks_like_sklearn(data, case):
    X, y, _ = data
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    renamed = df.rename(columns={"d": "z"})
    reordered = df[["b", "a", "c", "d"]]

    def run(cls):
        kw = dict(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
        if case == "renamed":
            cls(**kw).fit(df, y).predict(renamed)
        elif case == "reordered":
            cls(**kw).fit(df, y).predict_proba(reordered)
        elif case == "ndarray after frame":
            cls(**kw).fit(df, y).predict(X)
        elif case == "frame after ndarray":
            cls(**kw).fit(X, y).predict(df)
        elif case == "partial_fit renamed":
            cls(**kw).partial_fit(df, y, classes=np.unique(y)).partial_fit(renamed, y)
        else:
            model = cls(warm_start=True, **kw).fit(df, y)
            model.fit(renamed, y)

    expected = _outcome(lambda: run(sk.MLPClassifier))
    got = _outcome(lambda: run(fastbp.MLPClassifier))
    assert expected, "scikit-learn complains in every case"
    assert got == expected


def test_early_stopping_on_a_frame_raises_no_feature_name_warning(data):
    X, y, _ = data
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names")
        model = _clf(early_stopping=True, validation_fraction=0.3, max_iter=3).fit(df, y)
    assert len(model.validation_scores_) == 3


def test_pandas_nullable_and_categorical_labels(data):
    X, y, _ = data
    names = np.array(["lo", "mid", "hi"])[y]
    cat = pd.Series(pd.Categorical(names, categories=["lo", "mid", "hi"]))
    model = _clf().fit(X, cat)
    shared = {k: v for k, v in model.get_params().items()
              if k in sk.MLPClassifier().get_params()}
    ref = sk.MLPClassifier(**shared).fit(X, cat)
    np.testing.assert_array_equal(model.classes_, ref.classes_)
    np.testing.assert_array_equal(model.predict(X), ref.predict(X))
    ints = pd.Series(y, dtype="Int64")
    np.testing.assert_array_equal(_clf().fit(X, ints).predict(X), _clf().fit(X, y).predict(X))


# -- labels of any type -----------------------------------------------------------------
LABELS = {
    "ints": lambda y: np.array([-7, 3, 12])[y],
    "floats": lambda y: np.array([1.0, 2.0, 4.0])[y],
    "strings": lambda y: np.array(["cat", "dog", "emu"])[y],
    "objects": lambda y: np.array(["cat", "dog", "emu"], dtype=object)[y],
    "binary strings": lambda y: np.array(["no", "yes", "yes"])[y],
    "bools": lambda y: np.array([False, True, True])[y],
    "binary ints": lambda y: np.array([-1, 1, 1])[y],
}


@pytest.mark.parametrize("kind", list(LABELS))
def test_labels_of_any_type_like_sklearn(data, kind):
    X, y, _ = data
    labels = LABELS[kind](y)
    params = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0, batch_size=8)
    ref = sk.MLPClassifier(**params).fit(X, labels)
    model = fastbp.MLPClassifier(**params).fit(X, labels)
    np.testing.assert_array_equal(model.classes_, ref.classes_)
    assert model.classes_.dtype == ref.classes_.dtype
    pred = model.predict(X)
    assert pred.dtype == ref.predict(X).dtype
    np.testing.assert_array_equal(pred, ref.predict(X))
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), rtol=1e-9)
    assert set(pred) <= set(labels)
    assert model.score(X, labels) == ref.score(X, labels)
    # partial_fit with the same label type
    pf = fastbp.MLPClassifier(**params).partial_fit(X, labels, classes=np.unique(labels))
    assert set(pf.predict(X)) <= set(labels)


def test_continuous_labels_are_refused_like_sklearn(data):
    X, y, _ = data
    labels = y + 0.5
    expected = _outcome(lambda: sk.MLPClassifier(max_iter=2).fit(X, labels))
    assert expected[0] == "ValueError"
    assert _outcome(lambda: fastbp.MLPClassifier(max_iter=2).fit(X, labels)) == expected


def test_multilabel_indicator_and_sparse_indicator(data):
    X, y, _ = data
    Y = np.c_[y == 0, y == 1, y == 2].astype(int)
    model = _clf().fit(X, Y)
    assert model.predict(X).shape == (30, 3)
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    ref = sk.MLPClassifier(hidden_layer_sizes=(5, 4), max_iter=4, batch_size=8, random_state=0,
                           learning_rate_init=0.01).fit(X, Y)
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), rtol=1e-9)


def test_unseen_label_in_partial_fit_is_refused(data):
    X, y, _ = data
    model = _clf(solver="sgd").partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="classes not in"):
        model.partial_fit(X, y + 4)
    model.partial_fit(X[y == 0], y[y == 0])  # a subset of the classes is fine
    np.testing.assert_array_equal(model.classes_, [0, 1, 2, 3])


# -- scipy.sparse ---------------------------------------------------------------------
@pytest.fixture
def sparse_data(rng):
    X = rng.standard_normal((40, 12))
    X[rng.random((40, 12)) < 0.7] = 0.0
    X[3] = 0.0  # an empty row
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 5] > 0.5)
    return X, y


class EngineSpy:
    """Wraps the loops engines' train_epoch (every variant); records whether X came as CSR."""

    def __init__(self, monkeypatch):
        self.calls = []
        loops = get_engine("loops")
        for parallel, shortcuts, sparse in itertools.product((False, True), repeat=3):
            engine = loops.variant(parallel, shortcuts, sparse=sparse)
            monkeypatch.setattr(engine, "train_epoch", self._spy(engine.train_epoch))

    def _spy(self, original):
        def train_epoch(data, *args):
            X, Xs = data[0], data[1]
            self.calls.append((X.shape[0], Xs[2].shape[0]))
            return original(data, *args)
        return train_epoch

    def all_sparse(self):
        return bool(self.calls) and all(rows == 0 and indptr > 0 for rows, indptr in self.calls)


SPARSE_FORMATS = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "csr_array": sp.csr_array,
                  "csc_array": sp.csc_array, "coo": sp.coo_matrix}


@pytest.mark.parametrize("fmt", list(SPARSE_FORMATS))
@pytest.mark.parametrize("params", [
    dict(solver="adam", shuffle=True),
    dict(solver="sgd", shuffle=False, batch_size=1, max_iter=2),
    dict(solver="sgd", early_stopping=True, validation_fraction=0.25, max_iter=5),
], ids=["adam-shuffled", "sgd-b1", "early-stopping"])
def test_sparse_trains_through_csr_kernels_and_equals_dense(sparse_data, monkeypatch, fmt,
                                                            params):
    X, y = sparse_data
    dense = _clf(**params).fit(X, y)
    spy = EngineSpy(monkeypatch)
    Xs = SPARSE_FORMATS[fmt](X)
    model = _clf(**params).fit(Xs, y)
    assert spy.all_sparse(), "sparse input must reach the engine as CSR, not densified"
    assert len(spy.calls) == model.n_iter_
    assert_same_params(model, dense, tol=TOL)
    np.testing.assert_allclose(model.predict_proba(Xs), dense.predict_proba(X), atol=TOL)
    np.testing.assert_allclose(model.loss_curve_, dense.loss_curve_, rtol=TOL)
    if params.get("early_stopping"):
        np.testing.assert_allclose(model.validation_scores_, dense.validation_scores_, rtol=1e-12)


def test_sparse_regression_lbfgs_float32_and_weights(sparse_data, rng):
    X, y = sparse_data
    yr = X @ rng.standard_normal(12)
    sw = rng.uniform(0.5, 2.0, 40)
    for params in (dict(solver="lbfgs", max_iter=15), dict(solver="adam")):
        dense = _reg(**params).fit(X, yr, sample_weight=sw)
        model = _reg(**params).fit(sp.csr_matrix(X), yr, sample_weight=sw)
        assert_same_params(model, dense, tol=TOL)
        np.testing.assert_allclose(model.predict(sp.csc_matrix(X)), dense.predict(X),
                                   atol=TOL * np.abs(yr).max())
    X32 = sp.csr_matrix(X, dtype=np.float32)
    m32 = _reg().fit(X32, yr)
    assert m32.coefs_[0].dtype == np.float32 and m32.predict(X32).dtype == np.float32
    np.testing.assert_allclose(m32.predict(X32), _reg().fit(X.astype(np.float32), yr).predict(
        X.astype(np.float32)), rtol=1e-5, atol=1e-5)


def test_sparse_unsorted_indices_and_explicit_zeros(sparse_data):
    X, y = sparse_data
    ref = _clf().fit(X, y)
    csr = sp.csr_matrix(X)
    # reverse the column order inside each row and add explicit zeros
    data, indices = csr.data.copy(), csr.indices.copy()
    for r in range(csr.shape[0]):
        s, e = csr.indptr[r], csr.indptr[r + 1]
        data[s:e], indices[s:e] = data[s:e][::-1].copy(), indices[s:e][::-1].copy()
    unsorted = sp.csr_matrix((data, indices, csr.indptr.copy()), shape=csr.shape)
    assert not unsorted.has_sorted_indices
    zeros = sp.csr_matrix(X)
    zeros.data[::3] = 0.0  # stored zeros
    zeros_dense = zeros.toarray()
    model = _clf().fit(unsorted, y)
    assert_same_params(model, ref, tol=TOL)
    np.testing.assert_array_equal(unsorted.indices, indices)  # caller's matrix untouched
    assert_same_params(_clf().fit(zeros, y), _clf().fit(zeros_dense, y), tol=TOL)


def test_sparse_partial_fit_and_warm_start(sparse_data):
    X, y = sparse_data
    Xs = sp.csr_matrix(X)
    a, b = _clf(solver="sgd"), _clf(solver="sgd")
    for part in (slice(0, 20), slice(20, 40)):
        a.partial_fit(Xs[part], y[part], classes=[0, 1, 2])
        b.partial_fit(X[part], y[part], classes=[0, 1, 2])
    assert_same_params(a, b, tol=TOL)
    w1 = _clf(warm_start=True).fit(Xs, y).fit(Xs, y)
    w2 = _clf(warm_start=True).fit(X, y).fit(X, y)
    assert_same_params(w1, w2, tol=TOL)


# -- sample_weight in fit and partial_fit -------------------------------------------------
@pytest.mark.parametrize("form", ["ndarray", "list", "series", "int ndarray", "float32"])
def test_sample_weight_forms_in_fit_and_partial_fit(data, rng, form):
    X, y, _ = data
    sw = rng.integers(1, 4, 30).astype(float)
    conv = {"ndarray": lambda w: w, "list": list, "series": pd.Series,
            "int ndarray": lambda w: w.astype(int), "float32": lambda w: w.astype(np.float32)}
    wsw = conv[form](sw)
    ref = _clf().fit(X, y, sample_weight=sw)
    assert_same_params(_clf().fit(X, y, sample_weight=wsw), ref, tol=1e-12)
    pf_ref = _clf(solver="sgd").partial_fit(X, y, sample_weight=sw, classes=[0, 1, 2])
    pf = _clf(solver="sgd").partial_fit(X, y, sample_weight=wsw, classes=[0, 1, 2])
    assert_same_params(pf, pf_ref, tol=1e-12)
    assert np.max(np.abs(ref.coefs_[0] - _clf().fit(X, y).coefs_[0])) > 1e-8  # weights act


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_integer_weights_equal_repeated_rows_in_full_batch(data, rng, solver):
    """Full batch, no shuffle: weight k is k copies of the row; weight 0 is no row."""
    X, y, yr = data
    sw = rng.integers(0, 4, 30)
    sw[0] = 0
    Xr, yrr = np.repeat(X, sw, axis=0), np.repeat(yr, sw)
    params = dict(solver=solver, batch_size=500, shuffle=False, max_iter=6, alpha=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped
        weighted = _reg(**params).fit(X, yr, sample_weight=sw)
        repeated = _reg(**params).fit(Xr, yrr)
    assert_same_params(weighted, repeated, tol=1e-10)
    np.testing.assert_allclose(weighted.loss_, repeated.loss_, rtol=1e-10)


def test_uniform_weights_equal_no_weights(data):
    """Without L2 (scikit-learn divides alpha by the weight sum too) a constant weight
    is no weight; a scalar weight is that constant."""
    X, y, _ = data
    ref = _clf(alpha=0.0).fit(X, y)
    assert_same_params(_clf(alpha=0.0).fit(X, y, sample_weight=np.full(30, 2.5)), ref,
                        tol=1e-12)
    assert_same_params(_clf().fit(X, y, sample_weight=np.ones(30)), _clf().fit(X, y), tol=1e-12)
    assert_same_params(_clf().fit(X, y, sample_weight=2.5),
                        _clf().fit(X, y, sample_weight=np.full(30, 2.5)), tol=1e-12)
    # with alpha > 0 the weight scale matters, exactly as in scikit-learn
    assert np.max(np.abs(_clf(alpha=1.0).fit(X, y, sample_weight=np.full(30, 2.5)).coefs_[0]
                         - _clf(alpha=1.0).fit(X, y).coefs_[0])) > 1e-8


@pytest.mark.parametrize("bad,match", [
    (np.ones(29), r"sample_weight.shape == \(29,\), expected \(30,\)"),
    (np.ones((30, 2)), "must be 1D array"),
    (-np.ones(30), "Negative values"),
    (np.zeros(30), "at least one non-zero"),
])
def test_bad_sample_weight_is_refused_and_model_unchanged(data, bad, match):
    X, y, _ = data
    model = _clf().fit(X, y)
    before = params_of(model)
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, sample_weight=bad)
    for p, q in zip(params_of(model), before):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match=match):
        _clf(solver="sgd").partial_fit(X, y, sample_weight=bad, classes=[0, 1, 2])
