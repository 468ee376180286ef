"""The compiled-kernel cache: where numba keeps compiled kernels, and compiling them once, visibly.

Commands and the daemon choose the directory here (use_cache_dir) and set NUMBA_CACHE_DIR before
any module defining a kernel is imported: numba fixes a kernel's cache location when the kernel
is defined. prepare_kernels() then compiles, or loads, every entry kernel (kernel_types.py) and,
only when something has to be compiled, shows progress: on stderr for a command (cli.py), in the
log for the daemon (worker/warmup.py). typed_kernels() lets a forked worker notice a kernel typed
after warm-up (worker/detector.py). Nothing here imports numba before the directory is chosen.
"""
import atexit
import inspect
import logging
import os
import shutil
import struct
import sys
import tempfile
import time

from anomaly_detector.supervisor import proctitle

log = logging.getLogger(__name__)
APP_DIR = "anomaly-detector"
LOG_EVERY_SECONDS = 10.0   # the daemon logs compile progress at most this often
CHOSEN = {}                # what use_cache_dir chose in this process: {"dir": path, "warning": text or None}


def user_cache_dir():
    """The per-user cache the commands use: $XDG_CACHE_HOME or ~/.cache, then anomaly-detector/numba."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, APP_DIR, "numba")


def candidate_dirs(numba_cache_dir="", state_dir=""):
    """Directories to cache kernels in, in order of preference; the first writable one is used.

    [paths] numba_cache_dir when set, systemd's CacheDirectory= ($CACHE_DIRECTORY), the per-user
    cache shared with the commands, then <state_dir>/numba-cache (a service user without a home)."""
    found = [numba_cache_dir] if numba_cache_dir else []
    unit = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if unit:
        found.append(os.path.join(unit, "numba"))
    found.append(user_cache_dir())
    if state_dir:
        found.append(os.path.join(state_dir, "numba-cache"))
    return found


def writable(path):
    """True when path is (or can be made) a directory this process can create files in."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def use_cache_dir(numba_cache_dir="", state_dir=""):
    """Point NUMBA_CACHE_DIR at the kernel cache; returns (directory, warning or None).

    NUMBA_CACHE_DIR set by the environment (a unit's Environment=) wins. When no candidate is
    writable, kernels go to a temporary directory removed at exit: they compile at every start,
    which the one-line warning says, but nothing fails."""
    preset = os.environ.get("NUMBA_CACHE_DIR")
    tried = [preset] if preset else candidate_dirs(numba_cache_dir, state_dir)
    CHOSEN["warning"] = None
    for path in tried:
        if writable(path):
            if numba_cache_dir and path != numba_cache_dir and not preset:
                CHOSEN["warning"] = "[paths] numba_cache_dir %s is not writable; caching kernels in %s" % (
                    numba_cache_dir, path)
            return _set(path), CHOSEN["warning"]
    path = tempfile.mkdtemp(prefix="anomaly-detector-numba-")
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))
    CHOSEN["warning"] = ("no writable kernel cache (tried %s): numba kernels compile at every start; set "
                         "[paths] numba_cache_dir or NUMBA_CACHE_DIR to a writable directory" % ", ".join(tried))
    return _set(path), CHOSEN["warning"]


def _set(path):
    CHOSEN["dir"] = os.environ["NUMBA_CACHE_DIR"] = path
    if "numba" in sys.modules:   # imported already (tests): make numba read the variable again
        from numba.core import config
        config.reload_config()
    return path


def configured_paths(config_path):
    """([paths] numba_cache_dir, state_dir) of a config file, defaults filled, before full validation
    (which may import kernel modules); ("", "") when the file cannot be read."""
    from configobj import ConfigObj
    from configobj.validate import Validator

    from anomaly_detector.config.loader import load_spec
    try:
        cfg = ConfigObj(config_path, configspec=load_spec(), interpolation=False, encoding="utf-8", file_error=True)
        cfg.validate(Validator(), copy=True)
        paths = cfg["paths"]
        return str(paths.get("numba_cache_dir") or ""), str(paths.get("state_dir") or "")
    except Exception:   # a broken file is reported by the validation that follows, not here
        return "", ""


