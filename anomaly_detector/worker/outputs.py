"""Where a worker's verdicts go: the scored-lines audit file and the incidents file (JSON lines).

The worker writes these bytes through storage.appendfile.AppendFile, one write() per batch, so
several workers can share a file without interleaving inside a record.
"""
import json


def with_message_and_source(records, messages, sources):
    """Add "message" and "source" to each JSON record line (the scored_lines layout, docs/cli.md).

    records: bytes of n JSON lines ending in "}\\n"; messages: n str; sources: one name for all
    lines or n names. Per-line Python, so only used when [outputs] scored_lines is set.
    """
    if isinstance(sources, str):
        sources = [sources] * len(messages)
    tails = {name: ',"source":%s}\n' % json.dumps(name, ensure_ascii=False) for name in set(sources)}
    lines = records.split(b"\n")
    out = []
    for line, message, source in zip(lines, messages, sources):
        out.append(line[:-1].decode("utf-8"))
        out.append(',"message":')
        out.append(json.dumps(message, ensure_ascii=False))
        out.append(tails[source])
    return "".join(out).encode("utf-8")


def incident_lines(incidents):
    """JSON lines of incident records (dicts from the detection engine)."""
    return "".join(json.dumps(i, ensure_ascii=False, sort_keys=True) + "\n" for i in incidents).encode("utf-8")
