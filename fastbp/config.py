"""The one place that picks Numba options and defaults.

``jit.py`` turns these into compiled functions; nothing else passes Numba
options.

``error_model="numpy"`` (set in ``jit``): a float division by zero gives
inf/NaN instead of raising, so Numba emits no zero test in loops and divisions
and square roots vectorise (Adam's step went from 4.2 to 1.1 ns per parameter).

Fastmath: ``reassoc`` (lets LLVM vectorise reductions), ``contract`` (FMA) and
``nsz``.  Deliberately *not* ``nnan``/``ninf`` (Numba would delete ``isnan``
tests) and not ``afn``/``arcp`` (approximate exp/log/division would break the
1e-12 agreement with the BLAS twin).
"""
import os

import numba

# Threading layer: numba's fallback 'workqueue' aborts the process when two
# Python threads run parallel kernels at once; 'threadsafe' picks tbb or omp
# (GNU OpenMP on Linux wheels) and never workqueue.  An explicit
# NUMBA_THREADING_LAYER in the environment is respected.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"

FASTMATH = frozenset({"reassoc", "contract", "nsz"})
# For functions whose order of evaluation is their accuracy (range reductions,
# Cody-Waite splits, scaling by 2^k in two steps): no ``reassoc``.  LLVM keeps
# these flags per instruction when it inlines such a function into a kernel.
FASTMATH_ORDERED = frozenset({"contract", "nsz"})
# For element-wise updates whose every rounding is specified (the optimizer step in
# float32): no contraction into FMAs, no reassociation.  With ``contract``, whether
# ``beta v - lr g`` becomes one FMA or two roundings depended on what LLVM inlined the
# loop into, which differs between a process that compiled the engine with its kernels
# and one that linked cached kernels: float32 weights then differed by an ulp between
# processes.  Without it the loop gives NumPy's bits, in any process.
FASTMATH_EXACT = frozenset({"nsz"})
CACHE = True

# Work (multiply-adds per kernel call, or elements for the optimizer step) below
# which the serial twin of a kernel is used: about 50-100 us of serial work, so
# that a parallel region's start-up (~2 us on a quiet machine, far more when the
# other core is busy) stays small beside it.  On 2 cores prange pays on wide
# layers only (784-512-512 at batch 256), not on batch-10 784-30 layers.
# Depends on shapes only, never on the thread count, so results are bitwise
# identical for any number of threads.
PARALLEL_MIN_WORK = 1 << 20
# Element-wise passes (the optimizer step, gathering a mini-batch's rows) do no
# multiply-add chains: each element is a few loads and stores, and on wide nets the
# arrays come from L3 or DRAM (the optimizer's theta, grad and velocity: 16 MB at
# 784-512-512 in float64), so an element costs ~1 ns, about 16 multiply-adds.  They
# take their parallel twin from ``PARALLEL_MIN_WORK >> ELEMENTWISE_PAR_SHIFT``
# elements on (65,536).  Serial, W4's optimizer step was 16% of the main thread's
# time while the other core waited at a barrier.
ELEMENTWISE_PAR_SHIFT = 4
# Training steps below PARALLEL_MIN_WORK in every kernel call but of at least this
# many multiply-adds in the forward pass (batch x sum of n_in n_out over the layers),
# and of at least TEAM_MIN_ROWS samples, run as team epochs (``team``: one parallel
# region per epoch, each step three phases of blocks the threads take in turn).
# 2 threads against 1, in one process, same bits: 64-128-64-10 at batch 64 (1.09M)
# 1.39-1.45x, at batch 32 (545k) 1.16x; 50-100-1 at batch 200 (1.02M) 1.33x;
# 20-64-64-1 at batch 128 (696k) 1.41x, at batch 64 (348k) 1.16x, but at batch 32
# (W3: 174k, ~35 us a step) 0.83-0.89x.  The bits are the serial engine's, so with
# one thread that runs instead (no claims to pay).
TEAM_MIN_WORK = 1 << 18
TEAM_MIN_ROWS = 32
