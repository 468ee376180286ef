"""Entry kernels: the numba kernels Python calls, declared with explicit argument types.

`@entry(signature, cache=True)` is `@njit(cache=True)` plus a record of the signature(s) the code
calls it with. compile_entry_kernels() (kernel_cache.prepare_kernels: the daemon's warm-up before it
forks, a command before it runs) compiles each, or loads it from the kernel cache, then forbids
other argument types: warm-up compiles exactly what runs, a forked worker never compiles, and a
caller passing another type gets a TypeError instead of a silent compile. Compiling after import
rather than at decoration lets a kernel call helpers defined further down its module, and keeps
imports (and --help) fast. Generic helpers called only from kernels stay lazy, typed by callers.
Arrays are C-contiguous. Byte buffers are typed read-only: numba converts a writable array to a
read-only one, so one compiled version serves both (np.frombuffer gives read-only arrays).
"""
from numba import njit, types
from numba.core.caching import NullCache

INT32, INT64, UINT64, FLOAT64, BOOL = types.int32, types.int64, types.uint64, types.float64, types.boolean


def _array(dtype, ndim, readonly=False):
    return types.Array(dtype, ndim, "C", readonly=readonly)


BYTES = _array(types.uint8, 1, readonly=True)
U8_1D, U8_2D = _array(types.uint8, 1), _array(types.uint8, 2)
I8_1D, I8_2D = _array(types.int8, 1), _array(types.int8, 2)
I16_1D = _array(types.int16, 1)
I32_1D, I32_2D = _array(types.int32, 1), _array(types.int32, 2)
I64_1D, I64_2D = _array(types.int64, 1), _array(types.int64, 2)
I64_1D_RO = _array(types.int64, 1, readonly=True)
U64_1D, U64_2D = _array(types.uint64, 1), _array(types.uint64, 2)
F32_1D, F32_2D = _array(types.float32, 1), _array(types.float32, 2)
F64_1D, F64_2D, F64_3D = _array(types.float64, 1), _array(types.float64, 2), _array(types.float64, 3)
BOOL_1D = _array(types.boolean, 1)


def tuple_of(item, count):
    """A tuple of `count` values of one type (numba UniTuple)."""
    return types.UniTuple(item, count)


def tuple_of_items(*items):
    """A tuple of values of the given types, one each (a group of state arrays passed as one argument)."""
    return types.Tuple(items)


def inline_into_callers(*helpers):
    """Have numba inline these njit helpers into the kernels that call them: its IR-level inlining, as
    @njit(inline="always") does, read when a caller compiles (so call this at import, before any
    kernel is compiled or loaded). For a helper called once per element of a hot loop: a call that is
    not inlined passes each array argument as its ~7 fields (data, shape, strides, ...), which in
    series_kernels.step and its helpers cost more than their arithmetic. The same operations run in
    the same order, so the results are the same. Set apart from the helpers' definitions, so that
    their code can change without touching this; a helper stays callable from Python (the twin tests)."""
    for helper in helpers:
        helper.targetoptions["inline"] = "always"


def loop(function):
    """@njit(cache=True) without numba's reference counting: for a kernel's hot loop, split out of the
    kernel into a helper that allocates nothing (the kernel allocates the outputs and passes them in).
    With counting, numba counts every array in and out each time a helper (inlined or called) binds it:
    per element of the loop, in series_kernels.step (five state arrays through a dozen inlined helpers)
    that cost twice the arithmetic, in miner_kernels.shape_hashes (the buffer and scratch through
    mask_line per line) twice the masking. The same operations run in the same order: the results are
    the same. A helper compiled so cannot allocate an array (nor a slice assignment's temporary), nor
    return one. An entry kernel that allocates nothing is compiled so itself (`@entry(signature,
    cache=True, _nrt=False)`), and so is a helper such a loop calls with arrays (`@njit(cache=True,
    _nrt=False)`) or it is inlined into it (inline_into_callers): numba keeps one compiled version of a
    helper per argument types, the first one compiled, and a helper that does not say inherits its
    first caller's counting, so a loop may otherwise call a version a counting kernel compiled first."""
    return njit(cache=True, _nrt=False)(function)


