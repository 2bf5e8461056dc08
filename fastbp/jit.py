"""Compiled functions: ``jit``, ``twins``, their cache names, plain-Python copies.

Every compiled function in fastbp is made by :func:`jit` or :func:`twins`, so
the options of ``config`` (fastmath flag set, cache) are applied here only.

Numba's on-disk cache does not key on these options, nor on the sources of the
kernels a function links in, so ``jit`` puts a digest of both into every
compiled function's qualified name (``_options_tag``): changing an option or a
kernel writes new cache files instead of loading stale code.  The digest of a
function covers its own module and, walking the compiled functions that module
imports, every module whose code it can link in (plus this module, ``codes``
and ``config``, whose constants are compiled in, and the SIMD width of
``simd``): no list of files to keep.
Every compiled function's cache files are written and read under a lock
(``cachefile``), so processes compiling at once cannot mix them up.
"""
import builtins
import dis
import hashlib
import sys
import types

import numba
from numba.core.registry import CPUDispatcher

from . import codes, config, simd
from .cachefile import lock_cache
from .config import CACHE, FASTMATH, FASTMATH_EXACT, FASTMATH_ORDERED

__all__ = ["jit", "jit_ordered", "twins", "specialised_copy", "pure_python", "start_threads"]

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


def _file_bytes(module):
    path = getattr(module, "__file__", None)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (OSError, TypeError):
        return module.__name__.encode()


# The vector width is a setting of this process (simd.LANES_BYTES: the CPU, or
# FASTBP_SIMD_BYTES), compiled into the tiled kernels: it is part of every digest.
_BASE = hashlib.sha1(b"".join(_file_bytes(m) for m in (sys.modules[__name__], codes, config))
                     + f"simd={simd.LANES_BYTES}".encode())
_DIGESTS = {}


def _defining_module(obj):
    """The module that defines ``obj`` if it is code a compiled function can link in:
    a compiled function, or a plain one (an overload's entry, as ``vecmath.tanh_any``);
    else None."""
    if isinstance(obj, CPUDispatcher):
        return obj.py_func.__module__
    if isinstance(obj, types.FunctionType):
        return obj.__module__
    return None


def _module_digest(name):
    """Digest of module ``name``'s source and of every fastbp module whose compiled
    (or overloaded) functions it imports, recursively: all the code a function of it
    can link in.

    Taken when the module's first function is compiled, so after its imports.
    """
    if name in _DIGESTS:
        return _DIGESTS[name]
    _DIGESTS[name] = None  # a cycle ends here
    module = sys.modules[name]
    h = _BASE.copy()
    h.update(_file_bytes(module))
    package = __name__.rpartition(".")[0]
    callees = sorted({_defining_module(obj) for obj in vars(module).values()}
                     - {name, None})
    callees = [c for c in callees if c.startswith(package + ".")]
    for callee in callees:
        h.update(callee.encode())
        h.update((_module_digest(callee) or "").encode())
    _DIGESTS[name] = h.hexdigest()
    return _DIGESTS[name]


def _options_tag(opts, module):
    """Short digest of the compile options and linked sources, put in every compiled name.

    Numba's cache index keys on a function's name, bytecode and signature, and
    checks only its own file's time stamp: not its options, nor the sources of
    the kernels it calls and links in.  With this tag in the qualname, changing
    an option or any kernel source gives new cache files instead of loading
    stale machine code.
    """
    text = repr(sorted((k, sorted(v) if isinstance(v, (set, frozenset)) else v)
                       for k, v in opts.items())) + _module_digest(module)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def jit(func=None, **options):
    """``numba.njit`` with fastbp's fastmath set and cache (serial).

    No C-callable wrapper (``no_cfunc_wrapper``): fastbp never takes a compiled
    function's address as a first-class function, and each wrapper is code to
    lower, optimise and emit for every function and signature compiled.
    """
    opts = {"fastmath": set(FASTMATH), "cache": CACHE, "nogil": True,
            "error_model": "numpy", "no_cfunc_wrapper": True}
    opts.update(options)

    def compile_(f):
        dispatcher = lock_cache(
            numba.njit(**opts)(_renamed(f, "__" + _options_tag(opts, f.__module__))))
        dispatcher.__name__ = f.__name__
        return dispatcher

    if func is None:
        return compile_
    return compile_(func)


