"""ONNX export of fitted fastbp models: ``fastbp.onnx.to_onnx(model)``.

The graph computes what ``predict``/``predict_proba`` compute, in the model's dtype
(float32 or float64):

* ``scale='standard'``: ``(X - mean) / scale`` first;
* each layer ``MatMul(coef) + intercept`` and its activation (identity, Sigmoid,
  Tanh, Relu, LeakyRelu(0.01), Softplus; one per layer as fitted), plus one MatMul
  per shortcut block of ``skip_coefs_`` (``connections``) into the layer it feeds;
* classifiers: outputs ``label`` (class labels: int64 or string) and
  ``probabilities`` (n, n_classes) -- softmax for multiclass, ``[1 - p, p]`` for
  binary, the per-label probabilities (and 0/1 int64 labels) for multilabel;
* regressors: output ``variable`` (n, n_outputs).  A Huber loss changes training
  only, not predictions.

Needs the ``onnx`` package (``pip install onnx``; onnxruntime runs the result).
"""
import numpy as np

__all__ = ["to_onnx", "register_converters"]

OPSET = 17


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install onnx (or, from "
                          "a fastbp checkout, pip install \".[onnx]\")") from None


def to_onnx(model, name="fastbp", input_name="X", dtype=None, *, class_indices=False):
    """The fitted ``model`` as an ``onnx.ModelProto`` (save it with ``onnx.save``).

    ``dtype``: float32 or float64 for the graph's input, weights and arithmetic
    (default: the model's dtype).  ``class_indices``: classifiers' ``label`` is the
    int64 index into ``classes_`` rather than the class itself (skl2onnx's ``nocl``).
    """
    _require_onnx()
    from onnx import TensorProto, checker, helper, numpy_helper
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    dtype = np.dtype(model.coefs_[0].dtype if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"ONNX export: dtype must be float32 or float64, got {dtype}")
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits = [], []

    def const(tag, value, as_dtype=dtype):
        array = np.asarray(value) if as_dtype is None else np.asarray(value, dtype=as_dtype)
        inits.append(numpy_helper.from_array(array, name=tag))
        return tag

    def node(op, inputs, tag, **attrs):
        nodes.append(helper.make_node(op, inputs, [tag], name=tag, **attrs))
        return tag

    x = input_name
    scaler = getattr(model, "scaler_", None)
    if scaler is not None:
        x = node("Sub", [x, const("scale_mean", scaler.mean)], "centered")
        x = node("Div", [x, const("scale_scale", scaler.scale)], "scaled")
    acts = list(model._hidden_acts_) + [model.out_activation_]
    skips = dict(getattr(model, "skip_coefs_", None) or {})  # {(source, layer): weights}
    a = [x]  # a[s]: the output of layer s (0 = the input)
    for l, (w, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        t = l + 1
        terms = []
        if np.shape(w)[0] != 0:  # 0 rows: layer t does not take layer t-1 (shortcuts)
            terms.append(node("MatMul", [a[l], const(f"coef_{l}", w)], f"matmul_{l}"))
        for (source, target), ws in sorted(skips.items()):
            if int(target) == t:
                terms.append(node("MatMul", [a[int(source)], const(f"skip_{source}_{t}", ws)],
                                  f"matmul_{source}_{t}"))
        z = terms[0]
        for k, term in enumerate(terms[1:]):
            z = node("Add", [z, term], f"sum_{l}_{k}")
        z = node("Add", [z, const(f"intercept_{l}", b)], f"z_{l}")
        a.append(_activation(node, const, z, acts[l], l))
    x = a[-1]
    outputs = []
    n = None  # the batch dimension is free
    if hasattr(model, "classes_"):
        classes = np.asarray(model.classes_)
        y_type = model._label_binarizer.y_type_
        if y_type == "multilabel-indicator":
            proba = node("Identity", [x], "probabilities")
            half = const("half", 0.5)
            above = node("Greater", [proba, half], "above")
            node("Cast", [above], "label", to=TensorProto.INT64)
            label_type = helper.make_tensor_value_info("label", TensorProto.INT64,
                                                       [n, len(classes)])
        else:
            if model.n_outputs_ == 1:  # binary: [1 - p, p]
                one_minus = node("Sub", [const("one", 1.0), x], "one_minus_p")
                proba = node("Concat", [one_minus, x], "probabilities", axis=1)
            else:
                proba = node("Identity", [x], "probabilities")
            index = node("ArgMax", [proba], "argmax", axis=1, keepdims=0)
            if class_indices:
                table = const("classes", np.arange(len(classes), dtype=np.int64), as_dtype=None)
                label_elem = TensorProto.INT64
            elif classes.dtype.kind in "US":
                table = const("classes", classes.astype(object), as_dtype=None)
                label_elem = TensorProto.STRING
            elif classes.dtype.kind in "iub":
                table = const("classes", classes.astype(np.int64), as_dtype=None)
                label_elem = TensorProto.INT64
            else:
                raise ValueError(f"ONNX export: class labels of dtype {classes.dtype} are not "
                                 "supported (use integer or string labels)")
            node("Gather", [table, index], "label", axis=0)
            label_type = helper.make_tensor_value_info("label", label_elem, [n])
        outputs = [label_type,
                   helper.make_tensor_value_info("probabilities", elem,
                                                 [n, max(len(classes), 2)])]
    else:
        node("Identity", [x], "variable")
        outputs = [helper.make_tensor_value_info("variable", elem, [n, model.n_outputs_])]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(input_name, elem, [n,
                                                                       model.n_features_in_])],
        outputs, initializer=inits)
    onnx_model = helper.make_model(graph, producer_name="fastbp",
                                   opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = min(onnx_model.ir_version, 8)
    checker.check_model(onnx_model)
    return onnx_model


def _activation(node, const, z, act, l):
    tag = f"a_{l}"
    if act == "identity":
        return z
    if act == "logistic":
        return node("Sigmoid", [z], tag)
    if act == "tanh":
        return node("Tanh", [z], tag)
    if act == "relu":
        return node("Relu", [z], tag)
    if act == "leaky_relu":  # LeakyRelu's alpha is a float32 attribute: spelled out
        from .codes import LEAKY_SLOPE
        slope = node("Mul", [z, const(f"slope_{l}", LEAKY_SLOPE)], f"slope_z_{l}")
        positive = node("Greater", [z, const(f"zero_{l}", 0.0)], f"positive_{l}")
        return node("Where", [positive, z, slope], tag)
    if act == "softplus":  # max(z, 0) + log(1 + exp(-|z|)); onnxruntime has no float64 Softplus
        relu = node("Relu", [z], f"relu_{l}")
        neg = node("Neg", [node("Abs", [z], f"abs_{l}")], f"neg_abs_{l}")
        one_plus = node("Add", [const(f"one_{l}", 1.0), node("Exp", [neg], f"exp_{l}")],
                        f"one_plus_{l}")
        return node("Add", [relu, node("Log", [one_plus], f"log_{l}")], tag)
    if act == "exp":  # a log link (Poisson regression)
        return node("Exp", [z], tag)
    if act == "softmax":
        return node("Softmax", [z], tag, axis=1)
    raise ValueError(f"ONNX export: unknown activation {act!r}")


# -- skl2onnx ------------------------------------------------------------------------------
def register_converters():
    """Register fastbp's estimators with skl2onnx (``update_registered_converter``).

    Afterwards ``skl2onnx.to_onnx`` converts fastbp models, alone or inside Pipelines,
    with the graph of :func:`to_onnx` in the pipeline's input dtype.  Classifiers take
    skl2onnx's ``zipmap`` option (``options={"zipmap": False}`` keeps probabilities a
    tensor; multilabel models need it).  Idempotent.
    """
    try:
        from skl2onnx import update_registered_converter
    except ImportError:
        raise ImportError("registering with skl2onnx needs skl2onnx: pip install skl2onnx "
                          "(or, from a fastbp checkout, pip install \".[onnx]\")") from None
    from .estimators import MLPClassifier, MLPRegressor
    update_registered_converter(MLPClassifier, "FastbpMLPClassifier", _classifier_shapes,
                                _convert, options={"zipmap": [True, False, "columns"],
                                                   "nocl": [True, False]}, overwrite=True)
    update_registered_converter(MLPRegressor, "FastbpMLPRegressor", _regressor_shapes,
                                _convert, overwrite=True)


def _input_dtype(operator):
    from skl2onnx.common.data_types import guess_numpy_type
    dtype = np.dtype(guess_numpy_type(operator.inputs[0].type))
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _tensor_type(dtype):
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    return DoubleTensorType if dtype == np.float64 else FloatTensorType


def _classifier_shapes(operator):
    from skl2onnx.common.data_types import Int64TensorType, StringTensorType
    model = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    classes = np.asarray(model.classes_)
    if model._label_binarizer.y_type_ == "multilabel-indicator":
        operator.outputs[0].type = Int64TensorType([n, len(classes)])
    elif classes.dtype.kind in "US" and not _nocl(operator):
        operator.outputs[0].type = StringTensorType([n])
    else:
        operator.outputs[0].type = Int64TensorType([n])
    operator.outputs[1].type = _tensor_type(_input_dtype(operator))([n, max(len(classes), 2)])


def _regressor_shapes(operator):
    model = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = _tensor_type(_input_dtype(operator))([n, model.n_outputs_])


def _nocl(operator, scope=None):
    """skl2onnx's ``nocl`` option of this classifier (labels as class indices)."""
    scope = scope if scope is not None else operator.scope_inst
    return bool(scope.get_options(operator.raw_operator, dict(nocl=False))["nocl"])


def _convert(scope, operator, container):
    from skl2onnx.helpers.integration import add_onnx_graph
    model = operator.raw_operator
    nocl = hasattr(model, "classes_") and _nocl(operator, scope)
    add_onnx_graph(scope, operator, container,
                   to_onnx(model, dtype=_input_dtype(operator), class_indices=nocl))
