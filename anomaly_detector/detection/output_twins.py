"""Test-only plain-Python twins of the kernels in output_kernels.py (tests compare each kernel with its twin).

Nothing in production imports this module.
"""
import json
import math


def _fixed_py(value, decimals):
    scaled = int(round(abs(float(value)) * 10 ** decimals))
    whole, frac = divmod(scaled, 10 ** decimals)
    digits = ("%0*d" % (decimals, frac)).rstrip("0") or "0"
    return "%s%d.%s" % ("-" if value < 0 and scaled > 0 else "", whole, digits)


def records_py(file_name, first_line, ts, template_id, templates, score, anomaly, tiers, reasons):
    """The twin: same bytes from plain Python. templates {tid: text}, reasons {i: [str]}."""
    parts = []
    for i in range(len(ts)):
        t = int(template_id[i])
        parts.append('{"file": %s, "line": %d, "ts": %s, "template_id": %d, "template": %s, "score": %s, '
                     '"anomaly": %s, "tiers": {"t1": %s, "t2": %s, "t3": %s, "t4": %s}, "reasons": %s}\n' % (
                         json.dumps(file_name, ensure_ascii=False), first_line + i,
                         "null" if math.isnan(ts[i]) else _fixed_py(ts[i], 6), t,
                         json.dumps(templates[t], ensure_ascii=False), _fixed_py(score[i], 2),
                         "true" if anomaly[i] else "false", *(_fixed_py(tiers[k, i], 2) for k in range(4)),
                         json.dumps(reasons.get(i, []), ensure_ascii=False)))
    return "".join(parts).encode("utf-8")
