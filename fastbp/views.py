"""``matrix_view``: a matrix view of part of a flat buffer, without Numba's reshape;
``borrowed``: an array whose views compiled code does not reference-count.

The engine lays every layer's weights, activations and errors out in flat
buffers (theta, grad, the workspace) and takes (rows, columns) views of them
for each kernel call: about twenty per training step.  Numba's
``a[lo:hi].reshape((r, c))`` calls its C helper ``numba_attempt_nocopy_reshape``
(and a shape normaliser) every time, some 15 ns; at batch 1 a step is a few
microseconds, so that was about 5% of it.  A contiguous slice needs none of
that: the view's strides are ``(c s, s)`` for s bytes per element.

``matrix_view(flat, off, r, c)`` is ``flat[off:off + r c].reshape((r, c))``:
flat 1-D C-contiguous, the view C-contiguous and sharing flat's memory.  It is
plain Python (the ``python`` backend and ``NUMBA_DISABLE_JIT`` run that) and,
compiled, a bounds check plus the view's fields (``type_callable`` /
``lower_builtin``).  Out of bounds (off, r or c negative, or off + r c past the
end) raises ValueError in both forms.
"""
from numba import types
from numba.core.imputils import impl_ret_borrowed, lower_builtin
from numba.extending import type_callable
from numba.np.arrayobj import make_array, populate_array

_OUT_OF_BOUNDS = "matrix_view: the view lies outside the buffer"


def matrix_view(flat, off, r, c):
    """The (r, c) C-contiguous view of ``flat[off:off + r * c]``."""
    if off < 0 or r < 0 or c < 0 or off + r * c > flat.shape[0]:
        raise ValueError(_OUT_OF_BOUNDS)
    return flat[off:off + r * c].reshape((r, c))


@type_callable(matrix_view)
def _matrix_view_typer(context):
    def typer(flat, off, r, c):
        if (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"
                and all(isinstance(x, types.Integer) for x in (off, r, c))):
            return flat.copy(ndim=2, layout="C")
    return typer


@lower_builtin(matrix_view, types.Array, types.Integer, types.Integer, types.Integer)
def _matrix_view_lower(context, builder, sig, args):
    flat = make_array(sig.args[0])(context, builder, args[0])
    off, r, c = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:]))
    zero = off.type(0)
    size = builder.extract_value(flat.shape, 0)
    bad = builder.or_(builder.or_(builder.icmp_signed("<", off, zero),
                                  builder.icmp_signed("<", r, zero)),
                      builder.or_(builder.icmp_signed("<", c, zero),
                                  builder.icmp_signed(">", builder.add(off, builder.mul(r, c)),
                                                      size)))
    with builder.if_then(bad, likely=False):
        context.call_conv.return_user_exc(builder, ValueError, (_OUT_OF_BOUNDS,))
    view = make_array(sig.return_type)(context, builder)
    itemsize = flat.itemsize
    populate_array(view, data=builder.gep(flat.data, [off]), shape=[r, c],
                   strides=[builder.mul(c, itemsize), itemsize], itemsize=itemsize,
                   meminfo=flat.meminfo, parent=flat.parent)
    return impl_ret_borrowed(context, builder, sig.return_type, view._getvalue())


def borrowed(a):
    """``a`` itself; compiled, a copy of its array struct with no reference count.

    Compiled code counts references to an array's memory (an atomic add and
    subtract, a few ns) each time it makes a view of it or hands it on; at
    batch 1 that was about 13% of a training step.  A view of a borrowed array
    is borrowed too, and counting it is a null check.  Valid only while the
    caller keeps ``a`` alive: the engine borrows the arrays Python passed in for
    the length of one call and never returns them nor stores them.
    """
    return a


@type_callable(borrowed)
def _borrowed_typer(context):
    def typer(a):
        if isinstance(a, types.Array):
            return a
    return typer


@lower_builtin(borrowed, types.Array)
def _borrowed_lower(context, builder, sig, args):
    view = make_array(sig.return_type)(context, builder, args[0])
    view.meminfo = context.get_constant_null(types.MemInfoPointer(types.voidptr))
    return view._getvalue()
