"""bench/trace_series.py: one series of a log stepped through the series kernel, its shift test shown."""
import io
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench import trace_series  # noqa: E402


def _log(tmp_path, syslog=False):
    """Two days of a latency every 30 s, x6 from 36 hours on, and unrelated lines between."""
    rng = np.random.default_rng(4)
    t0 = 1772668800.0    # 2026-03-05T00:00:00Z
    lines = []
    for k in range(5760):
        t = t0 + 30.0 * k
        ms = 120.0 * math.exp(rng.normal(0, 0.3)) * (6.0 if k >= 4320 else 1.0)
        stamp = trace_series.datetime.datetime.fromtimestamp(t, trace_series.datetime.timezone.utc)
        head = stamp.strftime("%b %d %H:%M:%S") if syslog else stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        lines.append("%s db-1 postgres[42]: LOG:  duration: %.3f ms  statement: SELECT 1" % (head, ms))
        lines.append("%s db-1 cron[7]: job ran in %d ms" % (head, 5))
    path = tmp_path / "log"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_values_are_read_from_iso_and_syslog_lines(tmp_path):
    iso = trace_series.read_values(_log(tmp_path), r"duration: ([0-9.]+) ms", 2026)
    syslog = trace_series.read_values(_log(tmp_path, syslog=True), r"duration: ([0-9.]+) ms", 2026)
    assert len(iso) == len(syslog) == 5760
    assert [t for t, _ in iso] == [t for t, _ in syslog]
    assert iso[0][0] == 1772668800.0 and iso[-1][1] > 300.0


def test_a_step_shows_as_a_fired_shift_and_its_excursion_in_the_window(tmp_path):
    values = trace_series.read_values(_log(tmp_path), r"duration: ([0-9.]+) ms", 2026)
    out = io.StringIO()
    start = 1772668800.0 + 36 * 3600.0
    trace_series.trace(values, start - 600.0, start + 3600.0, 1.0, 10, out)
    text = out.getvalue()
    assert "shift-up" in text
    assert "<- in the window" in text


def test_no_matching_line_is_one_error_and_exit_2(tmp_path, capsys):
    assert trace_series.main([_log(tmp_path), "--value", r"nothing ([0-9]+)"]) == 2
    assert "no line" in capsys.readouterr().err
