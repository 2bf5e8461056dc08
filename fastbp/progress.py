"""Per-epoch progress for ``verbose=True`` fits and the command line.

One class, :class:`EpochProgress`, called with each epoch's ``EpochResult``:

* a tqdm bar (``tqdm.auto``: a widget in Jupyter, a text bar with elapsed time and
  ETA in a terminal) when tqdm is installed (``pip install tqdm``, or the
  ``progress`` extra) and the output is a terminal or a Jupyter notebook;
* otherwise one plain line per epoch (a log file or a pipe never receives a
  control character), formatted by the caller.

It never stops training (returns False).
"""
import io
import os
import sys

__all__ = ["EpochProgress", "use_bar"]


def _is_terminal(stream):
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _in_notebook():
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        return shell.get_ipython().__class__.__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001 - any failure means: not a notebook
        return False


def _tqdm():
    """tqdm.auto's class, or None when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def use_bar(stream):
    """True when progress on ``stream`` is drawn as a tqdm bar."""
    return (_is_terminal(stream) or _in_notebook()) and _tqdm() is not None


def _size(stream):
    """tqdm's ``ncols``/``nrows`` where the terminal reports no size (a fresh
    pseudo-terminal, some CI consoles): tqdm would otherwise draw nothing at all."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return {"ncols": 80, "nrows": 24}
    out = {}
    if size.columns <= 0:
        out["ncols"] = 80
    if size.lines <= 0:
        out["nrows"] = 24
    return out


class EpochProgress:
    """Progress of ``total`` epochs on ``stream``: a tqdm bar or plain lines.

    ``line(info)`` formats the plain line of an epoch (without the newline);
    ``desc`` labels the bar.  ``quiet``: nothing at all.
    """

    def __init__(self, total, line, stream=None, desc="training", quiet=False):
        self.total = max(int(total), 1)
        self.line = line
        self.stream = stream if stream is not None else sys.stderr
        self.desc = desc
        self.quiet = quiet
        self.bar = None
        self.terminal = not quiet and use_bar(self.stream)
        self.closed = False

    def __call__(self, info):
        if self.quiet:
            return False
        if not self.terminal:
            self.stream.write(self.line(info) + "\n")
            self.stream.flush()
            return False
        if self.closed:  # a report is for one fit
            return False
        if self.bar is None:  # drawn at the first epoch's end: a compile notice (stderr)
            # during the first epoch then stands on its own line
            self.bar = _tqdm()(total=self.total, desc=self.desc, unit="epoch",
                               file=self.stream, leave=True, **_size(self.stream))
        figures = {"loss": f"{info.loss:.4g}"}
        if info.validation_score is not None:
            figures["validation"] = f"{info.validation_score:.4f}"
        self.bar.set_postfix(figures, refresh=False)
        self.bar.update(info.epoch - self.bar.n)
        return False

    def close(self):
        """Finish the bar (its line stays, showing where training stopped)."""
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None
