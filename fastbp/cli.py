"""The ``fastbp`` command line (also ``python -m fastbp``).

    fastbp demo                                  train on scikit-learn's bundled digits, time it
    fastbp train DATA.csv --target COLUMN        fit an MLP on a CSV file, save model.fbp
    fastbp predict model.fbp DATA.csv            predictions as CSV (stdout or --out)
    fastbp info model.fbp                        architecture, classes, training history
    fastbp plot model.fbp [OUT.png]              draw the training history

Results go to stdout; per-epoch progress, notes and warnings go to stderr.  The
progress bar (tqdm, when installed) is drawn only when stderr is a terminal: in logs
and pipes each epoch is one plain line (``--quiet``: none), so no control character
ever reaches a file.
Every error is one line ``fastbp: error: ...`` on stderr with exit status 2, never a
traceback (set ``FASTBP_DEBUG=1`` to see one for unexpected errors, which exit 1).
"""
import argparse
import os
import sys
import time
import warnings

__all__ = ["main"]

PROG = "fastbp"
EXIT_ERROR = 2      # bad usage, bad data, unreadable files: what the user can fix
EXIT_INTERNAL = 1   # an unexpected exception (a bug)
MAX_CLASSIFY_UNIQUE = 20  # an integer target with at most this many values is a class label


class CLIError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


# -- output helpers ---------------------------------------------------------------------------
def _one_line(text):
    """``text`` on one printable line: newlines joined, other control characters dropped."""
    text = " ".join(str(text).split("\n"))
    return "".join(c if c.isprintable() else "?" for c in text).strip()


def _note(message):
    print(f"{PROG}: {_one_line(message)}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr (no source path, no code excerpt)."""
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr, flush=True)


def Progress(total, label="", quiet=False, stream=None):
    """The epoch callback reporting progress on stderr (``fastbp.progress.EpochProgress``).

    On a terminal, with tqdm installed: a tqdm bar with elapsed time and ETA.  Otherwise
    (a log, a pipe, no tqdm): one plain line per epoch.  ``quiet``: nothing.  Never stops
    training; call ``close()`` when the fit ends.
    """
    from .progress import EpochProgress
    width = len(str(max(int(total), 1)))
    prefix = f"{label} " if label else ""

    def line(info):
        figures = f"loss {info.loss:.4f}"
        if info.validation_score is not None:
            figures += f", validation {info.validation_score:.4f}"
        return (f"{prefix}epoch {info.epoch:>{width}}/{max(int(total), 1)}: {figures}, "
                f"{info.seconds * 1000:.0f} ms")

    return EpochProgress(total, line, stream=stream if stream is not None else sys.stderr,
                         desc=label or "training", quiet=quiet)


# -- argument parsing -------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``fastbp: error: ...``) and exit status 2."""

    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _layer_sizes(text):
    parts = [p.strip() for p in text.split(",")]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected hidden layer widths as positive integers separated by commas "
            f"(e.g. 64,32), got {text!r}")
    return sizes


