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

``done``, ``publish``, ``finished`` and ``spin_pause`` serve the team epochs
(``team``), whose workers wait for one another: ``done(counter, i)`` adds 1 to
``counter[i]`` and returns the old value (acquire and release ordering: the
last worker to arrive sees every other's writes), ``publish(counter, i, v)``
stores v with release ordering (the writes before it are published with it),
``finished(counter, i)`` reads ``counter[i]`` with acquire ordering (a worker that
sees the value sees those writes; a plain load could also be hoisted out of a
wait loop), ``spin_pause()`` is x86's ``pause`` hint inside such a loop and
``yield_cpu()`` gives the core away (``sched_yield``) when a wait grows long.
"""
import os
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.imputils import lower_builtin
from numba.extending import type_callable
from numba.np.arrayobj import make_array

# Workers of a block loop: enough for any thread count fastbp is run with; a
# worker that finds no block left costs one atomic add.
MAX_WORKERS = 64
_POSIX = os.name == "posix"
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


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


def done(counter, i):
    """``counter[i] += 1`` (atomically, with acquire-release ordering, when compiled);
    returns the old value.  counter: (> i,) int64."""
    old = counter[i]
    counter[i] = old + 1
    return old


def publish(counter, i, value):
    """``counter[i] = value`` (an atomic store with release ordering when compiled)."""
    counter[i] = value


def finished(counter, i):
    """``counter[i]`` (an atomic load with acquire ordering when compiled)."""
    return counter[i]


def spin_pause():
    """Nothing in Python; compiled, the ``pause`` hint of a spin-wait loop."""


def yield_cpu():
    """Nothing in Python; compiled, ``sched_yield()`` (POSIX): a waiting worker gives
    its core to another thread, as when more threads than cores are running."""


def _item_pointer(context, builder, sig, args):
    aryty = sig.args[0]
    ary = make_array(aryty)(context, builder, args[0])
    index = context.cast(builder, args[1], sig.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [index])


def _counter_typer(context):
    def typer(counter, i):
        if isinstance(counter, types.Array) and counter.dtype == types.int64 \
                and counter.ndim == 1 and isinstance(i, types.Integer):
            return types.int64
    return typer


type_callable(done)(_counter_typer)
type_callable(finished)(_counter_typer)


@lower_builtin(done, types.Array, types.Integer)
def _done_lower(context, builder, sig, args):
    ptr = _item_pointer(context, builder, sig, args)
    return builder.atomic_rmw("add", ptr, context.get_constant(types.int64, 1), "acq_rel")


@type_callable(publish)
def _publish_typer(context):
    def typer(counter, i, value):
        if isinstance(counter, types.Array) and counter.dtype == types.int64 \
                and counter.ndim == 1 and isinstance(i, types.Integer) \
                and isinstance(value, types.Integer):
            return types.none
    return typer


@lower_builtin(publish, types.Array, types.Integer, types.Integer)
def _publish_lower(context, builder, sig, args):
    ptr = _item_pointer(context, builder, sig, args)
    value = context.cast(builder, args[2], sig.args[2], types.int64)
    builder.store_atomic(value, ptr, "release", 8)
    return context.get_dummy_value()


@lower_builtin(finished, types.Array, types.Integer)
def _finished_lower(context, builder, sig, args):
    return builder.load_atomic(_item_pointer(context, builder, sig, args), "acquire", 8)


def _no_arguments(context):
    def typer():
        return types.none
    return typer


type_callable(spin_pause)(_no_arguments)
type_callable(yield_cpu)(_no_arguments)


def _call_symbol(context, builder, name, return_type):
    """Call the argument-free function ``name``: an LLVM intrinsic or a C library
    symbol, resolved when the code is linked (not an address, which would keep the
    function from Numba's cache; not inline assembly: Numba's JIT has no assembly
    parser)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(return_type, []),
                                        name)
    builder.call(fn, [])
    return context.get_dummy_value()


@lower_builtin(spin_pause)
def _spin_pause_lower(context, builder, sig, args):
    if not _X86:
        return context.get_dummy_value()
    return _call_symbol(context, builder, "llvm.x86.sse2.pause", ir.VoidType())


@lower_builtin(yield_cpu)
def _yield_cpu_lower(context, builder, sig, args):
    if not _POSIX:
        return context.get_dummy_value()
    return _call_symbol(context, builder, "sched_yield", ir.IntType(32))