# (dispatcher, [signature, ...]) of every entry kernel defined so far, in definition order.
ENTRY_KERNELS = []
_compiled = set()   # ids of dispatchers loaded, compiling forbidden
_deferred = set()   # ids of dispatchers whose first call loads them (load_on_first_call)


def entry(signatures, **options):
    """Decorator: an njit kernel with its explicit signature (an argument-type tuple) or list of them."""
    listed = list(signatures) if isinstance(signatures, list) else [signatures]

    def decorate(function):
        dispatcher = njit(**options)(function)
        ENTRY_KERNELS.append((dispatcher, listed))
        return dispatcher
    return decorate


def pending_signatures():
    """[(dispatcher, signature)] of imported entry kernels not compiled or loaded yet."""
    return [(d, sig) for d, sigs in ENTRY_KERNELS if id(d) not in _compiled for sig in sigs]


def compile_entry_kernels(each=None, on_error=None):
    """Compile (or load from the cache) every pending signature, then forbid other types.

    each(dispatcher) is called after every signature (progress display). A cache that cannot be
    read or written (OSError) is dropped for that kernel after on_error(dispatcher, exc): it is
    compiled in memory instead."""
    for dispatcher, sigs in ENTRY_KERNELS:
        if id(dispatcher) not in _compiled:
            _prepare(dispatcher, sigs, each, on_error)


def _prepare(dispatcher, sigs, each=None, on_error=None):
    _unhook(dispatcher)
    for sig in sigs:
        try:
            dispatcher.compile(sig)
        except OSError as exc:
            if on_error is not None:
                on_error(dispatcher, exc)
            dispatcher._cache = NullCache()   # numba's own no-cache object
            dispatcher.compile(sig)
        if each is not None:
            each(dispatcher)
    dispatcher.disable_compile()
    _compiled.add(id(dispatcher))


def load_on_first_call(on_error=None):
    """Like compile_entry_kernels, but each kernel is loaded when it is first called.

    For a command in one process whose kernels are all in the cache: loading the ~50 kernels takes
    ~0.5 s and a run needs only some of them (a JSON replay no header kernels). Not for the daemon:
    a forked worker must find its kernels loaded. numba asks the dispatcher's `_compile_for_args`
    for a version when a call matches none; the hook shadows it on the instance, loads the declared
    signatures, forbids others and hands the call back to the dispatcher, which then refuses types no
    signature covers as a prepared kernel does."""
    for dispatcher, sigs in ENTRY_KERNELS:
        if id(dispatcher) in _compiled or "_compile_for_args" in vars(dispatcher):
            continue

        def first_call(*_args, _dispatcher=dispatcher, _sigs=sigs, **_kws):
            _prepare(_dispatcher, _sigs, on_error=on_error)
            return _dispatcher
        dispatcher._compile_for_args = first_call
        _deferred.add(id(dispatcher))


def _unhook(dispatcher):
    vars(dispatcher).pop("_compile_for_args", None)
    _deferred.discard(id(dispatcher))


def is_type_mismatch(exc):
    """True when exc is an entry kernel refusing argument types no signature covers."""
    return isinstance(exc, TypeError) and str(exc).startswith("No matching definition for argument type(s)")


def allow_late_compiles():
    """Let every prepared entry kernel compile again (a worker met types nobody declared: better a slow
    batch than lines lost); True the first time, False when already allowed."""
    if not _compiled and not _deferred:
        return False
    forget_prepared()
    return True


def forget_prepared():
    """Every entry kernel lazy again: compiling allowed, first-call hooks gone (tests, late compiles)."""
    for dispatcher, _sigs in ENTRY_KERNELS:
        _unhook(dispatcher)
        dispatcher.disable_compile(False)
    _compiled.clear()
