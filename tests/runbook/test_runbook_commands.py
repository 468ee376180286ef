"""The blocks of docs/runbook.md marked `# runbook: NAME`, run as written (after its set-up block, with the
variables pointing at a live daemon in a temporary root), and the admin and config-deploy scripts.

The blocks with systemctl, journalctl, sudo, Prometheus or openssl are not marked and not run here: there
is no systemd unit in the test root (the pid-file blocks beside them are run instead)."""
import os
import re
import subprocess
import tarfile
import threading
import time

import numpy as np

from tests.integration.daemon_harness import ROOT
from tests.runbook.runbook_env import Installed

DOC = os.path.join(ROOT, "docs", "runbook.md")
BLOCK = re.compile(r"```(?:sh|bash)\n# runbook: ([^\n]+)\n(.*?)```", re.S)


def doc_blocks():
    with open(DOC) as f:
        return {name.strip(): body for name, body in BLOCK.findall(f.read())}


def run_block(site, name, **extra):
    blocks = doc_blocks()
    script = blocks["set-up"] + "\n" + blocks[name]
    return subprocess.run(["sh", "-c", script], env=site.env(**extra), capture_output=True, text=True,
                          timeout=120, cwd=site.root)


def test_every_marked_runbook_block_works_verbatim_on_a_live_daemon(tmp_path):
    blocks = doc_blocks()
    assert len(blocks) >= 15, sorted(blocks)
    site = Installed(tmp_path)
    rng = np.random.default_rng(7)
    now = time.time() // 60 * 60
    try:
        site.daemon.start()
        site.write(rng, now - 3600, now - 60, rate=1.0)
        site.wait_processed(site.lines_written)
        pid = site.supervisor_pid()

        def ok(name, **extra):
            done = run_block(site, name, **extra)
            assert done.returncode == 0, (name, done.stdout, done.stderr)
            assert "grep: " not in done.stderr and "integer expression" not in done.stderr, (name, done.stderr)
            return done.stdout

        assert ok("supervisor") == "running, pid %d\n" % pid
        assert '"status": "healthy"' in ok("health")

        assert "idle: no new line arrived" in ok("processing", SAMPLE_SECONDS="2")
        writer = threading.Timer(0.5, site.write, (rng, now - 60, now, 20.0))
        writer.start()
        out = ok("processing", SAMPLE_SECONDS="4")
        writer.join()
        assert "processing is active" in out, out

        out = ok("resources")
        assert re.search(r"^anomaly_detector_cpu_usage_percent \S+$", out, re.M), out
        assert re.search(r"^anomaly_detector_memory_usage_percent \S+$", out, re.M), out
        assert "anomaly_detector_alerts_generated_total 0" in ok("alerts")
        assert ok("error log") == ""
        assert len(ok("queues").splitlines()) == 5
        assert len(ok("latency").splitlines()) == 3
        assert ok("error rate") == "error rate: 0.00%\n"
        assert "capacity used: " in ok("capacity")
        assert "last 7 days: " in ok("log storage")
        assert "configuration valid" in ok("validate")
        assert "GET /health" in ok("access")
        assert str(pid) in ok("cpu") and "ad-worker-0" in ok("cpu")

        backup_dir = os.path.join(site.root, "weekly")
        ok("models backup", BACKUP_DIR=backup_dir)
        (archive,) = [n for n in os.listdir(backup_dir) if n.startswith("models-")]
        with tarfile.open(os.path.join(backup_dir, archive)) as tar:
            assert "baselines/worker-0/detection.json" in tar.getnames()

        log_file = os.path.join(site.daemon.dir, "log", "anomaly-detector.log")
        ok("memory relief")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and open(log_file).read().count("memory relief in ") < 3:
            time.sleep(0.5)
        assert open(log_file).read().count("memory relief in ") >= 3   # supervisor, workers, input, sidecar

        out = ok("backpressure")
        assert out.count('"backpressure"') == 2, out
        admin = site.daemon.labelled("admin_requests_total")
        assert admin[(("action", "enable-backpressure"), ("status", "200"))] == 1, admin
        assert admin[(("action", "disable-backpressure"), ("status", "200"))] == 1, admin
        ok("tier4 and batch size")
        assert site.daemon.metric("runtime_tier4_enabled") == 0
        assert site.daemon.metric("runtime_batch_size") == 2000

        out = ok("reload")
        assert "anomaly_detector_config_last_reload_successful 1" in out, out
        assert 'anomaly_detector_config_reloads_total{result="applied"} 1' in out, out
        site.daemon.wait_healthy(60)
        assert site.daemon.metric("runtime_tier4_enabled") == 1      # the file's settings again
    finally:
        site.stop()


