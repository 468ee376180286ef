"""The kernel cache: which directory is chosen, what happens when none is writable, the compile
progress, entry kernels refusing other types once prepared, and the after-fork census."""
import io
import os

import numpy as np
import pytest

from anomaly_detector import kernel_cache, kernel_types


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No NUMBA_CACHE_DIR or CACHE_DIRECTORY from outside; a private home; restored afterwards."""
    for name in ("NUMBA_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(kernel_cache, "CHOSEN", {})
    yield tmp_path
    monkeypatch.undo()   # NUMBA_CACHE_DIR as it was, then numba reads it again
    from numba.core import config
    config.reload_config()


def test_commands_use_the_per_user_cache(clean_env, monkeypatch):
    path, warning = kernel_cache.use_cache_dir()
    assert path == str(clean_env / "home" / ".cache" / "anomaly-detector" / "numba") and warning is None
    assert os.environ["NUMBA_CACHE_DIR"] == path and os.path.isdir(path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert kernel_cache.use_cache_dir()[0] == str(clean_env / "xdg" / "anomaly-detector" / "numba")


def test_daemon_order_config_then_unit_then_user_then_state(clean_env, monkeypatch):
    state = str(clean_env / "state")
    assert kernel_cache.candidate_dirs("/x/kernels", state) == [
        "/x/kernels", kernel_cache.user_cache_dir(), os.path.join(state, "numba-cache")]
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/anomaly-detector:/other")
    assert kernel_cache.candidate_dirs("", state) == [
        "/var/cache/anomaly-detector/numba", kernel_cache.user_cache_dir(), os.path.join(state, "numba-cache")]


def test_environment_wins(clean_env, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(clean_env / "preset"))
    assert kernel_cache.use_cache_dir(str(clean_env / "configured"))[0] == str(clean_env / "preset")


def _not_a_directory(tmp_path):
    """A path nobody, root included, can create a directory at: its parent is a plain file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    return blocker


def test_unwritable_configured_dir_falls_back_with_one_warning(clean_env):
    blocked = _not_a_directory(clean_env) / "numba"
    path, warning = kernel_cache.use_cache_dir(str(blocked), str(clean_env / "state"))
    assert path == kernel_cache.user_cache_dir()
    assert warning == "[paths] numba_cache_dir %s is not writable; caching kernels in %s" % (blocked, path)


def test_nothing_writable_compiles_in_a_temporary_dir(clean_env, monkeypatch):
    blocker = _not_a_directory(clean_env)
    monkeypatch.setenv("HOME", str(blocker))
    path, warning = kernel_cache.use_cache_dir("", str(blocker / "state"))
    assert kernel_cache.writable(path) and not path.startswith(str(blocker))
    assert warning.startswith("no writable kernel cache (tried %s/.cache/anomaly-detector/numba, " % blocker)
    assert "compile at every start" in warning
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "preset"))   # a unit's Environment= pointing nowhere
    assert kernel_cache.use_cache_dir()[1].startswith("no writable kernel cache (tried %s/preset)" % blocker)


def test_configured_paths_read_before_validation(tmp_path):
    config = tmp_path / "c.ini"
    config.write_text("[paths]\nstate_dir = %s/s\nnumba_cache_dir = %s/k\n[inputs]\n" % (tmp_path, tmp_path))
    assert kernel_cache.configured_paths(str(config)) == (str(tmp_path / "k"), str(tmp_path / "s"))
    config.write_text("[paths]\n")
    assert kernel_cache.configured_paths(str(config)) == ("", "/var/lib/anomaly-detector")
    assert kernel_cache.configured_paths(str(tmp_path / "missing.ini")) == ("", "")


def test_terminal_progress_without_a_terminal_is_two_lines():
    out = io.StringIO()
    progress = kernel_cache.TerminalProgress(out)
    progress.started(0, 46)
    for done in range(1, 47):
        progress.advanced(done, 46)
    progress.finished(46, 46, 61.4, "/home/u/.cache/anomaly-detector/numba")
    assert out.getvalue() == ("compiling 46 numba kernels (first run only)...\n"
                              "compiled 46 of 46 kernels in 61 s; later runs load them from "
                              "/home/u/.cache/anomaly-detector/numba\n")


def test_prepared_entry_kernels_refuse_other_types_and_print_nothing_when_cached():
    from anomaly_detector.worker import joining
    out = io.StringIO()
    kernel_cache.prepare_kernels(kernel_cache.TerminalProgress(out))
    assert kernel_types.pending_signatures() == []
    out = io.StringIO()
    assert kernel_cache.prepare_kernels(kernel_cache.TerminalProgress(out)) == 0 and out.getvalue() == ""
    buf = np.frombuffer(b"ab\ncd", np.uint8)
    spans = np.array([0, 3], np.int64), np.array([2, 5], np.int64)
    versions = len(joining.join_lines.overloads)     # 1, or more when a test before typed it lazily
    assert joining.join_lines(buf, *spans).tobytes() == b"ab\ncd\n"          # read-only buffer
    assert joining.join_lines(buf.copy(), *spans).tobytes() == b"ab\ncd\n"   # writable: same version
    with pytest.raises(TypeError):
        joining.join_lines(buf.astype(np.int16), *spans)                 # no signature: refused, not compiled
    assert len(joining.join_lines.overloads) == versions


