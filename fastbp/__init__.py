"""fastbp: multilayer perceptrons trained by loop-form backpropagation compiled with Numba."""
__version__ = "0.1.0"
