"""The command line, run as users run it: ``python -m fastbp ...`` in subprocesses.

Success paths (demo, train, predict, info, --help) and error paths (missing file,
missing column, non-numeric feature, bad option, corrupted model): exit status,
outputs, and stderr that is one clean line on errors, with no traceback and no
control character when it is a pipe.  Commands that do not depend on each other
run a few at a time (the cost of a run is mostly interpreter and Numba start-up).
"""
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers import run_python

pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.slow  # every test runs ``python -m fastbp`` in subprocesses

TIMEOUT = 300
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n
Result = collections.namedtuple("Result", "returncode stdout stderr")
SPECIES = {"setosa", "versicolor", "virginica"}


def _env():
    env = dict(os.environ)
    env.pop("FASTBP_DEBUG", None)
    return env


def run(args, cwd):
    """``python -m fastbp *args`` with stdin, stdout and stderr not terminals."""
    proc = run_python(["-m", "fastbp", *args], cwd=cwd, env=_env(), timeout=TIMEOUT)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_all(commands, cwd, workers=3):
    """{name: Result} for {name: args}, a few processes at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(run, args, cwd) for name, args in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_clean(result):
    """No traceback and no control characters in what a pipe or log file receives."""
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text, text
        assert not CONTROL.search(text), repr(text)


def assert_ok(result):
    assert result.returncode == 0, result.stderr
    assert_clean(result)


# -- data -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from sklearn.datasets import load_diabetes, load_iris
    path = tmp_path_factory.mktemp("cli")
    iris = load_iris(as_frame=True)
    frame = iris.data.copy()
    frame["species"] = iris.target_names[iris.target]
    frame.to_csv(path / "iris.csv", index=False)
    # same rows, columns reordered, the target kept: predict must match by name
    frame[["species"] + list(iris.data.columns[::-1])].to_csv(path / "iris_reordered.csv",
                                                              index=False)
    text = iris.data.copy()
    text["petal width (cm)"] = text["petal width (cm)"].astype(str)
    text.loc[3, "petal width (cm)"] = "wide"
    text.to_csv(path / "iris_text_feature.csv", index=False)
    diabetes = load_diabetes(as_frame=True, scaled=True)
    diabetes.frame.to_csv(path / "diabetes.csv", index=False)
    (path / "colors.csv").write_text("a,b,color,y\n1,2,red,x\n3,4,blue,y\n5,6,red,x\n")
    (path / "garbage.fbp").write_bytes(bytes(range(256)) * 4)
    return path


TRAIN_IRIS = ["train", "iris.csv", "--target", "species", "--hidden", "16", "--epochs", "100",
              "--batch-size", "16", "--learning-rate", "0.01", "--patience", "20",
              "--validation-fraction", "0.2", "--out", "iris.fbp"]


@pytest.fixture(scope="module")
def trained(workdir):
    """Two models trained through the CLI: iris (text classes) and diabetes (regression).

    The first run is alone: on a fresh install it compiles the kernels into Numba's
    cache once, so the processes started together afterwards only load them.
    """
    results = {"classify": run(TRAIN_IRIS, workdir)}
    results["regress"] = run(
        ["train", "diabetes.csv", "--target", "target", "--hidden", "16,8", "--epochs", "5",
         "--learning-rate", "0.05", "--out", "diabetes.fbp"], workdir)
    data = (workdir / "iris.fbp").read_bytes()
    (workdir / "truncated.fbp").write_bytes(data[:len(data) // 2])
    return results


# -- train ------------------------------------------------------------------------------------
def test_train_classifier_with_text_target(workdir, trained):
    result = trained["classify"]
    assert_ok(result)
    out = result.stdout
    assert "task: classify (the target is not numeric): 3 classes" in out
    assert "120 for training, 30 held out for validation" in out
    score = float(re.search(r"validation accuracy: ([0-9.]+)", out).group(1))
    assert score >= 0.8  # iris: 3 classes, chance 1/3 (seed 0 gives 0.9)
    assert "saved iris.fbp" in out
    assert (workdir / "iris.fbp").is_file()
    # piped stderr: plain per-epoch lines, no progress bar
    assert re.search(r"^epoch +1/100: loss [0-9.]+, validation [0-9.]+", result.stderr, re.M)
    assert "\r" not in result.stderr and "[#" not in result.stderr


def test_train_regressor_inferred_task(workdir, trained):
    result = trained["regress"]
    assert_ok(result)
    assert "task: regress" in result.stdout
    assert re.search(r"validation R\^2: -?[0-9.]+", result.stdout)
    assert "ran all 5 epochs" in result.stdout
    assert "note: the target is not scaled" in result.stderr
    assert len(re.findall(r"^epoch [1-5]/5: ", result.stderr, re.M)) == 5


def test_train_quiet_and_lbfgs(workdir):
    result = run(["train", "iris.csv", "--target", "species", "--solver", "lbfgs", "--epochs",
                  "30", "--hidden", "8", "--quiet", "--out", "lbfgs.fbp"], workdir)
    assert_ok(result)
    assert re.search(r"^ran \d+ lbfgs iterations \(at most --epochs 30\)$", result.stdout, re.M)
    assert "validation accuracy:" in result.stdout
    assert "epoch" not in result.stderr
    assert (workdir / "lbfgs.fbp").is_file()


def test_train_with_issue_14_flags(workdir):
    """--val-data, --class-weight balanced, --solver rprop, --loss poisson end to end."""
    iris = pd.read_csv(workdir / "iris.csv")
    iris.iloc[::5].to_csv(workdir / "iris_val.csv", index=False)
    iris.drop(index=iris.index[::5]).to_csv(workdir / "iris_train.csv", index=False)
    results = run_all({
        "val": ["train", "iris_train.csv", "--target", "species", "--val-data", "iris_val.csv",
                "--class-weight", "balanced", "--solver", "rprop", "--learning-rate", "0.05",
                "--epochs", "60", "--hidden", "8", "--quiet", "--out", "iris_val.fbp"],
        "poisson": ["train", "diabetes.csv", "--target", "target", "--loss", "poisson",
                    "--solver", "lbfgs", "--epochs", "20", "--hidden", "4", "--quiet",
                    "--out", "poisson.fbp"],
    }, workdir)
    assert_ok(results["val"])
    assert "120 rows, 4 features, all for training; 30 validation rows from iris_val.csv" \
        in results["val"].stdout
    score = float(re.search(r"validation accuracy: ([0-9.]+)", results["val"].stdout).group(1))
    import fastbp
    model = fastbp.load(workdir / "iris_val.fbp")
    assert model.class_weight == "balanced" and model.solver == "rprop"
    assert abs(max(model.validation_scores_) - score) < 1e-4
    assert len(model.validation_loss_curve_) == model.n_iter_
    assert_ok(results["poisson"])
    assert fastbp.load(workdir / "poisson.fbp").out_activation_ == "exp"
# A process in which pandas cannot be imported (as after ``pip install .`` without it).
WITHOUT_PANDAS = """
import sys

