"""etc/grafana/anomaly-detector.json: a stable uid, the Prometheus data source as a variable used by
every panel, only declared metrics, and every query valid PromQL (promtool checks them as recording
rules; that part skips without promtool, Debian `prometheus`)."""
import json
import os
import re
import shutil
import subprocess

import pytest

from anomaly_detector.metrics.names import METRICS, PREFIX

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(ROOT, "etc", "grafana", "anomaly-detector.json")


def _load():
    with open(DASHBOARD) as f:
        return json.load(f)


def _targets(dashboard):
    return [(panel, target) for panel in dashboard["panels"] if panel["type"] != "row" for target in panel["targets"]]


def test_uid_and_datasource_variable():
    dashboard = _load()
    assert dashboard["uid"] == "anomaly-detector-overview"   # links and provisioning depend on it
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel, target in _targets(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}" == target["datasource"]["uid"], panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_queries_use_declared_metrics_only():
    used = set()
    for _panel, target in _targets(_load()):
        used |= set(re.findall(r"\b%s([a-z0-9_]+)" % PREFIX, target["expr"]))
    assert used and used <= set(METRICS), sorted(used - set(METRICS))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_queries_are_valid_promql(tmp_path):
    rules = [{"record": "dashboard:query_%d" % i, "expr": target["expr"].replace("$instance", ".*")}
             for i, (_panel, target) in enumerate(_targets(_load()))]
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))   # JSON is YAML
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
