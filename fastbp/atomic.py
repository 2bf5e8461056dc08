"""``claim``: hand out the blocks of a parallel kernel one at a time, first come first served.

A ``prange`` loop gives each thread an equal, contiguous share of its iterations,
fixed before any runs.  On a shared machine the two cores do not run at the same
speed (another tenant, a cache miss storm), so with 16 blocks of a wide layer split
8 and 8 the faster thread waits at the region's barrier for the slower one: in a
profile of 784-512-512 training (batch 256, 2 threads), each thread spent 15% of
its time spinning in that barrier.  The parallel kernels instead run one loop
iteration per worker and let each worker take the next block from a shared counter
until none is left, so a thread that finishes early takes more blocks.

Which thread computes a block never changes what it computes: every block writes
only its own rows and sums in a fixed order, so results stay bitwise identical for
any number of threads and any schedule.

``claim(counter)`` is ``counter[0] += 1`` returning the old value: plain Python
(the ``python`` backend and ``NUMBA_DISABLE_JIT`` run that) and, compiled, one
atomic ``fetch-add`` on ``counter[0]`` (``type_callable`` / ``lower_builtin``;
monotonic ordering: a block's claim orders nothing else, and the parallel
region's end is the barrier that publishes every block's writes).
"""
from numba import types
from numba.core import cgutils
from numba.core.imputils import lower_builtin
from numba.extending import type_callable
from numba.np.arrayobj import make_array

# Workers of a block loop: enough for any thread count fastbp is run with; a
# worker that finds no block left costs one atomic add.
MAX_WORKERS = 64


def claim(counter):
    """The next unclaimed block: ``counter[0]`` before adding 1 to it (atomically when
    compiled).  counter: (>= 1,) int64, 0 before the first claim."""
    block = counter[0]
    counter[0] = block + 1
    return block


@type_callable(claim)
def _claim_typer(context):
    def typer(counter):
        if isinstance(counter, types.Array) and counter.dtype == types.int64 \
                and counter.ndim == 1:
            return types.int64
    return typer


@lower_builtin(claim, types.Array)
def _claim_lower(context, builder, sig, args):
    aryty = sig.args[0]
    ary = make_array(aryty)(context, builder, args[0])
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary,
                                   [context.get_constant(types.intp, 0)])
    return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "monotonic")
