"""Where a worker's verdicts go: the scored-lines audit file and the incidents file (JSON lines).

The worker writes these bytes through storage.appendfile.AppendFile, one write() per batch, so
several workers can share a file without interleaving inside a record.
"""
import json


def with_message_and_source(records, messages, source):
    """Add "message" and "source" to each JSON record line (the scored_lines layout, docs/cli.md).

    records: bytes of n JSON lines ending in "}\\n"; messages: n str. Per-line Python, so only
    used when [outputs] scored_lines is set.
    """
    tail = ',"source":%s}\n' % json.dumps(source, ensure_ascii=False)
    lines = records.split(b"\n")
    out = []
    for line, message in zip(lines, messages):
        out.append(line[:-1].decode("utf-8"))
        out.append(',"message":')
        out.append(json.dumps(message, ensure_ascii=False))
        out.append(tail)
    return "".join(out).encode("utf-8")


def incident_lines(incidents):
    """JSON lines of incident records (dicts from the detection engine)."""
    return "".join(json.dumps(i, ensure_ascii=False, sort_keys=True) + "\n" for i in incidents).encode("utf-8")
