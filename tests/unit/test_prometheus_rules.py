"""etc/prometheus/alerts.yml: every metric it reads is one the daemon declares, and promtool checks the
rules and runs their unit tests (alerts_test.yml). Skipped only when promtool (Debian `prometheus`) is absent."""
import os
import re
import shutil
import subprocess

import pytest

from anomaly_detector.metrics.names import METRICS, PREFIX

RULES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "etc", "prometheus")
PROMTOOL = shutil.which("promtool")


def test_every_metric_in_the_rules_is_declared():
    text = open(os.path.join(RULES_DIR, "alerts.yml")).read()
    used = set(re.findall(r"\b%s([a-z0-9_]+)" % PREFIX, text))
    assert used and used <= set(METRICS), sorted(used - set(METRICS))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
@pytest.mark.parametrize("command", [("check", "rules", "alerts.yml"), ("test", "rules", "alerts_test.yml")])
def test_promtool(command):
    out = subprocess.run([PROMTOOL, *command], cwd=RULES_DIR, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
