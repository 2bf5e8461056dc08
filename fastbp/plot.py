"""Pictures of a fitted model's ``history_``: loss, validation score, per-layer gradient norms.

    fig = fastbp.plot.history_figure(model)      # a matplotlib Figure
    fastbp.plot.save_history(model, "curves.png")

``fastbp plot MODEL.fbp [OUT.png]`` draws the same from a model file.  Needs
matplotlib (``pip install matplotlib``; from a fastbp checkout ``pip install
".[plot]"``); the figure is drawn without pyplot, so no display or GUI backend is
involved.
"""
import numpy as np

__all__ = ["history_figure", "save_history", "MatplotlibMissing"]

INSTALL_HINT = ("pip install matplotlib (or, from a fastbp checkout, pip install \".[plot]\")")


class MatplotlibMissing(ImportError):
    """matplotlib is not installed."""


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing(f"plotting needs matplotlib, which is not installed: "
                                f"{INSTALL_HINT}") from None
    return Figure


def history_figure(model, title=None):
    """A matplotlib Figure of ``model.history_`` (ValueError if there is none)."""
    history = getattr(model, "history_", None) or {}
    losses = [np.nan if v is None else v for v in history.get("loss") or []]
    if not losses:
        raise ValueError("the model has no training history to plot (history_ is empty)")
    Figure = _figure_class()
    epochs = np.arange(1, len(losses) + 1)
    scores = [np.nan if v is None else v for v in history.get("validation_score") or []]
    has_scores = len(scores) == len(losses) and np.isfinite(scores).any()
    norms = np.array([g for g in history.get("grad_norms") or []], dtype=float)
    panels = 2 + has_scores
    fig = Figure(figsize=(4.4 * panels, 3.8))
    axes = fig.subplots(1, panels)
    unit = "iteration" if getattr(model, "solver", None) == "lbfgs" else "epoch"
    axes[0].plot(epochs, losses)
    positive = np.all(np.asarray(losses)[np.isfinite(losses)] > 0)
    axes[0].set(title="training loss", xlabel=unit, yscale="log" if positive else "linear")
    k = 1
    if has_scores:
        best = int(np.nanargmax(scores))
        axes[1].plot(epochs, scores)
        axes[1].axvline(epochs[best], color="gray", linestyle=":",
                        label=f"best: {scores[best]:.4f} ({unit} {best + 1})")
        axes[1].set(title="validation score", xlabel=unit)
        axes[1].legend()
        k = 2
    ax = axes[k]
    if norms.ndim == 2 and norms.shape[0] == len(losses) and norms.size:
        for layer in range(norms.shape[1]):
            name = ("output layer" if layer == norms.shape[1] - 1
                    else f"hidden layer {layer + 1}")
            ax.plot(epochs, norms[:, layer], label=name)
        ax.set(yscale="log" if np.all(norms > 0) else "linear")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no gradient norms recorded", ha="center", va="center",
                transform=ax.transAxes)
    ax.set(title=f"gradient norm per layer ({unit} mean)", xlabel=unit)
    if title is None:
        sizes = [c.shape[1] for c in model.coefs_[:-1]]
        title = (f"{type(model).__name__}: hidden {tuple(sizes)}, "
                 f"{getattr(model, 'solver', '?')}, {len(losses)} {unit}s")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_history(model, path, dpi=100, title=None):
    """Draw ``history_figure(model)`` into ``path`` (the format follows its extension)."""
    fig = history_figure(model, title=title)
    fig.savefig(path, dpi=dpi)
    return path