def test_the_original_unanchored_grep_reads_help_and_type_lines(tmp_path):
    """Why the greps are anchored: the original command gets three words, not a count."""
    site = Installed(tmp_path)
    try:
        site.daemon.start()
        cmd = 'curl -s "$BASE_URL/metrics" | grep "anomaly_detector_logs_processed_total" | awk \'{print $2}\''
        original = subprocess.run(["sh", "-c", cmd], env=site.env(), capture_output=True, text=True, timeout=30)
        assert original.stdout.split() == ["HELP", "TYPE", "0"], original.stdout
        anchored = cmd.replace('grep "anomaly_detector_logs_processed_total"',
                               "grep '^anomaly_detector_logs_processed_total '")
        assert subprocess.run(["sh", "-c", anchored], env=site.env(), capture_output=True, text=True,
                              timeout=30).stdout == "0\n"
    finally:
        site.stop()


def test_admin_and_config_deploy_scripts(tmp_path):
    site = Installed(tmp_path)
    try:
        site.daemon.start()
        done = site.run("anomaly-detector-admin", "set-batch-size", '{"size": 300}')
        assert done.returncode == 0 and '"batch_size": 300' in done.stdout.replace("'", '"'), done.stdout + done.stderr
        assert site.daemon.metric("runtime_batch_size") == 300
        wrong = os.path.join(site.root, "wrong.token")
        with open(wrong, "w") as f:
            f.write("not-the-token-but-long-enough\n")
        done = site.run("anomaly-detector-admin", "disable-tier4", TOKEN_FILE=wrong)
        assert done.returncode == 1 and "HTTP 401" in done.stderr, done.stdout + done.stderr
        assert site.daemon.metric("runtime_tier4_enabled") == 1

        new = os.path.join(site.root, "new-config.ini")
        with open(site.config) as f:
            text = f.read()
        with open(new, "w") as f:
            f.write(text.replace("batch_size = 500", "batch_size = 400"))
        done = site.run("anomaly-detector-config-deploy", new)
        assert done.returncode == 0 and "reload applied" in done.stdout, done.stdout + done.stderr
        site.daemon.wait_healthy(60)
        assert site.daemon.metric("runtime_batch_size") == 400
        assert [n for n in os.listdir(site.etc) if n.startswith("config.ini.backup-")]

        with open(new, "w") as f:
            f.write(text.replace("batch_size = 500", "batch_size = 0"))
        done = site.run("anomaly-detector-config-deploy", new)
        assert done.returncode == 1 and "nothing changed" in done.stderr, done.stdout + done.stderr
        with open(site.config) as f:
            assert "batch_size = 400" in f.read()
    finally:
        site.stop()


def test_scripts_and_runbook_blocks_pass_shellcheck(tmp_path):
    import shutil

    import pytest
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: apt install shellcheck)")
    scripts = [os.path.join(ROOT, "bin", n) for n in sorted(os.listdir(os.path.join(ROOT, "bin")))
               if n.startswith("anomaly-detector-") or n == "build-zipapp"]
    blocks = doc_blocks()
    for name, body in blocks.items():
        path = tmp_path / (re.sub(r"\W+", "-", name) + ".sh")
        path.write_text("#!/bin/sh\n" + (blocks["set-up"] if name != "set-up" else "") + "\n" + body)
        scripts.append(str(path))
    done = subprocess.run(["shellcheck", "-s", "sh", *scripts], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
