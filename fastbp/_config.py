"""The one place that picks Numba options, numeric codes and defaults.

Every compiled function in fastbp is made by :func:`jit` or :func:`twins` from
this module, so the fastmath flag set and caching are decided here only.

``error_model="numpy"``: a float division by zero gives inf/NaN instead of
raising, so Numba emits no zero test in loops and divisions and square roots
vectorise (Adam's step went from 4.2 to 1.1 ns per parameter).

Numba's on-disk cache does not key on these options, nor on the sources of the
kernels a function links in, so ``jit`` puts a digest of both into every
compiled function's qualified name (``_options_tag``): changing an option or a
kernel writes new cache files instead of loading stale code.

Fastmath: ``reassoc`` (lets LLVM vectorise reductions), ``contract`` (FMA) and
``nsz``.  Deliberately *not* ``nnan``/``ninf`` (Numba would delete ``isnan``
tests) and not ``afn``/``arcp`` (approximate exp/log/division would break the
1e-12 agreement with the BLAS twin).
"""
import hashlib
import os
import types

import numba
from numba.core.registry import CPUDispatcher

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
CACHE = True

# Work (multiply-adds per kernel call, or elements for the optimizer step) below
# which the serial twin of a kernel is used: about 50-100 us of serial work, so
# that a parallel region's start-up (~2 us on a quiet machine, far more when the
# other core is busy) stays small beside it.  On 2 cores prange pays on wide
# layers only (784-512-512 at batch 256), not on batch-10 784-30 layers.
# Depends on shapes only, never on the thread count, so results are bitwise
# identical for any number of threads.
PARALLEL_MIN_WORK = 1 << 20


_threads_started = False


def start_threads():
    """Start Numba's threading layer; call before any compiled engine function runs.

    The engine functions are serial and call the ``_parallel`` kernel twins.  A
    parallel function records in its cache entry that loading it must first
    start the threading layer, and a caller compiled in the same process
    inherits that record; but a caller compiled in a process that *loaded* its
    callees from the cache does not (the record is not restored with cached
    code), so once such a caller is itself cached, a fresh process loading it
    calls into a threading layer that was never started and segfaults (Numba
    issue #8578).  Which process cached which function is luck, so fastbp never
    relies on the record: ``backends.get_engine`` calls this before handing out
    compiled code.  ``numba.get_num_threads()`` is Numba's public call that
    starts the layer (idempotent, ~30 ms once per process).  It is not done at
    import: a started GNU OpenMP layer makes ``fork`` unsafe, and a process that
    only imports fastbp should stay fork-safe.
    """
    global _threads_started
    if not _threads_started:
        numba.get_num_threads()
        _threads_started = True

# Activation codes (see activations.py).
IDENTITY, LOGISTIC, TANH, RELU, LEAKY_RELU, SOFTPLUS, SOFTMAX = range(7)
ACTIVATION_CODES = {
    "identity": IDENTITY,
    "logistic": LOGISTIC,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "softplus": SOFTPLUS,
    "softmax": SOFTMAX,
}
HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu", "leaky_relu", "softplus")
OUTPUT_ACTIVATIONS = ("identity", "logistic", "softmax")
LEAKY_SLOPE = 0.01

# Loss codes (see losses.py).
SQUARED_ERROR, LOG_LOSS, HUBER = range(3)
LOSS_CODES = {"squared_error": SQUARED_ERROR, "log_loss": LOG_LOSS, "huber": HUBER}

# Optimizer codes (see optimizers.py).
OPT_SGD, OPT_ADAM, OPT_RMSPROP, OPT_ADAGRAD, OPT_NONE = range(5)

