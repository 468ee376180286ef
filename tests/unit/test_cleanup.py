"""--cleanup-old-data's choice (commands/cleanup.py select): ages, never the kept generations of a state
file, never undelivered alerts or uncommitted spool, never live logs; and the command's output and lock.
The same command on a live daemon is tests/integration/test_maintenance.py."""
import os
import time

from click.testing import CliRunner

from anomaly_detector import cli
from anomaly_detector.alerting import outbox
from anomaly_detector.commands import cleanup
from anomaly_detector.config.loader import load_config
from anomaly_detector.storage import locks
from anomaly_detector.storage.atomic import write_json_snapshot

OLD = time.time() - 400 * 86400     # older than every *_days default


def make_cfg(tmp_path, extra=""):
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = {d}/state\nlog_dir = {d}/log\n[processing]\nworkers = 2\n[inputs]\n[[app]]\npath = {d}/app.log\n"
                    "[alerting]\n[[f]]\ntype = file\npath = {d}/alerts.jsonl\n{extra}".format(d=tmp_path, extra=extra))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, [p.render() for p in problems]
    return cfg, str(path)


def put(path, data=b"x" * 10, old=True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if old:
        os.utime(path, (OLD, OLD))
    return path


def chosen(cfg):
    return {c.path: c.category for c in cleanup.select(cfg)}


def test_state_files_never_the_kept_generations(tmp_path):
    cfg, _ = make_cfg(tmp_path, "[retention]\nsnapshot_generations = 3\n")
    base = str(tmp_path / "state" / "baselines" / "worker-0" / "templates.json")
    kept = [put(base), put(base + ".prev"), put(base + ".prev2")]
    extra = put(base + ".prev3")
    bad_old = put(base + ".bad-20250101T000000Z")
    bad_new = put(base + ".bad-20991231T000000Z-2", old=False)
    got = chosen(cfg)
    assert got.get(extra) == "state" and got.get(bad_old) == "state"
    assert not set(kept) & set(got) and bad_new not in got


def test_retired_workers_only_when_old_and_not_configured(tmp_path):
    cfg, _ = make_cfg(tmp_path)
    state = tmp_path / "state"
    put(str(state / "baselines" / "worker-1" / "templates.json"))      # configured (workers = 2)
    put(str(state / "statistics" / "worker-3" / "detection.json"))     # retired, old
    put(str(state / "baselines" / "worker-4" / "templates.json"), old=False)   # retired but touched now
    os.utime(state / "statistics" / "worker-3", (OLD, OLD))
    os.utime(state / "baselines" / "worker-1", (OLD, OLD))
    got = chosen(cfg)
    assert got == {str(state / "statistics" / "worker-3"): "workers"}
    held = locks.take(locks.lock_path(str(state), "worker-3"), exclusive=False)   # a worker 3 runs
    try:
        assert chosen(cfg) == {}
    finally:
        locks.release(held)


def _segment(directory, writer, first, last):
    lines = b"".join(b'{"seq":%d,"writer":"%s"}\n' % (s, writer.encode()) for s in range(first, last + 1))
    return put(os.path.join(directory, "%s.%012d.jsonl" % (writer, first)), lines)


def test_outbox_keeps_undelivered_alerts_and_the_newest_segment(tmp_path):
    cfg, _ = make_cfg(tmp_path)
    box = str(tmp_path / "state" / "outbox")
    delivered = _segment(box, "worker-0", 1, 5)
    partly = _segment(box, "worker-0", 6, 12)
    newest = _segment(box, "worker-0", 13, 14)
    other = _segment(box, "worker-1", 1, 3)          # worker-1: nothing delivered
    _segment(box, "worker-1", 4, 4)
    assert chosen(cfg) == {}                         # no checkpoint: nothing was delivered
    outbox.write_checkpoint(box, "f", {"writers": {"worker-0": 10}, "state": {}})
    got = chosen(cfg)
    assert got == {delivered: "outbox"}, got
    outbox.write_checkpoint(box, "f", {"writers": {"worker-0": 14, "worker-1": 4}, "state": {}})
    got = chosen(cfg)
    assert set(got) == {delivered, partly, other}    # never a writer's newest segment
    assert newest not in got


def test_outbox_waits_for_every_sink(tmp_path):
    cfg, _ = make_cfg(tmp_path, "[[g]]\ntype = file\npath = %s/g.jsonl\n" % tmp_path)
    box = str(tmp_path / "state" / "outbox")
    _segment(box, "worker-0", 1, 5)
    _segment(box, "worker-0", 6, 6)
    outbox.write_checkpoint(box, "f", {"writers": {"worker-0": 6}, "state": {}})
    outbox.write_checkpoint(box, "g", {"writers": {"worker-0": 3}, "state": {}})
    assert chosen(cfg) == {}


def test_the_fleet_writers_segments_wait_for_every_sink_but_the_redis_ones(tmp_path):
    """What the alerter read from a redis sink's stream (writer "fleet") is never given to a redis sink, so
    its checkpoint does not hold those segments back; the other sinks' checkpoints do."""
    cfg, _ = make_cfg(tmp_path, "[[fleet]]\ntype = redis\nurl = redis://127.0.0.1:6379/0\nconsume = true\n")
    box = str(tmp_path / "state" / "outbox")
    delivered = _segment(box, "fleet", 1, 5)
    _segment(box, "fleet", 6, 6)
    outbox.write_checkpoint(box, "fleet", {"writers": {}, "state": {}})
    assert chosen(cfg) == {}
    outbox.write_checkpoint(box, "f", {"writers": {"fleet": 6}, "state": {}})
    assert chosen(cfg) == {delivered: "outbox"}


def test_spool_keeps_what_is_not_committed_and_the_last_segment(tmp_path):
    cfg, _ = make_cfg(tmp_path)
    spool = tmp_path / "state" / "spool" / "syslog"
    segs = [put(str(spool / ("%020d.seg" % start)), b"x" * 100) for start in (0, 100, 200)]
    assert chosen(cfg) == {}                          # nothing committed
    write_json_snapshot(str(spool / "committed.json"), "spool_offset", 1, {"committed": 150})
    assert chosen(cfg) == {segs[0]: "spool"}
    write_json_snapshot(str(spool / "committed.json"), "spool_offset", 1, {"committed": 300})
    assert set(chosen(cfg)) == {segs[0], segs[1]}     # the last segment stays (the writer's)


def test_logs_and_dead_letter_only_rotated_and_old(tmp_path):
    cfg, _ = make_cfg(tmp_path)
    log = tmp_path / "log"
    live = put(str(log / "anomaly-detector.log"))
    rotated = [put(str(log / "anomaly-detector.log.1")), put(str(log / "access.log.2.gz")),
               put(str(log / "access.log-20250101"))]
    fresh = put(str(log / "anomaly-detector.log.2"), old=False)
    dead = tmp_path / "state" / "dead-letter"
    dead_live = put(str(dead / "dead-letter.jsonl"))
    dead_rotated = put(str(dead / "dead-letter.jsonl.1"))
    got = chosen(cfg)
    assert {p for p, c in got.items() if c == "logs"} == set(rotated)
    assert {p for p, c in got.items() if c == "dead-letter"} == {dead_rotated}
    assert live not in got and fresh not in got and dead_live not in got


def test_days_keys_set_the_age(tmp_path):
    cfg, _ = make_cfg(tmp_path, "[retention]\nlogs_days = 10\n")
    log = tmp_path / "log"
    nine = put(str(log / "a.log.1"), old=False)
    eleven = put(str(log / "a.log.2"), old=False)
    now = time.time()
    os.utime(nine, (now - 9 * 86400, now - 9 * 86400))
    os.utime(eleven, (now - 11 * 86400, now - 11 * 86400))
    assert chosen(cfg) == {eleven: "logs"}


def test_command_removes_prints_and_counts_bytes(tmp_path):
    cfg, path = make_cfg(tmp_path)
    log = tmp_path / "log"
    a, b = put(str(log / "x.log.1"), b"a" * 1000), put(str(log / "x.log.2.gz"), b"b" * 24)
    live = put(str(log / "x.log"))
    result = CliRunner().invoke(cli.cli, ["--config", path, "--cleanup-old-data"])
    assert result.exit_code == 0, result.output
    assert "removed %s (1000 B)" % a in result.output and "removed %s (24 B)" % b in result.output
    assert "cleanup: 2 removed, 1.0 KiB freed" in result.output
    assert not os.path.exists(a) and not os.path.exists(b) and os.path.exists(live)
    again = CliRunner().invoke(cli.cli, ["--config", path, "--cleanup-old-data"])
    assert again.exit_code == 0 and "cleanup: 0 removed, 0 B freed" in again.output


def test_a_second_cleanup_is_refused_by_the_lock(tmp_path):
    cfg, path = make_cfg(tmp_path)
    put(str(tmp_path / "log" / "x.log.1"))
    fd = locks.take(locks.lock_path(cfg["paths"]["state_dir"], "cleanup"))
    try:
        result = CliRunner().invoke(cli.cli, ["--config", path, "--cleanup-old-data"])
    finally:
        locks.release(fd)
    assert result.exit_code == 3
    assert "another --cleanup-old-data is running" in result.output
    assert os.path.exists(tmp_path / "log" / "x.log.1")


def test_invalid_config_does_nothing(tmp_path):
    _cfg, path = make_cfg(tmp_path)
    with open(path, "a") as f:
        f.write("[retention]\nspool_days = 0\n")
    put(str(tmp_path / "log" / "x.log.1"))
    result = CliRunner().invoke(cli.cli, ["--config", path, "--cleanup-old-data"])
    assert result.exit_code == 1 and "spool_days" in result.output
    assert os.path.exists(tmp_path / "log" / "x.log.1")


def test_two_maintenance_flags_at_once_are_a_usage_error(tmp_path):
    _cfg, path = make_cfg(tmp_path)
    put(str(tmp_path / "log" / "x.log.1"))
    result = CliRunner().invoke(cli.cli, ["--config", path, "--cleanup-old-data", "--optimize-models"])
    assert result.exit_code == 2 and "one at a time" in result.output
    assert os.path.exists(tmp_path / "log" / "x.log.1")
