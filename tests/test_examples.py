"""Every script in examples/ runs to the end in a subprocess and prints what it promises."""
import importlib.util
import os
import re
from pathlib import Path

import pytest

from helpers import run_python

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 300
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_example(args, cwd):
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    proc = run_python(args, cwd=cwd, env=env, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_quickstart(tmp_path):
    path = tmp_path / "digits.fbp"
    out = run_example([str(EXAMPLES / "quickstart.py"), str(path)], tmp_path)
    accuracy = float(re.search(r"^test accuracy: ([0-9.]+)$", out, re.M).group(1))
    assert accuracy > 0.9
    assert "first 10 predictions:" in out
    assert f"saved to {path} and loaded back: identical predictions" in out
    assert path.is_file()


@pytest.mark.slow
def test_replace_python_loop(tmp_path):
    out = run_example([str(EXAMPLES / "replace_python_loop.py")], tmp_path)
    diff = float(re.search(r"same weights: largest difference (\S+)", out).group(1))
    assert diff < 1e-9  # the example asserts it too
    accuracies = re.findall(r"training accuracy ([0-9.]+)", out)
    assert len(accuracies) == 2 and accuracies[0] == accuracies[1]
    speedup = float(re.search(r"^speed-up: ([0-9.]+)x$", out, re.M).group(1))
    assert speedup > 1


@pytest.mark.slow
def test_pipeline_gridsearch(tmp_path):
    out = run_example([str(EXAMPLES / "pipeline_gridsearch.py")], tmp_path)
    assert len(re.findall(r"cv accuracy [0-9.]+ \+/- [0-9.]+", out)) == 4
    assert "best parameters: {'mlp__alpha'" in out
    assert float(re.search(r"^test accuracy: ([0-9.]+)$", out, re.M).group(1)) > 0.9
    assert "classes: ['benign', 'malignant']" in out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed (fastbp[plot])")
def test_training_curves(tmp_path):
    png = tmp_path / "curves.png"
    out = run_example([str(EXAMPLES / "training_curves.py"), str(png)], tmp_path)
    assert re.search(r"^\d+ epochs, best validation accuracy 0\.\d+ at epoch \d+$", out, re.M)
    assert f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_training_curves_without_matplotlib(tmp_path):
    """The example explains itself and exits 0 when matplotlib cannot be imported."""
    script = ("import runpy, sys; sys.modules['matplotlib'] = None; "
              f"runpy.run_path({str(EXAMPLES / 'training_curves.py')!r}, run_name='__main__')")
    out = run_example(["-c", script, str(tmp_path / "curves.png")], tmp_path)
    assert "matplotlib is not installed: skipping the plot" in out
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.slow
def test_onnx_export(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    out = run_example([str(EXAMPLES / "onnx_export.py"), str(path)], tmp_path)
    assert float(re.search(r"^test accuracy: ([0-9.]+)$", out, re.M).group(1)) > 0.8
    assert f"wrote {path}" in out and path.is_file()
    diff = float(re.search(r"same labels: True; largest probability difference (\S+)$", out,
                           re.M).group(1))
    assert diff < 1e-12


def test_benchmarks_dashboard_gives_the_commands():
    text = (EXAMPLES / "benchmarks_dashboard.md").read_text()
    for command in ("asv machine --yes", "asv run --python=same --quick",
                    "asv continuous -f 1.1 --bench", "asv publish", "asv preview",
                    "python benchmarks/compare.py"):
        assert command in text
    # machine first: the commands after it need it
    assert text.index("asv machine --yes") < text.index("asv run --python=same --quick")
    assert "track_test_score" not in text and "one graph per benchmark and parameter" not in text
    # every file the guide names is in this repository (it once cited a file outside it)
    root = EXAMPLES.parent
    for name in re.findall(r"`([\w./-]+\.(?:md|py|json|toml))`", text):
        here = (root / name).exists() or any(
            (root / folder / name).exists() for folder in ("benchmarks", "examples", "tests",
                                                           "fastbp"))
        assert here, f"benchmarks_dashboard.md names {name}, which is not in the repository"


@pytest.mark.slow
def test_shortcut_networks(tmp_path):
    out = run_example([str(EXAMPLES / "shortcut_networks.py")], tmp_path)
    rows = dict(re.findall(r"^ *(\S+|dict \{.*\}): .*test accuracy ([0-9.]+)$", out, re.M))
    assert float(rows["chain"]) < 0.2 and float(rows["shortcut"]) > 0.9
    chain_g, short_g = (float(g) for g in re.findall(r"gradient norm \(epoch 1\) (\S+),", out)[:2])
    assert chain_g < 1e-3 * short_g
    assert "21 shortcut blocks" in out
    assert "blocks zeroed == chain with the same coefs_: True" in out