def jit_ordered(func):
    """:func:`jit` without ``reassoc`` (see ``config.FASTMATH_ORDERED``)."""
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


def _global_loads(func):
    """The global names ``func``'s code reads."""
    return {ins.argval for ins in dis.get_instructions(func.__code__)
            if ins.opname == "LOAD_GLOBAL"}


def twins(func, exact=False):
    """Compile a ``prange`` kernel twice: (serial, parallel).

    Both come from the same source.  The parallel one gets its own qualname so
    that Numba's on-disk cache keeps the two apart (the cache index does not
    key on the ``parallel`` flag), and the global ``PARALLEL_TWIN`` set to True
    (a compile-time constant: its module's value, False, is the serial twin's).
    That copy's globals are a snapshot taken here, so every global the kernel
    reads must be defined before the ``twins`` call (NameError otherwise).
    ``exact``: with ``config.FASTMATH_EXACT`` (every rounding as written)
    instead of ``FASTMATH``.
    """
    late = sorted(name for name in _global_loads(func)
                  if name not in func.__globals__ and not hasattr(builtins, name))
    if late:  # the parallel copy's globals are a snapshot: it would never see them
        raise NameError(f"twins({func.__name__}): define {', '.join(late)} before the twins")
    options = {"fastmath": set(FASTMATH_EXACT)} if exact else {}
    serial = jit(func, **options)
    parallel = jit(_renamed(func, "_parallel", {"PARALLEL_TWIN": True}), parallel=True,
                   **options)
    return serial, parallel


def _needs_copy(func, serial, constants, _seen=None):
    """Whether ``func`` uses, itself or through the compiled functions it calls
    (recursively), a ``<kernel>_parallel`` twin (when ``serial``) or a global
    named in ``constants``."""
    if _seen is None:
        _seen = set()
    if id(func) in _seen:
        return False
    _seen.add(id(func))
    glb = func.__globals__
    for name in func.__code__.co_names:
        obj = glb.get(name)
        if name in constants:
            return True
        if isinstance(obj, CPUDispatcher):
            if serial and name.endswith("_parallel"):
                return True
            if _needs_copy(obj.py_func, serial, constants, _seen):
                return True
    return False


def specialised_copy(dispatcher, serial=False, constants=None, _memo=None):
    """A compiled copy of ``dispatcher`` specialised at compile time.

    ``serial``: every ``<kernel>_parallel`` global it calls (directly or through
    the compiled functions it calls) is bound to ``<kernel>_serial``, so the copy
    links no parallel region and Numba compiles none of the ``parallel=True``
    twins for it.  ``constants``: globals to replace (``{"SHORTCUTS": False}``);
    Numba freezes globals and prunes the branches a constant decides, so the
    code they guard is never typed nor compiled.  Functions that need neither
    are shared, not copied.  A copy gives bitwise the original's results
    wherever the original would take the same branches and serial twins, which
    is how ``network.Network`` uses them.  Copies get their own qualname (a
    suffix naming the specialisation), hence their own cache files.  Under
    ``NUMBA_DISABLE_JIT`` (no dispatchers) the function is returned as it is.
    """
    if not isinstance(dispatcher, CPUDispatcher):
        return dispatcher
    constants = dict(constants or {})
    if _memo is None:
        _memo = {}
    func = dispatcher.py_func
    if id(func) in _memo:
        return _memo[id(func)]
    if not _needs_copy(func, serial, constants):
        return dispatcher
    glb = func.__globals__
    namespace = {k: v for k, v in constants.items() if k in glb}  # one view per copy
    for name in func.__code__.co_names:
        obj = glb.get(name)
        if name in constants:
            continue
        elif serial and name.endswith("_parallel") and isinstance(obj, CPUDispatcher):
            namespace[name] = glb[name[:-len("_parallel")] + "_serial"]
        elif isinstance(obj, CPUDispatcher):
            namespace[name] = specialised_copy(obj, serial, constants, _memo)
    suffix = "".join(["_serial" if serial else ""]
                     + [f"_{k.lower()}_{v}" for k, v in sorted(constants.items())])
    options = {k: v for k, v in dispatcher.targetoptions.items()
               if k not in ("nopython", "boundscheck")}
    copy = lock_cache(numba.njit(cache=CACHE, **options)(_renamed(func, suffix, namespace)))
    copy.__name__ = dispatcher.__name__
    _memo[id(func)] = copy
    return copy


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