class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoPandas())
from fastbp.cli import main
status = main(sys.argv[1:])
assert "pandas" not in sys.modules, "pandas was imported"
sys.exit(status)
"""


def run_without_pandas(args, cwd):
    proc = run_python(["-c", WITHOUT_PANDAS, *args], cwd=cwd, env=_env(), timeout=TIMEOUT)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_train_and_predict_without_pandas(workdir, trained, predicted):
    """pandas is optional: the same CSV gives the same model and the same predictions."""
    args = TRAIN_IRIS[:-1] + ["iris_nopandas.fbp"]
    result = run_without_pandas(args, workdir)
    assert_ok(result)
    assert result.stdout == trained["classify"].stdout.replace("iris.fbp", "iris_nopandas.fbp")
    import fastbp
    ours, theirs = fastbp.load(workdir / "iris_nopandas.fbp"), fastbp.load(workdir / "iris.fbp")
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert list(ours.feature_names_in_) == list(theirs.feature_names_in_)
    result = run_without_pandas(["predict", "iris_nopandas.fbp", "iris_reordered.csv"], workdir)
    assert_ok(result)
    assert result.stdout == predicted.stdout
    result = run_without_pandas(["predict", "iris.fbp", "iris_text_feature.csv"], workdir)
    assert result.returncode == 2
    assert ("feature column 'petal width (cm)' is not numeric (e.g. 'wide' on line 5)"
            in result.stderr)


def test_train_scale_standard_and_predict_warns_on_differently_scaled_features(workdir,
                                                                               trained):
    """--scale standard keeps the scaling in the model file; predict applies it, and
    warns, naming the column, when features arrive far outside the training range."""
    iris = pd.read_csv(workdir / "iris.csv")
    big = iris.copy()
    big["sepal length (cm)"] *= 1000.0  # e.g. millimetres where training had metres
    big.to_csv(workdir / "iris_big.csv", index=False)
    result = run(TRAIN_IRIS[:-1] + ["iris_scaled.fbp", "--scale", "standard"], workdir)
    assert_ok(result)
    results = run_all({"plain": ["predict", "iris_scaled.fbp", "iris.csv"],
                       "far": ["predict", "iris_scaled.fbp", "iris_big.csv"],
                       "info": ["info", "iris_scaled.fbp"]}, workdir)
    import fastbp
    model = fastbp.load(workdir / "iris_scaled.fbp")
    assert model.scale == "standard" and model.scaler_ is not None
    X = iris[list(model.feature_names_in_)]
    assert results["plain"].stdout.splitlines()[1:] == [str(v) for v in model.predict(X)]
    assert results["plain"].stderr == ""
    far = results["far"]
    assert far.returncode == 0
    assert re.match(r"fastbp: warning: input column 'sepal length \(cm\)' has values up to "
                    r"7900, [0-9.e+]+ training standard deviations above", far.stderr)
    assert "scaling:    standard" in results["info"].stdout


# -- predict ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predicted(workdir, trained):
    return run(["predict", "iris.fbp", "iris.csv"], workdir)


def test_predict_to_stdout_matches_the_loaded_model(workdir, predicted):
    import fastbp
    result = predicted
    assert_ok(result)
    assert result.stdout.startswith("prediction\n")
    lines = result.stdout.splitlines()[1:]
    assert len(lines) == 150 and set(lines) <= SPECIES
    frame = pd.read_csv(workdir / "iris.csv")
    model = fastbp.load(workdir / "iris.fbp")
    expected = model.predict(frame[list(model.feature_names_in_)])
    assert lines == [str(label) for label in expected]
    assert np.mean(np.array(lines) == frame["species"].to_numpy()) > 0.9  # seed 0: 0.967


def test_predict_matches_columns_by_name_and_writes_probabilities(workdir, predicted):
    plain = predicted
    result = run(["predict", "iris.fbp", "iris_reordered.csv", "--proba", "--out",
                  "pred.csv"], workdir)
    assert_ok(result)
    assert "wrote 150 predictions to pred.csv" in result.stdout
    pred = pd.read_csv(workdir / "pred.csv")
    assert list(pred.columns) == ["prediction", "proba_setosa", "proba_versicolor",
                                  "proba_virginica"]
    assert list(pred["prediction"]) == plain.stdout.splitlines()[1:]
    np.testing.assert_allclose(pred.iloc[:, 1:].sum(axis=1), 1.0, rtol=1e-12)
    chosen = pred.iloc[:, 1:].to_numpy().argmax(axis=1)
    assert list(pred["prediction"]) == [sorted(SPECIES)[k] for k in chosen]


def test_predict_regressor(workdir, trained):
    result = run(["predict", "diabetes.fbp", "diabetes.csv"], workdir)
    assert_ok(result)
    values = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert list(values.columns) == ["prediction"] and len(values) == 442
    assert np.isfinite(values["prediction"]).all()


# -- info -------------------------------------------------------------------------------------
def test_info(workdir, trained):
    results = run_all({"classifier": ["info", "iris.fbp"],
                       "regressor": ["info", "diabetes.fbp"]}, workdir)
    clf = results["classifier"]
    assert_ok(clf)
    assert "iris.fbp: MLPClassifier" in clf.stdout
    assert "4 inputs -> 16 relu -> 3 softmax" in clf.stdout
    assert "float64" in clf.stdout
    assert "'setosa', 'versicolor', 'virginica' (3)" in clf.stdout
    assert "'sepal length (cm)'" in clf.stdout
    assert re.search(r"history: +\d+ epochs, final loss [0-9.e-]+, best validation score "
                     r"[0-9.]+ \(epoch \d+\)", clf.stdout)
    reg = results["regressor"]
    assert_ok(reg)
    assert "diabetes.fbp: MLPRegressor" in reg.stdout
    assert "10 inputs -> 16 relu -> 8 relu -> 1 identity" in reg.stdout
    assert re.search(r"history: +5 epochs", reg.stdout)


# -- plot -------------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (fastbp[plot])")
def test_plot(workdir, trained):
    results = run_all({"default": ["plot", "iris.fbp"],
                       "named": ["plot", "diabetes.fbp", "curves.svg"]}, workdir)
    for result in results.values():
        assert_ok(result)
    assert results["default"].stdout == "wrote iris.png\n"
    assert (workdir / "iris.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (workdir / "curves.svg").read_bytes()[:500]


def test_train_shortcut_network_then_predict_and_info_in_other_processes(workdir):
    """``--connections shortcut``: the file records the topology; another process
    predicts with it and ``info`` lists the shortcut blocks."""
    import fastbp
    result = run(["train", "iris.csv", "--target", "species", "--hidden", "8,4",
                  "--activation", "tanh", "--connections", "shortcut", "--epochs", "40",
                  "--learning-rate", "0.01", "--quiet", "--out", "short.fbp"], workdir)
    assert_ok(result)
    results = run_all({"info": ["info", "short.fbp"],
                       "predict": ["predict", "short.fbp", "iris.csv"]}, workdir)
    assert_ok(results["info"])
    assert "shortcuts:  0 -> 2, 0 -> 3, 1 -> 3 (0 = the input)" in results["info"].stdout
    assert "4 inputs -> 8 tanh -> 4 tanh -> 3 softmax" in results["info"].stdout
    assert_ok(results["predict"])
    model = fastbp.load(workdir / "short.fbp")
    assert model.connections == "shortcut" and len(model.skip_coefs_) == 3
    frame = pd.read_csv(workdir / "iris.csv")
    expected = model.predict(frame[list(model.feature_names_in_)])
    assert results["predict"].stdout.splitlines()[1:] == [str(label) for label in expected]


# -- demo -------------------------------------------------------------------------------------
def test_demo_without_comparison(workdir):
    result = run(["demo", "--epochs", "2", "--hidden", "16", "--no-compare"], workdir)
    assert_ok(result)
    assert "fastbp demo: scikit-learn's digits (1797 8x8 images" in result.stdout
    assert re.search(r"^test accuracy: 0\.\d{4}$", result.stdout, re.M)
    assert "Timing" not in result.stdout
    assert re.search(r"^epoch 1/2: loss", result.stderr, re.M)


def test_default_command_is_demo_with_timing(workdir):
    result = run(["--epochs", "1", "--hidden", "8", "--batch-size", "64", "--quiet"], workdir)
    assert_ok(result)
    out = result.stdout
    assert "test accuracy:" in out
    assert "Numba JIT warmed up first by a 1-epoch fit" in out
    for name in ("fastbp backend='loops'", "fastbp backend='blas'", "sklearn MLPClassifier"):
        assert re.search(re.escape(name) + r" +[0-9.]+ +[0-9.]+x +0\.\d{4}", out), out
    assert re.search(r"fastbp \(loops\) was .* scikit-learn", out)
    assert result.stderr == ""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_bar_only_on_a_terminal(workdir):
    import pty
    master, slave = pty.openpty()
    env = _env()
    env["TERM"] = "xterm"
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", "demo", "--epochs", "3",
                             "--hidden", "8", "--no-compare"], cwd=workdir, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read().decode()
    proc.wait(timeout=TIMEOUT)
    os.close(master)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0, terminal
    if importlib.util.find_spec("tqdm") is not None:  # tqdm's bar, redrawn in place
        assert "\r" in terminal and "3/3 [" in terminal and "loss=" in terminal
    else:  # no tqdm: plain lines even on a terminal
        assert re.search(r"^epoch 3/3: loss", terminal, re.M)
    assert "test accuracy:" in stdout and not CONTROL.search(stdout)


# -- help, version, console script ------------------------------------------------------------
def test_help_on_every_command(workdir):
    commands = {"top": ["--help"]}
    commands.update({name: [name, "--help"]
                     for name in ("demo", "train", "predict", "info", "plot")})
    results = run_all(commands, workdir)
    for name, result in results.items():
        assert_ok(result)
    assert "usage: fastbp" in results["top"].stdout
    for name in ("demo", "train", "predict", "info", "plot"):
        assert name in results["top"].stdout
        assert f"usage: fastbp {name}" in results[name].stdout
    assert "--target COLUMN" in results["train"].stdout
    assert "--no-compare" in results["demo"].stdout


@pytest.mark.skipif(shutil.which("fastbp") is None, reason="console script not installed")
def test_console_script(workdir):
    proc = subprocess.run([shutil.which("fastbp"), "--version"], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and proc.stdout.startswith("fastbp 0.")


# -- errors -----------------------------------------------------------------------------------
ERRORS = {
    "missing data file": (["train", "nope.csv", "--target", "species"],
                          "nope.csv: no such file"),
    "missing target column": (["train", "iris.csv", "--target", "colour"],
                              "iris.csv: no column 'colour' (columns: 'sepal length (cm)'"),
    "non-numeric feature": (["train", "colors.csv", "--target", "y"],
                            "colors.csv: feature column 'color' is not numeric (e.g. 'red' "
                            "on line 2)"),
    "non-numeric regression target": (["train", "iris.csv", "--target", "species", "--task",
                                       "regress"], "target column 'species' is not numeric"),
    "missing --target": (["train", "iris.csv"], "the following arguments are required: "
                                                "--target"),
    "bad option value": (["train", "iris.csv", "--target", "species", "--epochs", "ten"],
                         "argument --epochs: expected a positive integer, got 'ten'"),
    "unknown option": (["info", "iris.fbp", "--verbose"], "unrecognized arguments: --verbose"),
    "bad --connections": (["train", "iris.csv", "--target", "species", "--connections",
                           "dense"], "argument --connections: expected 'chain', 'shortcut' "
                                     "or a JSON mapping"),
    "--connections naming no layer": (["train", "iris.csv", "--target", "species",
                                       "--connections", '{"3": [0]}'],
                                      "--connections: connections: layer 3 does not exist"),
    "unknown command": (["fit", "iris.csv"], "invalid choice: 'fit'"),
    "class weight on a regression": (["train", "diabetes.csv", "--target", "target",
                                      "--class-weight", "balanced"],
                                     "--class-weight applies to classification only"),
    "loss on a classification": (["train", "iris.csv", "--target", "species", "--loss",
                                  "poisson"], "--loss applies to regression only"),
    "val-data without the features": (["train", "iris.csv", "--target", "species",
                                       "--val-data", "colors.csv"],
                                      "colors.csv: missing feature column(s) 'sepal length"),
    "missing model file": (["info", "nope.fbp"], "nope.fbp: no such file"),
    "corrupted model (info)": (["info", "truncated.fbp"], "truncated.fbp: unreadable, "
                                                          "truncated or corrupted model file"),
    "corrupted model (predict)": (["predict", "garbage.fbp", "iris.csv"], "garbage.fbp: "),
    "predict: missing feature column": (["predict", "iris.fbp", "colors.csv"],
                                        "colors.csv: missing feature column(s) 'sepal length "
                                        "(cm)'"),
    "predict: non-numeric feature": (["predict", "iris.fbp", "iris_text_feature.csv"],
                                     "feature column 'petal width (cm)' is not numeric (e.g. "
                                     "'wide' on line 5)"),
    "predict: --proba on a regressor": (["predict", "diabetes.fbp", "diabetes.csv", "--proba"],
                                        "is a regressor"),
}


@pytest.fixture(scope="module")
def error_results(workdir, trained):
    return run_all({name: args for name, (args, _) in ERRORS.items()}, workdir)


@pytest.mark.parametrize("case", list(ERRORS))
def test_error_is_one_clean_line_with_status_2(case, error_results):
    result = error_results[case]
    message = ERRORS[case][1]
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert_clean(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastbp: error: "), lines[0]
    assert message in lines[0], lines[0]
