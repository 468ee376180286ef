"""Write mined lines in the Loghub layout: <name>_structured.csv and <name>_templates.csv.

Used by commands/parse.py; the files are what Loghub's benchmark tools (and bench/loghub_metrics.py) read.
"""
import csv
import os

STRUCTURED_SUFFIX = "_structured.csv"
TEMPLATES_SUFFIX = "_templates.csv"


def event_id(tid):
    """The EventId text of a template id."""
    return "E%d" % tid


def write_loghub(output_dir, name, header_fields, rows, templates):
    """Write both files for input `name` (its basename) into output_dir; return their paths.

    header_fields: the log format's field names other than Content, in order.
    rows: iterable of (line_id, {field: value}, content, tid, template, [param, ...]).
    templates: iterable of (tid, template, occurrences).
    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    os.makedirs(output_dir, exist_ok=True)
    structured = os.path.join(output_dir, name + STRUCTURED_SUFFIX)
    tmpl_path = os.path.join(output_dir, name + TEMPLATES_SUFFIX)
    with _atomic(structured) as f:
        out = csv.writer(f)
        out.writerow(["LineId", *header_fields, "Content", "EventId", "EventTemplate", "ParameterList"])
        for line_id, fields, content, tid, template, params in rows:
            out.writerow([line_id, *(fields.get(k, "") for k in header_fields), content, event_id(tid), template,
                          repr(list(params))])
    with _atomic(tmpl_path) as f:
        out = csv.writer(f)
        out.writerow(["EventId", "EventTemplate", "Occurrences"])
        for tid, template, count in templates:
            out.writerow([event_id(tid), template, count])
    return structured, tmpl_path


class _atomic:
    def __init__(self, path):
        self.path = path
        self.tmp = "%s.tmp-%d" % (path, os.getpid())

    def __enter__(self):
        self.f = open(self.tmp, "w", newline="", encoding="utf-8")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False