def test_kernels_loaded_at_first_call_refuse_other_types_like_prepared_ones():
    from anomaly_detector.parsing import header_kernels  # noqa: F401  (kernels this test never calls)
    from anomaly_detector.worker import joining
    kernel_types.load_on_first_call()
    pending = {id(d) for d, _sig in kernel_types.pending_signatures()}
    assert id(joining.join_lines) in pending            # nothing loaded yet
    buf = np.frombuffer(b"ab\ncd", np.uint8)
    spans = np.array([0, 3], np.int64), np.array([2, 5], np.int64)
    assert joining.join_lines(buf.copy(), *spans).tobytes() == b"ab\ncd\n"   # writable: the declared version
    assert id(joining.join_lines) not in {id(d) for d, _sig in kernel_types.pending_signatures()}
    versions = len(joining.join_lines.overloads)
    assert joining.join_lines(buf, *spans).tobytes() == b"ab\ncd\n"
    with pytest.raises(TypeError) as refused:
        joining.join_lines(buf.astype(np.int16), *spans)
    assert kernel_types.is_type_mismatch(refused.value)
    assert len(joining.join_lines.overloads) == versions
    never_called = [d for d, _sigs in kernel_types.ENTRY_KERNELS if "_compile_for_args" in vars(d)]
    assert never_called
    assert kernel_types.allow_late_compiles() is True    # their first-call hooks go too
    assert not [d for d in never_called if "_compile_for_args" in vars(d)]


def test_census_sees_a_kernel_typed_lazily():
    from anomaly_detector.parsing import header_kernels
    dispatchers = kernel_cache.kernel_dispatchers()
    assert header_kernels.ws_len_at in dispatchers
    before = kernel_cache.typed_kernels(dispatchers)
    buf = np.frombuffer(b"  x", np.uint8).copy()
    header_kernels.ws_len_at(buf, 0, 3)
    header_kernels.ws_len_at(np.frombuffer(b"  x", np.uint8), np.int32(0), np.int32(3))
    after = kernel_cache.typed_kernels(dispatchers)
    grown = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    assert grown.get("anomaly_detector.parsing.header_kernels.ws_len_at", 0) >= 1, grown


COLD_SCRIPT = """
import sys
from anomaly_detector import kernel_cache
path, warning = kernel_cache.use_cache_dir()
import anomaly_detector.metrics.sketch, anomaly_detector.parsing.framing, anomaly_detector.parsing.sanitize
import anomaly_detector.worker.joining
lazy = sys.argv[1:] == ["lazy"]
from anomaly_detector import kernel_types
before = len(kernel_types.pending_signatures())
compiled = kernel_cache.prepare_kernels(kernel_cache.TerminalProgress(sys.stderr), lazy=lazy)
print(compiled, path, before - len(kernel_types.pending_signatures()))
"""


def test_a_cold_cache_compiles_with_progress_then_loads_silently(tmp_path):
    """Two real processes on an empty cache: the first compiles (in forked compilers when there are
    several CPUs) and says so on stderr, the second loads everything and prints nothing."""
    import subprocess
    import sys
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=os.getcwd())
    env.pop("NUMBA_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", COLD_SCRIPT] + args, env=env, capture_output=True, text=True,
                           timeout=600) for args in (["lazy"], [], ["lazy"])]
    cache = str(tmp_path / "anomaly-detector" / "numba")
    first, second, third = runs
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["4", cache, "4"]    # lazy, but a cold cache compiles everything at once
    assert first.stderr.startswith("compiling 4 numba kernels (first run only)...\n"), first.stderr
    assert first.stderr.endswith("compiled 4 of 4 kernels in %s s; later runs load them from %s\n"
                                 % (first.stderr.split(" in ")[1].split(" s;")[0], cache)), first.stderr
    assert second.returncode == 0 and second.stdout.split() == ["0", cache, "4"] and second.stderr == "", second.stderr
    assert third.returncode == 0 and third.stdout.split() == ["0", cache, "0"] and third.stderr == "", third.stderr