# Layout of the float64 hyper-parameter vector ``hp`` given to the engine.
HP_LR, HP_ALPHA, HP_MOMENTUM, HP_BETA1, HP_BETA2, HP_EPS, HP_CLIP, HP_HUBER, HP_PROB_EPS = range(9)
HP_SIZE = 9
# Layout of the int64 control vector ``ip`` given to the engine.
(IP_OPT, IP_LOSS, IP_PAR_MIN, IP_NESTEROV, IP_STEP, IP_WSQ_OFF, IP_MEAN_OUT, IP_CAP) = range(8)
IP_SIZE = 8
# Columns of the int64 layer table (one row per weight layer).
L_NIN, L_NOUT, L_WOFF, L_BOFF, L_ACT, L_AOFF, L_DOFF = range(7)
L_COLS = 7
# Layout of the float64 statistics vector written by the engine.
ST_LOSS, ST_SAMPLES, ST_DIVERGED, ST_BATCHES, ST_DATA, ST_REG, ST_SWSUM, ST_GNORM = range(8)
# per-layer gradient norms follow from ST_GNORM on


def _sources_digest():
    """Digest of every module whose code ends up in compiled fastbp functions."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha1()
    for name in ("_config.py", "vecmath.py", "activations.py", "losses.py", "kernels_loop.py",
                 "_engine.py"):
        try:
            with open(os.path.join(here, name), "rb") as fh:
                h.update(fh.read())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()


_SOURCES = _sources_digest()


def _options_tag(opts):
    """Short digest of the compile options and kernel sources, put in every compiled name.

    Numba's cache index keys on a function's name, bytecode and signature, and
    checks only its own file's time stamp: not its options, nor the sources of
    the kernels it calls and links in.  With this tag in the qualname, changing
    an option or any kernel source gives new cache files instead of loading
    stale machine code.
    """
    text = repr(sorted((k, sorted(v) if isinstance(v, (set, frozenset)) else v)
                       for k, v in opts.items())) + _SOURCES
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def jit(func=None, **options):
    """``numba.njit`` with fastbp's fastmath set and cache (serial)."""
    opts = dict(fastmath=set(FASTMATH), cache=CACHE, nogil=True, error_model="numpy")
    opts.update(options)

    def compile_(f):
        dispatcher = numba.njit(**opts)(_renamed(f, "__" + _options_tag(opts)))
        dispatcher.__name__ = f.__name__
        return dispatcher

    if func is None:
        return compile_
    return compile_(func)


def jit_ordered(func):
    """:func:`jit` without ``reassoc`` (see ``FASTMATH_ORDERED``)."""
    return jit(func, fastmath=set(FASTMATH_ORDERED))


def _renamed(func, suffix, namespace=None):
    """A copy of ``func`` with a new qualname (own cache file) and globals."""
    glb = func.__globals__
    if namespace:
        glb = dict(glb)
        glb.update(namespace)
    new = types.FunctionType(func.__code__, glb, func.__name__ + suffix,
                             func.__defaults__, func.__closure__)
    new.__qualname__ = func.__qualname__ + suffix
    new.__doc__ = func.__doc__
    new.__module__ = func.__module__
    new.__kwdefaults__ = func.__kwdefaults__
    return new


def twins(func):
    """Compile a ``prange`` kernel twice: (serial, parallel).

    Both come from the same source.  The parallel one gets its own qualname so
    that Numba's on-disk cache keeps the two apart (the cache index does not
    key on the ``parallel`` flag).
    """
    serial = jit(func)
    parallel = jit(_renamed(func, "_parallel"), parallel=True)
    return serial, parallel


def pure_python(func, namespace=None, _memo=None):
    """A plain-Python copy of ``func``: compiled callees become Python too.

    Globals named in ``namespace`` are replaced first (used to point the one
    engine source at the BLAS kernels); every other global that is a Numba
    dispatcher is replaced, recursively, by its pure-Python copy.
    """
    if _memo is None:
        _memo = {}
    if isinstance(func, CPUDispatcher):
        func = func.py_func
    if id(func) in _memo:
        return _memo[id(func)]
    glb = dict(func.__globals__)
    new = types.FunctionType(func.__code__, glb, func.__name__,
                             func.__defaults__, func.__closure__)
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    new.__module__ = func.__module__
    _memo[id(func)] = new
    subst = namespace or {}
    for name in func.__code__.co_names:
        if name in subst:
            glb[name] = subst[name]
        elif isinstance(glb.get(name), CPUDispatcher):
            glb[name] = pure_python(glb[name], namespace, _memo)
    return new
