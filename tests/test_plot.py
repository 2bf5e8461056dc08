"""``fastbp.plot``: the training history drawn from a model (the CLI's ``fastbp plot``)."""
import sys

import numpy as np
import pytest

import fastbp
from fastbp.plot import MatplotlibMissing, history_figure, save_history

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fitted(blobs):
    X, y = blobs
    return fastbp.MLPClassifier((5, 3), max_iter=4, early_stopping=True, random_state=0,
                                n_iter_no_change=10).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_history_figure_panels_and_png(fitted, tmp_path):
    pytest.importorskip("matplotlib")
    fig = history_figure(fitted)
    loss, score, norms = fig.axes
    np.testing.assert_allclose(loss.lines[0].get_ydata(), fitted.history_["loss"])
    np.testing.assert_allclose(score.lines[0].get_ydata(), fitted.history_["validation_score"])
    assert [line.get_label() for line in norms.lines] == ["hidden layer 1", "hidden layer 2",
                                                           "output layer"]
    assert "best: " in score.get_legend().get_texts()[0].get_text()
    path = save_history(fitted, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG


def test_history_figure_without_validation_or_history(blobs):
    pytest.importorskip("matplotlib")
    X, y = blobs
    model = fastbp.MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=5,
                                random_state=0).fit(X, y)
    fig = history_figure(model)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "iteration"
    model.history_ = None
    with pytest.raises(ValueError, match="no training history"):
        history_figure(model)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_clear_message_without_matplotlib(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MatplotlibMissing, match=r'pip install matplotlib \(or, from a fastbp '
                                                r'checkout, pip install "\.\[plot\]"\)'):
        history_figure(fitted)