class TerminalProgress:
    """Compile progress of a command on stderr: a counter on a terminal, a start and an end line otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def started(self, done, total):
        if self.tty:
            self._write("\rcompiling kernels %d/%d (first run only)..." % (done, total))
        else:
            self._write("compiling %d numba kernels (first run only)...\n" % total)

    def advanced(self, done, total):
        if self.tty:
            self._write("\rcompiling kernels %d/%d (first run only)..." % (done, total))

    def finished(self, compiled, total, seconds, cache_dir):
        self._write("%scompiled %d of %d kernels in %.0f s; later runs load them from %s\n"
                    % ("\r" if self.tty else "", compiled, total, seconds, cache_dir))

    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass   # a closed stderr must not stop the command


class LogProgress:
    """Compile progress of the daemon in its log, and optionally to systemd (status(text))."""

    def __init__(self, status=None):
        self.status, self._last = status, 0.0

    def started(self, done, total):
        log.info("compiling numba kernels into %s (first start after an install or upgrade): %d of %d to go",
                 os.environ.get("NUMBA_CACHE_DIR", "?"), total - done, total)
        self._last = time.monotonic()
        self._status(done, total)

    def advanced(self, done, total):
        if time.monotonic() - self._last >= LOG_EVERY_SECONDS:
            self._last = time.monotonic()
            log.info("compiling numba kernels: %d/%d", done, total)
        self._status(done, total)

    def finished(self, compiled, total, seconds, cache_dir):
        log.info("compiled %d of %d numba kernels in %.1f s (cached in %s)", compiled, total, seconds, cache_dir)

    def _status(self, done, total):
        if self.status is not None:
            self.status("compiling kernels %d/%d (first start only)" % (done, total))


def prepare_kernels(progress=None, lazy=False):
    """Compile or load every imported entry kernel; returns the number that had to be compiled.

    lazy (a command in one process, never the daemon, which forks): when every kernel is in the
    cache, each is loaded at its first call instead (kernel_types.load_on_first_call).

    progress (TerminalProgress, LogProgress) hears of it only once something must be compiled, so a
    fully cached start prints nothing. On a cold cache with several CPUs the kernels compile in
    forked processes in parallel (compile_in_children), and this process then loads them. A cache
    that cannot be written costs a compile, not a crash."""
    from numba.core import event

    from anomaly_detector import kernel_types

    pending = kernel_types.pending_signatures()
    if lazy and not uncached(pending):
        kernel_types.load_on_first_call(on_error=_cache_write_failed)
        return 0
    total = len(pending)
    state = {"done": 0, "announced": False, "began": time.monotonic(), "quiet": False}

    def announce():
        if not state["announced"] and progress is not None:
            state["announced"] = True
            progress.started(state["done"], total)

    class _FirstCompile(event.Listener):
        def on_start(self, ev):
            announce()

        def on_end(self, ev):
            pass

    def each(dispatcher):
        if state["quiet"]:
            return
        state["done"] += 1
        if state["announced"] and progress is not None:
            progress.advanced(state["done"], total)

    compiled = 0
    processes = compile_processes()
    if processes > 1 and len(uncached(pending)) >= MIN_PARALLEL:
        announce()
        compiled = compile_in_children(pending, processes, lambda done: each(None))
        state["quiet"] = True   # what follows loads what the children compiled
    misses_before = _misses()
    with event.install_listener("numba:compile", _FirstCompile()):
        kernel_types.compile_entry_kernels(each, on_error=_cache_write_failed)
    compiled += _misses() - misses_before
    if state["announced"] and progress is not None:
        progress.finished(compiled, total, time.monotonic() - state["began"], os.environ.get("NUMBA_CACHE_DIR", "?"))
    return compiled


MIN_PARALLEL = 4    # fewer kernels to compile than this are not worth a fork


def compile_processes():
    """Processes to compile in on a cold cache: one per CPU this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def uncached(pending):
    """The (dispatcher, signature) pairs whose cache index is missing, or older than their source and not
    current for numba either (_index_is_current): a cold cache, or a first start after an upgrade (a
    guess, only used to decide on forking and on loading at first call)."""
    found = []
    listed = {}   # cache directory -> its index files: one listing per directory, not a glob per kernel
    for dispatcher, sig in pending:
        func = dispatcher.py_func
        source = func.__code__.co_filename
        prefix = "%s.%s-" % (os.path.splitext(os.path.basename(source))[0], func.__qualname__)
        try:
            where = dispatcher.stats.cache_path
            if where not in listed:
                listed[where] = [name for name in os.listdir(where) if name.endswith(".nbi")]
            indexes = [os.path.join(where, name) for name in listed[where] if name.startswith(prefix)]
            fresh = any(os.path.getmtime(i) >= os.path.getmtime(source) for i in indexes)
            fresh = fresh or (bool(indexes) and _index_is_current(dispatcher))
        except (OSError, AttributeError, TypeError):   # no cache for this kernel
            fresh = False
        if not fresh:
            found.append((dispatcher, sig))
    return found


