"""Per-epoch progress (``fastbp.progress``): a tqdm bar on terminals, plain lines elsewhere."""
import io
import sys

import pytest

import fastbp
from fastbp.progress import EpochProgress
from fastbp.trainer import EpochResult


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _epochs(n, validation=True):
    return [EpochResult(k, 1.0 / k, 0.5 + k / 100 if validation else None, 1e-3, 0.01, [1.0])
            for k in range(1, n + 1)]


def _line(info):
    return f"epoch {info.epoch}: loss {info.loss:.3f}"


def _run(stream, n=3):
    report = EpochProgress(n, _line, stream=stream)
    for info in _epochs(n):
        assert report(info) is False
    report.close()
    return stream.getvalue()


def test_plain_lines_when_not_a_terminal():
    assert _run(io.StringIO()) == "epoch 1: loss 1.000\nepoch 2: loss 0.500\nepoch 3: loss 0.333\n"


def test_tqdm_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setenv("TERM", "xterm")
    text = _run(Terminal())
    assert "\r" in text and "3/3 [" in text  # one bar redrawn in place, elapsed<remaining
    assert "loss=0.3333, validation=0.5" in text  # (80 columns cut the rest)
    assert "epoch 1: loss" not in text


def test_plain_lines_on_a_terminal_without_tqdm(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm.auto fails
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert _run(Terminal()).startswith("epoch 1: loss 1.000\n")


def test_quiet_prints_nothing(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    report = EpochProgress(3, _line, stream=Terminal(), quiet=True)
    for info in _epochs(3):
        report(info)
    report.close()
    assert report.stream.getvalue() == ""


def test_verbose_fit_lines_and_bar(blobs, capsys, monkeypatch):
    X, y = blobs
    model = fastbp.MLPClassifier((5,), max_iter=3, random_state=0, verbose=True,
                                 n_iter_no_change=10)
    with pytest.warns(Warning):  # not converged after 3 epochs
        model.fit(X, y)
    out = capsys.readouterr().out
    assert out.count("Iteration ") == 3 and "Iteration 3, loss = " in out
    if pytest.importorskip("tqdm"):
        monkeypatch.setenv("TERM", "xterm")
        terminal = Terminal()
        monkeypatch.setattr(sys, "stdout", terminal)
        with pytest.warns(Warning):
            model.fit(X, y)
        text = terminal.getvalue()
        assert "Iteration" not in text and "0/3 [" in text and "3/3 [" in text
        assert "loss=" in text
