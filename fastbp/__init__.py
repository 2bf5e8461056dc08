"""fastbp: multilayer perceptrons trained by loop-form backpropagation compiled with Numba."""
__version__ = "0.1.0"

from .api import GradientCheck, check_gradients, loss_and_gradient
from .estimators import DivergenceWarning, MLPClassifier, MLPRegressor
from .io import ModelFileError, load
from .trainer import DivergenceError

__all__ = ["MLPClassifier", "MLPRegressor", "loss_and_gradient", "check_gradients",
           "GradientCheck", "DivergenceError", "load", "ModelFileError", "DivergenceWarning", "__version__"]
