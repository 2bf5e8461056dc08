"""Plot training curves from ``history_``: loss, validation score, per-layer gradient norms.

    python examples/training_curves.py [OUT.png]

Needs matplotlib (from a fastbp checkout: ``pip install ".[plot]"``); without it the
example says so and exits.  The PNG goes to OUT.png, or to a new temporary folder.
``history_`` holds, per epoch, the training loss, validation score (with
early_stopping), learning rate, seconds and the mean gradient norm of each layer; the same
figures reach ``callbacks`` during training as ``fastbp.trainer.EpochResult``.
``fastbp plot MODEL.fbp`` draws the same panels from a saved model without code.
"""
import os
import sys
import tempfile


def main(out=None):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: skipping the plot "
              "(pip install matplotlib, or from a fastbp checkout: pip install \".[plot]\").")
        return None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.datasets import load_digits

    import fastbp

    X, y = load_digits(return_X_y=True)
    seen = []

    def on_epoch(info):  # called as each epoch ends; returning True would stop training
        seen.append(info.epoch)
        return False

    model = fastbp.MLPClassifier(hidden_layer_sizes=(64, 32), batch_size=32, max_iter=40,
                                 early_stopping=True, n_iter_no_change=10, random_state=0,
                                 callbacks=on_epoch)
    model.fit(X / 16.0, y)
    h = model.history_
    epochs = np.arange(1, len(h["loss"]) + 1)
    grad_norms = np.array(h["grad_norms"])  # (epochs, layers)
    assert seen == list(epochs)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(epochs, h["loss"])
    axes[0].set(title="training loss", xlabel="epoch", yscale="log")
    axes[1].plot(epochs, h["validation_score"])
    best = int(np.argmax(h["validation_score"]))
    axes[1].axvline(epochs[best], color="gray", linestyle=":", label="best (weights kept)")
    axes[1].set(title="validation accuracy", xlabel="epoch")
    axes[1].legend()
    for layer in range(grad_norms.shape[1]):
        name = "output layer" if layer == grad_norms.shape[1] - 1 else f"hidden layer {layer + 1}"
        axes[2].plot(epochs, grad_norms[:, layer], label=name)
    axes[2].set(title="gradient norm per layer (epoch mean)", xlabel="epoch", yscale="log")
    axes[2].legend()
    fig.suptitle("fastbp.MLPClassifier on digits: hidden (64, 32), adam, batch 32")
    fig.tight_layout()

    if out is None:
        out = os.path.join(tempfile.mkdtemp(prefix="fastbp-"), "training_curves.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"{len(epochs)} epochs, best validation accuracy {h['validation_score'][best]:.4f} "
          f"at epoch {best + 1}")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
