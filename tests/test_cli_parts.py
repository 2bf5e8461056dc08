"""Pieces of the command line tested in-process (cheap): the wording of its summaries.

The commands themselves run in subprocesses in test_cli.py.
"""
from fastbp.cli import _stop_summary


def test_stop_summary_never_contradicts_itself():
    """The best epoch may be the last one: scores that rose by less than tol count as
    no improvement (scikit-learn's rule), so "no improvement" alone would contradict
    the best epoch printed below it (issue 15)."""
    scores = [0.5, 0.6] + [0.6 + 1e-6 * k for k in range(1, 12)]  # tiny gains to the end
    text = _stop_summary(scores, len(scores), 200, 10, 1e-4, "R^2", max(scores))
    first, second = text.splitlines()
    assert first == ("stopped after 13 epochs: the validation score did not improve by more "
                     "than tol=0.0001 in 10 consecutive epochs; kept the best epoch's weights")
    assert second == "validation R^2: 0.6000 (best, epoch 13)"
    assert "no validation improvement" not in text


def test_stop_summary_all_epochs_run():
    text = _stop_summary([0.1, 0.3, 0.2], 3, 3, 10, 1e-4, "accuracy", 0.3)
    assert text.splitlines() == [
        "ran all 3 epochs (the validation score may still improve with more --epochs); kept "
        "the best epoch's weights", "validation accuracy: 0.3000 (best, epoch 2)"]