def test_log_progress_start_steps_and_end(caplog, monkeypatch):
    statuses = []
    clock = iter([100.0, 101.0, 111.0, 111.5])
    monkeypatch.setattr(kernel_cache.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/var/cache/anomaly-detector/numba")
    progress = kernel_cache.LogProgress(statuses.append)
    with caplog.at_level("INFO", logger="anomaly_detector.kernel_cache"):
        progress.started(0, 46)        # t=100
        progress.advanced(1, 46)       # t=101: too soon to log again
        progress.advanced(2, 46)       # t=111: logged
        progress.finished(46, 46, 58.3, "/var/cache/anomaly-detector/numba")
    assert [r.getMessage() for r in caplog.records] == [
        "compiling numba kernels into /var/cache/anomaly-detector/numba (first start after an install or upgrade): "
        "46 of 46 to go",
        "compiling numba kernels: 2/46",
        "compiled 46 of 46 numba kernels in 58.3 s (cached in /var/cache/anomaly-detector/numba)"]
    assert statuses == ["compiling kernels %d/46 (first start only)" % k for k in (0, 1, 2)]


def test_a_refused_type_can_be_let_through_once_for_good():
    from anomaly_detector.worker import joining
    kernel_cache.prepare_kernels(kernel_cache.TerminalProgress(io.StringIO()))
    buf = np.frombuffer(b"ab\ncd", np.uint8)
    narrow = np.array([0, 3], np.int32), np.array([2, 5], np.int32)
    try:
        joining.join_lines(buf, *narrow)
    except TypeError as exc:
        assert kernel_types.is_type_mismatch(exc)
    else:
        raise AssertionError("prepared kernels refuse undeclared types")
    assert kernel_types.allow_late_compiles() is True
    assert kernel_types.allow_late_compiles() is False
    assert joining.join_lines(buf, *narrow).tobytes() == b"ab\ncd\n"


def test_a_modules_compile_cost_counts_the_helpers_its_kernels_compile_with():
    """The cold compile hands out modules longest first. The miner's entry kernels are short but compile
    long helpers (span_tokens, inlined ones: half of a cold compile): ranked by its entries alone it went
    sixth, so the compile ended ~15% later on 2 CPUs."""
    from anomaly_detector.parsing import miner_kernels
    name = miner_kernels.__name__
    entries = sum(kernel_cache._source_size(d) for d, _ in kernel_types.ENTRY_KERNELS if d.py_func.__module__ == name)
    helpers = kernel_cache._source_size(miner_kernels.span_tokens) + kernel_cache._source_size(miner_kernels._mask_token)
    assert entries > 0 and helpers > 0
    assert kernel_cache._module_cost(name) >= entries + helpers
    assert kernel_cache._module_cost("anomaly_detector.not_imported") == 0


def test_uncached_compares_each_kernels_index_with_its_source(tmp_path):
    """A kernel counts as cached when an index file of its own (module.qualname-*.nbi) is at least as new
    as its source; another kernel's index, a missing directory or an older index do not count."""
    import types
    source = tmp_path / "mod_kernels.py"
    source.write_text("def scan(): pass\ndef scan_all(): pass\ndef other(): pass\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    namespace = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)

    def fake(name, where):
        return types.SimpleNamespace(py_func=namespace[name], stats=types.SimpleNamespace(cache_path=str(where)))
    (cache / "mod_kernels.scan-1.py311.nbi").write_bytes(b"")
    (cache / "mod_kernels.scan_all-2.py311.nbc").write_bytes(b"")     # data without an index
    old = cache / "mod_kernels.other-3.py311.nbi"
    old.write_bytes(b"")
    os.utime(old, (os.path.getmtime(source) - 60, os.path.getmtime(source) - 60))
    pending = [(fake("scan", cache), "sig"), (fake("scan_all", cache), "sig"), (fake("other", cache), "sig"),
               (fake("scan", tmp_path / "missing"), "sig")]
    assert [(d.py_func.__name__, d.stats.cache_path) for d, _ in kernel_cache.uncached(pending)] == [
        ("scan_all", str(cache)), ("other", str(cache)), ("scan", str(tmp_path / "missing"))]


def test_uncached_asks_numba_about_an_index_older_than_its_source(tmp_path):
    """numba stamps an index with a hash of its source's text: a source touched without a change (a
    checkout, a reinstall) keeps its kernel cached, and uncached says so instead of having every start
    fork the compilers; a source whose text changed is uncached."""
    import importlib.util
    source = tmp_path / "touched_kernels.py"
    text = "from numba import njit\n\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n"
    source.write_text(text)

    def load():
        spec = importlib.util.spec_from_file_location("touched_kernels", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.twice
    assert load()(2) == 4     # compiled and cached
    later = os.path.getmtime(source) + 60
    os.utime(source, (later, later))
    assert kernel_cache.uncached([(load(), "sig")]) == []
    source.write_text(text + "# changed\n")
    os.utime(source, (later + 60, later + 60))
    changed = load()
    assert [d for d, _ in kernel_cache.uncached([(changed, "sig")])] == [changed]
