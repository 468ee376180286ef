"""docs/metrics.md lists every metric metrics/names.py declares, and no other (operators read it)."""
import os
import re

from anomaly_detector.metrics.names import METRICS, PREFIX

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "metrics.md")


def test_metrics_page_lists_exactly_the_declared_metrics():
    rows = re.findall(r"^\| `%s([a-z0-9_]+)` \| (\w+) \|" % PREFIX, open(DOC).read(), re.M)
    assert sorted(name for name, _ in rows) == sorted(METRICS)
    assert all(METRICS[name].kind == kind for name, kind in rows)