def _dropout_rates(text):
    """One dropout rate, or one per hidden layer separated by commas; each in [0, 1)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        rates = [float(p) for p in parts]
    except ValueError:
        rates = []
    if not rates or not all(0 <= r < 1 for r in rates):
        raise argparse.ArgumentTypeError(
            f"expected a rate in [0, 1), or one per hidden layer separated by commas "
            f"(e.g. 0.2 or 0.1,0.3), got {text!r}")
    return rates[0] if len(rates) == 1 else rates


def _connections(text):
    """'chain', 'shortcut' or a JSON mapping {layer: [sources]} (checked against the
    hidden layers in ``cmd_train``)."""
    text = text.strip()
    if text in ("chain", "shortcut"):
        return text
    import json
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected 'chain', 'shortcut' or a JSON mapping of layers to their source "
            f"layers such as '{{\"3\": [0, 2]}}', got {text!r}")
    return {int(k) if str(k).strip().isdigit() else k: v for k, v in value.items()}


def _build_parser():
    from .codes import HIDDEN_ACTIVATIONS
    from .estimators import SOLVERS

    parser = _Parser(
        prog=PROG,
        description="Train multilayer perceptrons with fastbp's compiled backpropagation. "
                    "Without a command, runs 'demo'.",
        epilog="Run 'fastbp COMMAND --help' for a command's options.")
    from ._version import __version__
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo", help="train on scikit-learn's bundled digits and compare speed (default)",
        description="Train an MLPClassifier on scikit-learn's bundled 8x8 digits (no download), "
                    "print the test accuracy, then time the same training with fastbp's "
                    "'loops' and 'blas' backends and scikit-learn's MLPClassifier.")
    demo.add_argument("--epochs", type=_positive_int, default=30,
                      help="training epochs, all run (default: 30)")
    demo.add_argument("--hidden", type=_layer_sizes, default=(64,), metavar="SIZES",
                      help="hidden layer widths, comma-separated (default: 64)")
    demo.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                      help="mini-batch size (default: 32)")
    demo.add_argument("--seed", type=_non_negative_int, default=0,
                      help="random_state for the split, initialisation and shuffling")
    demo.add_argument("--n-jobs", type=_positive_int, default=None, metavar="N",
                      help="threads for fastbp's kernels (default: all)")
    demo.add_argument("--no-compare", action="store_true",
                      help="skip the timing comparison")
    demo.add_argument("-q", "--quiet", action="store_true", help="no per-epoch progress")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser(
        "train", help="fit a model on a CSV file and save it",
        description="Fit an MLP on a CSV file (header row; numeric feature columns; the target "
                    "may be text for classification), holding out a validation split that "
                    "early stopping watches (the best epoch's weights are kept), and save the "
                    "model file. Features are used as they are unless --scale standard: "
                    "values of order 1 train best.")
    train.add_argument("data", metavar="DATA.csv", help="training data with a header row")
    train.add_argument("--target", required=True, metavar="COLUMN",
                       help="the column to predict; every other column is a feature")
    train.add_argument("--task", choices=("classify", "regress"),
                       help="default: classify if the target is non-numeric or has few "
                            f"(<= {MAX_CLASSIFY_UNIQUE}) integer values, else regress")
    train.add_argument("--hidden", type=_layer_sizes, default=(64,), metavar="SIZES",
                       help="hidden layer widths, comma-separated (default: 64)")
    train.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu",
                       help="hidden activation (default: relu)")
    train.add_argument("--connections", type=_connections, default="chain", metavar="KIND",
                       help="which layers feed which: 'chain' (each layer the next), "
                            "'shortcut' (every layer fed by all earlier layers and the "
                            "input) or JSON {layer: [sources]} with 0 = the input, "
                            "1..H the hidden layers, H+1 the output (default: chain)")
    train.add_argument("--epochs", type=_positive_int, default=200,
                       help="maximum epochs (default: 200)")
    train.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                       help="mini-batch size (default: min(200, rows))")
    train.add_argument("--solver", choices=SOLVERS, default="adam", help="(default: adam)")
    train.add_argument("--learning-rate", type=_positive_float, default=0.001, metavar="F",
                       help="learning_rate_init (default: 0.001)")
    train.add_argument("--alpha", type=_non_negative_float, default=1e-4, metavar="F",
                       help="L2 penalty (default: 0.0001)")
    train.add_argument("--validation-fraction", type=_fraction, default=0.1, metavar="F",
                       help="share of rows held out for validation (default: 0.1)")
    train.add_argument("--patience", type=_positive_int, default=10, metavar="N",
                       help="stop after N epochs without validation improvement (default: 10)")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="random_state for the split, initialisation and shuffling")
    train.add_argument("--class-weight", choices=("balanced",), default=None,
                       help="classification: weigh classes inversely to their frequency "
                            "(scikit-learn's class_weight='balanced')")
    train.add_argument("--loss", choices=("squared_error", "huber", "poisson"), default=None,
                       help="regression loss (default: squared_error); poisson: counts or "
                            "rates >= 0, exp output")
    train.add_argument("--dropout", type=_dropout_rates, default=0.0, metavar="RATES",
                       help="inverted dropout of the hidden units while training: a rate "
                            "in [0, 1), or one per hidden layer (e.g. 0.1,0.3); stochastic "
                            "solvers only (default: 0, off)")
    train.add_argument("--val-data", default=None, metavar="FILE.csv",
                       help="validation rows (same columns) for early stopping and the "
                            "validation score, instead of holding out --validation-fraction")
    train.add_argument("--scale", choices=("none", "standard"), default="none",
                       help="'standard': standardize each feature with the training data's "
                            "mean and standard deviation, stored in the model file and "
                            "applied by 'fastbp predict' (default: none)")
    train.add_argument("--out", default="model.fbp", metavar="PATH",
                       help="model file to write (default: model.fbp)")
    train.add_argument("-q", "--quiet", action="store_true", help="no per-epoch progress")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser(
        "predict", help="predict with a saved model",
        description="Predict every row of a CSV file with a saved model. Feature columns are "
                    "matched by the names saved in the model; other columns (such as the "
                    "target) are ignored. Output: CSV with a 'prediction' column.")
    predict.add_argument("model", metavar="MODEL.fbp")
    predict.add_argument("data", metavar="DATA.csv")
    predict.add_argument("--out", metavar="PATH", help="write the CSV here (default: stdout)")
    predict.add_argument("--proba", action="store_true",
                         help="classifiers: add one probability column per class")
    predict.set_defaults(func=cmd_predict)

    info = sub.add_parser(
        "info", help="describe a saved model",
        description="Print a saved model's estimator, architecture, classes and training "
                    "history summary.")
    info.add_argument("model", metavar="MODEL.fbp")
    info.set_defaults(func=cmd_info)

    plot = sub.add_parser(
        "plot", help="draw a saved model's training history to a PNG",
        description="Draw a saved model's training history (training loss, validation "
                    "score, gradient norm of each layer per epoch) into an image file. "
                    "Needs matplotlib.")
    plot.add_argument("model", metavar="MODEL.fbp")
    plot.add_argument("out", metavar="OUT.png", nargs="?",
                      help="image to write; .png, .svg, .pdf... (default: MODEL.png)")
    plot.set_defaults(func=cmd_plot)

    cache = sub.add_parser(
        "cache", help="show or clear fastbp's cache of compiled kernels",
        description="fastbp compiles its kernels once per machine and keeps them in Numba's "
                    "on-disk cache. 'info' prints where and how much; 'clear' deletes them "
                    "(the next fit or predict compiles again, about a minute per dtype).")
    cache.add_argument("action", choices=("info", "clear"))
    cache.set_defaults(func=cmd_cache)
    return parser


# -- data helpers -----------------------------------------------------------------------------
def _read_csv(path):
    """The :class:`fastbp.csvtable.Table` of ``path`` (pandas not required)."""
    from .csvtable import CSVError, read
    try:
        table = read(path)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a folder, not a CSV file") from None
    except PermissionError:
        raise CLIError(f"{path}: permission denied") from None
    except CSVError as exc:
        raise CLIError(str(exc)) from None
    if table.n_rows == 0:
        raise CLIError(f"{path}: no data rows")
    return table


def _names(columns, limit=8):
    columns = [str(c) for c in columns]
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


def _numeric_features(table, names, path):
    """Columns ``names`` of ``table`` as a float64 array (n_rows, len(names)), or a CLIError
    naming the offending column."""
    import numpy as np
    X = np.empty((table.n_rows, len(names)))
    for j, name in enumerate(names):
        col = table.as_float(name)
        if col is None:
            bad = table.first_non_number(name)
            example = f" (e.g. {bad[0]!r} on line {bad[1]})" if bad else ""
            raise CLIError(f"{path}: feature column {str(name)!r} is not numeric{example}; "
                           "encode it as numbers or drop it")
        missing = np.flatnonzero(~np.isfinite(col))
        if missing.size:
            raise CLIError(f"{path}: feature column {str(name)!r} has {missing.size} missing or "
                           f"non-finite value(s) (first on line {table.lines[missing[0]]}); "
                           "fill or drop them")
        X[:, j] = col
    return X


def _infer_task(table, name):
    """('classify' | 'regress', reason) for target column ``name``."""
    import numpy as np
    if table.kinds[name] != "number":
        return "classify", "the target is not numeric"
    values = table.values[name]
    values = values[~np.isnan(values)]
    n_unique = len(np.unique(values))
    if np.all(values == np.round(values)) and n_unique <= MAX_CLASSIFY_UNIQUE \
            and n_unique <= max(2, len(values) // 2):
        return "classify", f"the target has {n_unique} integer values"
    return "regress", "the target is numeric with many values"


def _target(table, task, path, name):
    import numpy as np
    missing = np.flatnonzero(table.missing(name))
    if missing.size:
        raise CLIError(f"{path}: target column {name!r} has {missing.size} missing value(s) "
                       f"(first on line {table.lines[missing[0]]}); drop those rows")
    kind, values = table.kinds[name], table.values[name]
    if task == "regress":
        if kind != "number":
            raise CLIError(f"{path}: target column {name!r} is not numeric; use --task classify "
                           "or a numeric target")
        if not np.isfinite(values).all():
            raise CLIError(f"{path}: target column {name!r} has non-finite values")
        return values
    if kind != "number":
        return np.asarray([str(v) for v in values], dtype=str)
    if np.all(values == np.round(values)) and np.abs(values).max() < 2.0 ** 53:
        values = values.astype(np.int64)
    return values


def _load_model(path):
    from .estimators import load
    from .io import ModelFileError
    try:
        return load(path)
    except ModelFileError as exc:
        raise CLIError(str(exc)) from None


# -- commands ---------------------------------------------------------------------------------
def cmd_demo(args):
    import numba
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    from .estimators import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel intensities 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=args.seed)
    # n_iter_no_change = epochs: every epoch runs, so each trainer does the same work.
    settings = dict(hidden_layer_sizes=args.hidden, max_iter=args.epochs,
                    batch_size=args.batch_size, solver="adam", shuffle=True,
                    random_state=args.seed, n_iter_no_change=args.epochs)
    ours = dict(n_jobs=args.n_jobs)
    hidden = ",".join(str(h) for h in args.hidden)
    print(f"fastbp demo: scikit-learn's digits ({X.shape[0]} 8x8 images, 10 classes), "
          f"{X_train.shape[0]} for training, {X_test.shape[0]} for testing")
    print(f"MLPClassifier: hidden {hidden}, relu, adam, batch {args.batch_size}, "
          f"{args.epochs} epochs, random_state {args.seed}", flush=True)
    progress = Progress(args.epochs, quiet=args.quiet)
    model = MLPClassifier(**settings, **ours, callbacks=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            model.fit(X_train, y_train)
        finally:
            progress.close()
    print(f"test accuracy: {model.score(X_test, y_test):.4f}", flush=True)
    if args.no_compare:
        return 0

    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
    trainers = [("fastbp backend='loops'", lambda: MLPClassifier(**settings, **ours)),
                ("fastbp backend='blas'",
                 lambda: MLPClassifier(**settings, **ours, backend="blas")),
                ("sklearn MLPClassifier", lambda: SklearnMLPClassifier(**settings))]
    threads = numba.get_num_threads() if args.n_jobs is None else \
        min(args.n_jobs, numba.config.NUMBA_NUM_THREADS)
    print()
    print(f"Timing the same training ({args.epochs} epochs, hidden {hidden}, batch "
          f"{args.batch_size}, adam, shuffled, random_state {args.seed}; "
          f"{threads} Numba threads):")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        for _, make in trainers[:2]:  # compile (or load from Numba's cache) before timing
            make().set_params(max_iter=1).fit(X_train, y_train)
        print(f"Numba JIT warmed up first by a 1-epoch fit per fastbp backend "
              f"({time.perf_counter() - t0:.2f} s, not counted).", flush=True)
        rows = []
        for name, make in trainers:
            model = make()
            t0 = time.perf_counter()
            model.fit(X_train, y_train)
            seconds = time.perf_counter() - t0
            rows.append((name, seconds, model.score(X_test, y_test)))
    base = rows[0][1]
    print(f"  {'trainer':<24}{'seconds':>9}{'time/loops':>14}{'test accuracy':>15}")
    for name, seconds, acc in rows:
        print(f"  {name:<24}{seconds:>9.3f}{seconds / base:>13.1f}x{acc:>15.4f}")
    print("fastbp (loops) was " + _ratio_words(rows[2][1], base) + " scikit-learn and " +
          _ratio_words(rows[1][1], base) + " its BLAS backend on this run (one run each; "
          "ratios vary with machine load, sizes and threads).")
    return 0


def _ratio_words(other, ours):
    """'3.2x faster than' / '1.5x slower than' / 'as fast as'."""
    if ours <= 0 or other <= 0:
        return "as fast as"
    ratio = other / ours
    if ratio >= 1.05:
        return f"{ratio:.1f}x faster than"
    if ratio <= 1 / 1.05:
        return f"{1 / ratio:.1f}x slower than"
    return "about as fast as"


def cmd_train(args):
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning

    from .estimators import MLPClassifier, MLPRegressor

    from .params import normalize_connections

    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise CLIError(f"{args.out}: cannot write the model file (no folder {folder!r})")
    try:
        normalize_connections(args.connections, len(args.hidden))
    except ValueError as exc:
        raise CLIError(f"--connections: {exc}") from None
    if isinstance(args.dropout, list) and len(args.dropout) != len(args.hidden):
        raise CLIError(f"--dropout: {len(args.dropout)} rates for {len(args.hidden)} hidden "
                       f"layers (--hidden {','.join(map(str, args.hidden))}); give one rate "
                       "or one per hidden layer")
    if np.any(np.asarray(args.dropout) > 0) and args.solver in ("lbfgs", "rprop"):
        raise CLIError(f"--dropout needs a stochastic solver (adam, sgd, rmsprop, adagrad), "
                       f"not --solver {args.solver}")
    table = _read_csv(args.data)
    if args.target not in table.columns:
        raise CLIError(f"{args.data}: no column {args.target!r} (columns: "
                       f"{_names(table.columns)})")
    names = [c for c in table.columns if c != args.target]
    if not names:
        raise CLIError(f"{args.data}: no feature columns besides the target {args.target!r}")
    X = _numeric_features(table, names, args.data)
    if args.task:
        task, reason = args.task, "given by --task"
    else:
        task, reason = _infer_task(table, args.target)
    y = _target(table, task, args.data, args.target)
    if args.class_weight and task != "classify":
        raise CLIError("--class-weight applies to classification only")
    if args.loss and task != "regress":
        raise CLIError("--loss applies to regression only (classification uses log-loss)")
    if args.loss == "poisson" and (y < 0).any():
        raise CLIError(f"{args.data}: --loss poisson needs a target >= 0; column "
                       f"{args.target!r} has negative values (first on line "
                       f"{int(np.flatnonzero(y < 0)[0]) + 2})")
    val = None
    if args.val_data:
        val = _validation_rows(args.val_data, names, args.target, task)
    if task == "classify":
        classes = np.unique(y)
        if len(classes) < 2:
            raise CLIError(f"{args.data}: target column {args.target!r} has only one value; "
                           "nothing to classify")
        print(f"task: classify ({reason}): {len(classes)} classes "
              f"{_names(classes, limit=6)}")
    else:
        print(f"task: regress ({reason})")
    if val is not None:
        print(f"data: {len(y)} rows, {X.shape[1]} features, all for training; "
              f"{len(val[1])} validation rows from {args.val_data}", flush=True)
    else:
        n_val = int(np.ceil(args.validation_fraction * len(y)))
        print(f"data: {len(y)} rows, {X.shape[1]} features; {len(y) - n_val} for training, "
              f"{n_val} held out for validation", flush=True)
    largest = float(np.abs(X).max())
    if largest > 100 and args.scale == "none":
        _note(f"note: features are not scaled (largest |value| {largest:.3g}); MLPs train best "
              "on values of order 1: consider --scale standard")
    if task == "regress" and float(np.abs(y).max()) > 100:
        _note(f"note: the target is not scaled (largest |value| {float(np.abs(y).max()):.3g}); "
              "training may need more --epochs or a larger --learning-rate")
    cls = MLPClassifier if task == "classify" else MLPRegressor
    progress = Progress(args.epochs, quiet=args.quiet)
    model = cls(hidden_layer_sizes=args.hidden, activation=args.activation, solver=args.solver,
                alpha=args.alpha, batch_size=args.batch_size or "auto",
                learning_rate_init=args.learning_rate, max_iter=args.epochs,
                early_stopping=True, validation_fraction=args.validation_fraction,
                n_iter_no_change=args.patience, random_state=args.seed, callbacks=progress,
                scale=None if args.scale == "none" else args.scale,
                connections=args.connections, dropout=args.dropout)
    if args.class_weight:
        model.set_params(class_weight=args.class_weight)
    if args.loss:
        model.set_params(loss=args.loss)
    metric = "accuracy" if task == "classify" else "R^2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported below in plain words
        try:
            if args.solver == "lbfgs" and val is not None:
                model.set_params(early_stopping=False)
                model.fit(X, y, X_val=val[0], y_val=val[1])
                score = model.score(*val)
            elif args.solver == "lbfgs":  # no early stopping: hold out the split here
                score = _fit_lbfgs(model, X, y, task, args)
            elif val is not None:
                model.fit(X, y, X_val=val[0], y_val=val[1])
                score = model.best_validation_score_
            else:
                model.fit(X, y)
                score = model.best_validation_score_
        finally:
            progress.close()
    if args.solver == "lbfgs":
        print(f"ran {model.n_iter_} lbfgs iterations (at most --epochs {args.epochs})")
        print(f"validation {metric}: {score:.4f}")
    else:
        print(_stop_summary(model.validation_scores_ or [], model.n_iter_, args.epochs,
                            args.patience, model.tol, metric, score))
    model.callbacks = None
    model.feature_names_in_ = np.asarray(names, dtype=object)  # X was a plain array
    try:
        model.save(args.out)
    except OSError as exc:
        raise CLIError(f"{args.out}: cannot write the model file ({exc.strerror or exc})") \
            from None
    print(f"saved {args.out}")
    return 0


def _validation_rows(path, names, target, task):
    """(X_val, y_val) of ``--val-data``: the training feature columns, by name."""
    table = _read_csv(path)
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise CLIError(f"{path}: missing feature column(s) {_names(missing)}")
    if target not in table.columns:
        raise CLIError(f"{path}: no target column {target!r}")
    return _numeric_features(table, names, path), _target(table, task, path, target)


def _stop_summary(scores, n_iter, max_epochs, patience, tol, metric, score):
    """Why training stopped and the kept (best) epoch's validation score, in two lines.

    Early stopping counts an epoch as "no improvement" when its score beats the best
    by less than ``tol`` (scikit-learn's rule), while the kept weights are those of
    the best score: the best epoch can be the last one, so the lines say both.
    """
    import numpy as np
    best_epoch = int(np.nanargmax(scores)) + 1 if len(scores) else n_iter
    if n_iter >= max_epochs:
        first = (f"ran all {max_epochs} epochs (the validation score may still improve "
                 "with more --epochs); kept the best epoch's weights")
    else:
        first = (f"stopped after {n_iter} epochs: the validation score did not improve by "
                 f"more than tol={tol:g} in {patience} consecutive epochs; kept the best "
                 "epoch's weights")
    return f"{first}\nvalidation {metric}: {score:.4f} (best, epoch {best_epoch})"


def _fit_lbfgs(model, X, y, task, args):
    """lbfgs has no early stopping: fit on a seeded split, return the validation score."""
    from sklearn.model_selection import train_test_split
    stratify = y if task == "classify" else None
    try:
        X_tr, X_val, y_tr, y_val = train_test_split(
            X, y, test_size=args.validation_fraction, random_state=args.seed, stratify=stratify)
    except ValueError:  # a class too rare to stratify
        X_tr, X_val, y_tr, y_val = train_test_split(
            X, y, test_size=args.validation_fraction, random_state=args.seed)
    model.set_params(early_stopping=False)
    model.fit(X_tr, y_tr)
    return model.score(X_val, y_val)


def cmd_predict(args):
    import numpy as np

    model = _load_model(args.model)
    table = _read_csv(args.data)
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        names = [str(n) for n in names]
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise CLIError(f"{args.data}: missing feature column(s) {_names(missing)} that "
                           f"{args.model} was trained on")
    else:
        if len(table.columns) != model.n_features_in_:
            raise CLIError(f"{args.model} has no saved feature names and expects "
                           f"{model.n_features_in_} feature columns; {args.data} has "
                           f"{len(table.columns)}")
        names = table.columns
    X = _numeric_features(table, names, args.data)
    with warnings.catch_warnings():
        # the columns were matched by name above; X is a plain array in the model's order
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        pred = model.predict(X)
        proba = None
        if args.proba:
            if not hasattr(model, "predict_proba"):
                raise CLIError(f"--proba: {args.model} is a regressor; it has no probabilities")
            proba = model.predict_proba(X)
    if np.ndim(pred) == 1:
        header, columns = ["prediction"], [pred]
    else:
        labels = getattr(model, "classes_", range(pred.shape[1]))
        header = [f"prediction_{label}" for label in labels]
        columns = [pred[:, k] for k in range(pred.shape[1])]
    if proba is not None:
        header += [f"proba_{label}" for label in model.classes_]
        columns += [proba[:, k] for k in range(proba.shape[1])]
    if args.out:
        try:
            with open(args.out, "w", newline="", encoding="utf-8") as fh:
                _write_csv(fh, header, columns)
        except OSError as exc:
            raise CLIError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
        print(f"wrote {len(pred)} predictions to {args.out}")
    else:
        _write_csv(sys.stdout, header, columns)
    return 0


def _write_csv(stream, header, columns):
    from .csvtable import write
    write(stream, header, columns)


def cmd_info(args):
    import numpy as np

    model = _load_model(args.model)
    sizes = [model.n_features_in_] + [c.shape[1] for c in model.coefs_]
    acts = list(model._hidden_acts_) + [model.out_activation_]
    skips = getattr(model, "skip_coefs_", None) or {}
    n_params = sum(c.size + b.size for c, b in zip(model.coefs_, model.intercepts_)) + \
        sum(c.size for c in skips.values())
    layers = " -> ".join([f"{sizes[0]} inputs"] +
                         [f"{s} {a}" for s, a in zip(sizes[1:], acts)])
    params = model.get_params()
    print(f"{args.model}: {type(model).__name__}")
    print(f"  layers:     {layers}")
    if skips:
        gaps = [f"{l} -> {l + 1}" for l, c in enumerate(model.coefs_) if c.shape[0] == 0]
        print(f"  shortcuts:  {', '.join(f'{s} -> {t}' for s, t in sorted(skips))} "
              "(0 = the input)" + (f"; no chain block {', '.join(gaps)}" if gaps else ""))
    print(f"  dtype:      {model.coefs_[0].dtype} ({n_params} parameters)")
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        print(f"  features:   {_names(names)}")
    else:
        print(f"  features:   {model.n_features_in_} (no names saved)")
    if hasattr(model, "classes_"):
        print(f"  classes:    {_names(model.classes_, limit=12)} ({len(model.classes_)})")
    else:
        print(f"  outputs:    {model.n_outputs_} ({params.get('loss', 'squared_error')})")
    if getattr(model, "scaler_", None) is not None:
        print("  scaling:    standard (training mean and standard deviation, applied by "
              "predict)")
    print(f"  training:   solver {params['solver']}, learning_rate_init "
          f"{params['learning_rate_init']}, alpha {params['alpha']}, batch_size "
          f"{params['batch_size']}, random_state {params['random_state']}")
    rates = params.get("dropout") or 0.0  # files before dropout: none
    if np.any(np.asarray(rates, dtype=float) > 0):
        print(f"  dropout:    {rates} (training only; {getattr(model, '_dropout_step', 0)} "
              "mini-batch steps of masks drawn)")
    history = model.history_ or {}
    losses = [v for v in history.get("loss") or model.loss_curve_ or [] if v is not None]
    epochs = len(losses) or model.n_iter_
    final = f"final loss {losses[-1]:.6g}" if losses else "final loss n/a"
    scores = [v for v in history.get("validation_score") or model.validation_scores_ or []]
    valid = [(v, k + 1) for k, v in enumerate(scores) if v is not None and np.isfinite(v)]
    if valid:
        best, epoch = max(valid, key=lambda t: t[0])
        best = f"best validation score {best:.4f} (epoch {epoch})"
    else:
        best = "best validation score n/a (none recorded during training)"
    unit = "iterations" if params["solver"] == "lbfgs" else "epochs"
    print(f"  history:    {epochs} {unit}, {final}, {best}")
    return 0


def cmd_plot(args):
    from .plot import MatplotlibMissing, save_history

    model = _load_model(args.model)
    out = args.out or os.path.splitext(args.model)[0] + ".png"
    try:
        save_history(model, out, title=f"{os.path.basename(args.model)}: "
                                       f"{type(model).__name__}")
    except MatplotlibMissing as exc:
        raise CLIError(f"{exc}") from None
    except ValueError as exc:
        raise CLIError(f"{args.model}: {exc}") from None
    except OSError as exc:
        raise CLIError(f"{out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {out}")
    return 0


def cmd_cache(args):
    from .kernel_cache import cache_dirs, cache_files, clear_cache

    if args.action == "clear":
        n, size = clear_cache()
        print(f"removed {n} compiled-kernel file(s), {size / 2**20:.1f} MiB, from "
              f"{', '.join(cache_dirs())}")
        return 0
    files = cache_files()
    size = sum(os.path.getsize(f) for f in files if os.path.exists(f))
    functions = sum(f.endswith(".nbi") for f in files)
    print(f"cache directory: {', '.join(cache_dirs())}")
    print(f"  {functions} compiled function(s), {len(files) - functions} compiled "
          f"variant(s), {size / 2**20:.1f} MiB")
    return 0


# -- entry point ------------------------------------------------------------------------------
def _with_default_command(argv):
    """``fastbp`` and ``fastbp --epochs 3`` mean ``fastbp demo ...``."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        return ["demo"] + list(argv)
    return list(argv)


def main(argv=None):
    """Run the command line; returns the exit status (0 success, 2 error, 1 bug, 130 Ctrl-C)."""
    argv = _with_default_command(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("FASTBP_DEBUG"))
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            parser = _build_parser()
            args = parser.parse_args(argv)
            return args.func(args)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else 0
        except CLIError as exc:
            _note(f"error: {exc}")
            return EXIT_ERROR
        except KeyboardInterrupt:
            _note("interrupted")
            return 130
        except BrokenPipeError:  # e.g. `fastbp predict ... | head`
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return EXIT_ERROR
        except (ValueError, OSError) as exc:
            # bad data or parameters reaching the estimator (ValueError: DivergenceError,
            # InvalidParameterError, ModelFileError...), or a file system error
            if debug:
                raise
            _note(f"error: {exc}")
            return EXIT_ERROR
        except MemoryError:
            _note("error: out of memory (try a smaller --batch-size or fewer rows)")
            return EXIT_ERROR
        except Exception as exc:  # a bug: still one line, with the way to a traceback
            if debug:
                raise
            _note(f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in fastbp; "
                  "rerun with FASTBP_DEBUG=1 for the traceback)")
            return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
