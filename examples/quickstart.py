"""Quick start: fit, predict, score, save and load a fastbp model.

    python examples/quickstart.py [MODEL_PATH]

fastbp.MLPClassifier takes scikit-learn's parameters and gives its attributes; the
training runs in fastbp's compiled loop kernels.  The model file (.fbp) is written
atomically and read without pickle.
"""
import os
import sys
import tempfile

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastbp


def main(path=None):
    X, y = load_digits(return_X_y=True)          # 1797 8x8 images, bundled with scikit-learn
    X = X / 16.0                                  # pixel intensities 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=0)

    # fit: scikit-learn's parameters (here adam, 64 relu units, mini-batches of 32)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(64,), batch_size=32, max_iter=40,
                                 early_stopping=True, random_state=0)
    model.fit(X_train, y_train)
    print(f"trained {model.n_iter_} epochs, final loss {model.loss_:.4f}, "
          f"best validation score {model.best_validation_score_:.4f}")

    # predict and score
    predicted = model.predict(X_test[:10])
    proba = model.predict_proba(X_test[:1])
    print(f"first 10 predictions: {predicted.tolist()}  (true: {y_test[:10].tolist()})")
    print(f"P(class | first test image) = {np.round(proba[0], 3).tolist()}")
    accuracy = model.score(X_test, y_test)
    print(f"test accuracy: {accuracy:.4f}")

    # save and load: same predictions, same training history
    if path is None:
        path = os.path.join(tempfile.mkdtemp(prefix="fastbp-"), "digits.fbp")
    model.save(path)
    loaded = fastbp.load(path)
    assert np.array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))
    assert loaded.loss_curve_ == model.loss_curve_
    print(f"saved to {path} and loaded back: identical predictions "
          f"(test accuracy {loaded.score(X_test, y_test):.4f})")
    return accuracy


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
