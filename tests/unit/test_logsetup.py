"""Logging: one file shared by forked processes without torn lines, reopened after rotation."""
import logging
import os

from anomaly_detector.logsetup import LOG_FILE_NAME, setup_logging


def _reset():
    setup_logging(level="WARNING", log_dir=None, to_file=False)


def test_forked_writers_never_interleave(tmp_path):
    path = setup_logging(level="INFO", log_dir=str(tmp_path), process_name="test")
    children = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            log = logging.getLogger("child")
            for i in range(500):
                log.info("child-%d line-%d %s", n, i, "x" * 200)
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    _reset()
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == 2000
    assert all(line.endswith("x" * 200) and " child-" in line for line in lines)


def test_reopens_after_rename_rotation(tmp_path):
    path = setup_logging(level="INFO", log_dir=str(tmp_path))
    log = logging.getLogger("rot")
    log.info("before rotation")
    os.rename(path, path + ".1")
    log.info("after rotation")
    _reset()
    assert "before rotation" in open(path + ".1").read()
    assert "after rotation" in open(path).read()


def test_unwritable_log_dir_falls_back_to_stderr(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = setup_logging(level="INFO", log_dir=str(blocker / "logs"))
    _reset()
    assert path is None
    assert "logging to stderr only" in capsys.readouterr().err


def test_log_file_name_and_level(tmp_path):
    path = setup_logging(level="ERROR", log_dir=str(tmp_path))
    logging.getLogger("lvl").warning("dropped")
    logging.getLogger("lvl").error("kept")
    _reset()
    assert os.path.basename(path) == LOG_FILE_NAME
    text = open(path).read()
    assert "kept" in text and "dropped" not in text


def test_a_crashing_child_logs_one_error_record_with_its_traceback(tmp_path, capfd):
    """The real fork path (ChildSet -> _run_child): an uncaught exception in the target lands in the
    log file as one ERROR record with the traceback, and on stderr."""
    import time

    from anomaly_detector.supervisor.children import EXIT_CHILD_CRASHED, ChildSet, ChildSpec, RestartPolicy

    def target(ctx):
        raise ValueError("broken input %d" % 7)

    path = setup_logging(level="INFO", log_dir=str(tmp_path), process_name="test")
    children = ChildSet(RestartPolicy(crash_loop_limit=1))
    children.add(ChildSpec("input", target, role="input"))
    children.start()
    deadline = time.monotonic() + 30
    while not children.reap() and time.monotonic() < deadline:
        time.sleep(0.01)
    _reset()
    assert children.children["input"].last_exit == EXIT_CHILD_CRASHED
    text = open(path, encoding="utf-8").read()
    records = [r for r in text.split("\n20") if "crashed with an uncaught exception" in r]
    assert len(records) == 1, text
    assert " ERROR [" in records[0] and "child input crashed with an uncaught exception (exit 70)" in records[0]
    assert "Traceback (most recent call last):" in records[0] and "ValueError: broken input 7" in records[0]
    assert "ValueError: broken input 7" in capfd.readouterr().err