def _index_is_current(dispatcher):
    """Whether numba takes the kernel's cache index as current. numba stamps an index with a hash of its
    source's text, so a source touched without a change (a checkout, a reinstall) keeps its kernels
    cached, and the index, never rewritten, stays older than the source: guessed by mtime alone, every
    start then forked the compilers and loaded every kernel at once (about 0.7 CPU s more, for good)."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())   # {} when stale or of another numba
    except Exception:   # a guess: an index numba cannot read (or a numba without these) is not current
        return False


def compile_in_children(pending, processes, each):
    """Compile pending (dispatcher, signature) pairs in `processes` forked processes that write them
    to the cache and exit; returns how many they compiled (not loaded). Each process takes the next
    module's kernels from a shared pipe, the largest module first (_module_cost): kernels of one
    module share helpers, which a process compiles once, and a long module does not hold up the others.
    each(None) is called as pairs complete. Nothing else runs in this process meanwhile (the
    supervisor has no threads or children yet); a failing child leaves its pairs to the caller."""
    modules = {}
    for index, (dispatcher, _sig) in enumerate(pending):
        modules.setdefault(dispatcher.py_func.__module__, []).append(index)
    groups = [modules[name] for name in sorted(modules, key=lambda name: -_module_cost(name))]
    todo_r, todo_w = os.pipe()
    done_r, done_w = os.pipe()
    os.write(todo_w, b"".join(struct.pack("<H", g) for g in range(len(groups))))   # < 64 KiB: fits the pipe
    os.close(todo_w)
    pids = [_compile_child(pending, groups, todo_r, done_r, done_w) for _ in range(processes)]
    os.close(todo_r)
    os.close(done_w)
    compiled = 0
    while True:
        report = os.read(done_r, 64)
        if not report:
            break
        for flag in report:
            compiled += flag == ord("c")
            each(None)
    os.close(done_r)
    for pid in pids:
        os.waitpid(pid, 0)
    return compiled


def _compile_child(pending, groups, todo_r, done_r, done_w):
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        proctitle.name_child("compile")   # ad-compile: not taken for the supervisor by pgrep -f anomaly_detector
        os.close(done_r)
        while True:
            item = os.read(todo_r, 2)   # reads of 2 bytes from a pipe of 2-byte records stay whole
            if len(item) < 2:
                break
            for index in groups[struct.unpack("<H", item)[0]]:
                dispatcher, sig = pending[index]
                misses = sum(dispatcher.stats.cache_misses.values())
                dispatcher.compile(sig)
                os.write(done_w, b"c" if sum(dispatcher.stats.cache_misses.values()) > misses else b"h")
    except BaseException:   # the parent compiles what is left and reports the error itself
        code = 1
    finally:
        os._exit(code)


def _module_cost(name):
    """A guess of the time a module's kernels take to compile: the source size of every numba function
    it defines, entry kernels and the helpers compiled into them. Entry kernels alone misjudge it: the
    miner's are short, but they inline long helpers and take half of a cold compile, so ordered by
    them it started sixth, late, and the cold compile ended ~15% later on 2 CPUs."""
    from numba.core.dispatcher import Dispatcher
    module = sys.modules.get(name)
    if module is None:
        return 0
    return sum(_source_size(value) for value in list(vars(module).values())
               if isinstance(value, Dispatcher) and getattr(value.py_func, "__module__", None) == name)


def _source_size(dispatcher):
    try:
        return len(inspect.getsource(dispatcher.py_func))
    except (OSError, TypeError):
        return 0


def _misses():
    from anomaly_detector import kernel_types
    return sum(sum(d.stats.cache_misses.values()) for d, _ in kernel_types.ENTRY_KERNELS)


_warned = []


def _cache_write_failed(dispatcher, exc):
    """numba compiled the kernel but could not write it to the cache: warn once and go on."""
    if not _warned:
        _warned.append(exc)
        log.warning("kernel cache %s not writable (%s); kernels compile at every start",
                    os.environ.get("NUMBA_CACHE_DIR", "?"), exc)


def kernel_dispatchers():
    """Every numba dispatcher defined at module level in the package's imported modules."""
    from numba.core.dispatcher import Dispatcher
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("anomaly_detector") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and getattr(value.py_func, "__module__", None) == name:
                found.append(value)
    return found


def typed_kernels(dispatchers):
    """{kernel name: its compiled versions (signatures)}; a worker compares it before and after."""
    return {"%s.%s" % (d.py_func.__module__, d.py_func.__qualname__): len(d.overloads) for d in dispatchers}
