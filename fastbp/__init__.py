"""fastbp: multilayer perceptrons trained by loop-form backpropagation compiled with Numba."""
from ._version import __version__
from .api import GradientCheck, check_gradients, loss_and_gradient
from .estimators import DivergenceWarning, MLPClassifier, MLPRegressor, load
from .io import ModelFileError
from .onnx import to_onnx
from .scaling import InputRangeWarning
from .trainer import DivergenceError

__all__ = ["MLPClassifier", "MLPRegressor", "loss_and_gradient", "check_gradients",
           "GradientCheck", "DivergenceError", "load", "ModelFileError", "DivergenceWarning",
           "InputRangeWarning", "to_onnx", "__version__"]
