"""The page at `/`: what is anomalous now and lately, top templates, tiers and inputs, as one HTML page.

Served by the sidecar's HTTP server (httpd.py routes GET / here); the incidents come from the views
the workers publish every second (incidents_api.WorkerViews, the data of GET /api/incidents), the rest
from page_data.py (the snapshots the workers and the input persist) and the sidecar's Readings
(health, counters, flags).
Server-rendered HTML with inline SVG (svg.py), no script at all: a <meta> refresh reloads it. Every
string that may come from a log line goes through svg.escape_text, and the Content-Security-Policy
forbids every outside resource (and any script, even one that slipped through), so a hostile line
can neither run nor load anything. Work per request is bounded: one page is built at most once a
second (concurrent requests share it) from reads page_data.py bounds.
"""
import base64
import hashlib
import logging
import math
import threading
import time

from anomaly_detector.metrics import page_data
from anomaly_detector.metrics.incidents_api import SituationsView, published_path
from anomaly_detector.metrics.svg import bar_chart, escape_text, number, timeline
from anomaly_detector.storage.layout import worker_paths

MAX_SAMPLES_SHOWN = 5    # an incident keeps five (detection/incidents.py MAX_SAMPLES)
log = logging.getLogger(__name__)
REBUILD_SECONDS = 1.0    # requests within this share one built page: a reload storm costs one build a second
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:20px;margin:16px 0 4px}h1 small{color:#666;font-weight:normal}
h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:28px}
.status{display:inline-block;padding:2px 8px;border-radius:3px;color:#fff}
.healthy{background:#1e8449}.unhealthy{background:#c0392b}
.figures span{margin-right:18px}.muted{color:#666}
article{border:1px solid #ddd;border-left:5px solid #7d3c98;padding:6px 10px;margin:10px 0;border-radius:3px}
article.open{border-left-color:#c0392b}
article h3{font-size:15px;margin:2px 0}.why{font-weight:600;margin:4px 0}
pre{background:#f6f6f6;padding:6px;overflow-x:auto;white-space:pre-wrap;word-break:break-all;margin:4px 0}
code{background:#f6f6f6;padding:0 3px;word-break:break-all}
table{border-collapse:collapse}td,th{border-bottom:1px solid #eee;padding:3px 10px;text-align:left}
td.num{text-align:right}.notes{color:#a04000}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
# Nothing from elsewhere, no script, no plugin, no form, no frame; only our own <style> element (by hash).
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'sha256-%s'; img-src 'none'; script-src 'none'; "
                           "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                           % _STYLE_HASH)
HEADERS = (("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "no-referrer"), ("Cache-Control", "no-store"))
CONTENT_TYPE = "text/html; charset=utf-8"


class Page:
    """Builds the page for the sidecar; `readings` is its Readings (health, control block, workers)."""

    def __init__(self, cfg, readings, views, health=None, clock=time.monotonic):
        http = cfg["http"]
        self.cfg, self.readings, self.views, self.clock = cfg, readings, views, clock
        self.health = health or readings.health     # the sidecar's: its last snapshot's verdict
        self.refresh_seconds = http["page_refresh_seconds"]
        self.max_rows = http["page_max_rows"]
        self.max_bytes = http["page_max_read_mb"] * 2**20
        self.cache = page_data.SnapshotCache(self.max_bytes, self.max_rows)
        self.situations = SituationsView(views, cfg["situations"], published_path(cfg))
        self.skips = page_data.Skips()
        self._lock = threading.Lock()
        self._built = (None, b"")

    def response(self):
        """(status, content type, body, headers) of GET /: 500 with the error (escaped) if the build failed,
        so a bad record costs one page, never the sidecar."""
        try:
            return 200, CONTENT_TYPE, self.body(), HEADERS
        except Exception as exc:
            log.exception("page: building / failed")
            body = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>anomaly_detector: error"
                    "</title></head><body><p>The page could not be built: %s: %s (details in the log)</p></body></html>"
                    % (escape_text(type(exc).__name__), escape_text(exc)))
            return 500, CONTENT_TYPE, body.encode("utf-8"), HEADERS

    def body(self):
        """The page as UTF-8 bytes, built again when the last one is older than REBUILD_SECONDS."""
        with self._lock:
            at, body = self._built
            now = self.clock()
            if at is None or now - at >= REBUILD_SECONDS:
                body = render(self.gather()).encode("utf-8")
                self._built = (now, body)
            return body

    def samples(self):
        return {"page_reads_skipped_total": {(("reason", r),): n for r, n in self.skips.totals().items()}}

    def gather(self):
        """Everything the page shows, as plain data (render() needs nothing else)."""
        notes = []

        def skip(reason, note):
            self.skips.add(reason, note)
            notes.append("%s (%s)" % (note, reason))

        cfg, control, rows = self.cfg, self.readings.control, self.max_rows
        workers = [worker_paths(cfg["paths"]["state_dir"], i) for i in range(len(self.readings.worker_slots))]
        totals = control.counter_totals()
        records = self.views.incidents()     # one per id, its latest state, newest onset first
        still_open = sorted((r for r in records if r.get("status") == "open"),
                            key=lambda r: -_float(r.get("score")))[:rows]
        recent = [r for r in records if r.get("status") == "resolved"][:rows]
        return {
            "name": cfg["service"]["name"], "health": self.health(), "generated": time.time(),
            "refresh_seconds": self.refresh_seconds, "threshold": cfg["detection"]["anomaly_threshold"],
            "figures": {"lines read": totals["lines_read"], "lines scored": totals["lines_processed"],
                        "anomalous lines": totals["anomalies"], "incidents closed": totals["incidents"]},
            "open": still_open, "recent": recent, "max_rows": rows,
            "situations": self._linked(records, rows),
            "templates": page_data.top_templates(workers, self.cache, rows, skip),
            "tiers": page_data.tier_status(cfg, control.flags(), workers, self.cache, skip),
            "inputs": page_data.input_lag(cfg, self.cache, rows, skip),
            "snapshot_seconds": cfg["service"]["snapshot_interval_seconds"],
            "notes": notes,
        }


    def _linked(self, records, rows):
        """The newest situations of several incidents, each with its incidents' records (onset order)."""
        by_id = {r.get("id"): r for r in records}
        linked = [s for s in self.situations.situations() if len(s["incidents"]) > 1][:rows]
        return [(s, [by_id[i] for i in s["incidents"] if i in by_id]) for s in linked]


def render(view):
    """The whole HTML document of a gather() result."""
    name = escape_text(view["name"])
    refresh = ('<meta http-equiv="refresh" content="%d">' % view["refresh_seconds"]
               if view["refresh_seconds"] else "")
    return "".join((
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">', refresh,
        '<meta name="viewport" content="width=device-width">',
        "<title>anomaly_detector: %s</title><style>%s</style></head><body>" % (name, STYLE),
        _header(view), _now(view), _situations(view), _lately(view), _templates(view), _tiers(view), _inputs(view), _footer(view),
        "</body></html>"))


def _header(view):
    health = view["health"]
    status = escape_text(health.get("status", "unknown"))
    reasons = "".join("<li>%s</li>" % escape_text(r) for r in health.get("reasons", []))
    figures = "".join('<span>%s: <b>%s</b></span>' % (escape_text(k), number(v)) for k, v in view["figures"].items())
    return ('<header><h1>anomaly_detector <small>%s</small></h1>'
            '<p><span class="status %s" id="health">%s</span> <span class="muted">%s UTC, %s running</span></p>'
            '%s<p class="figures">%s</p></header>'
            % (escape_text(view["name"]), status, status, _when(view["generated"]),
               _plural(health.get("workers", 0), "worker"),
               "<ul>%s</ul>" % reasons if reasons else "", figures))


def _now(view):
    cards = "".join(_incident(record, True) for record in view["open"])
    return ('<section id="now"><h2>Anomalous now: %s%s</h2>%s</section>'
            % (_plural(len(view["open"]), "open incident"), _cut(len(view["open"]), view, "strongest"),
               cards or '<p class="muted">Nothing open.</p>'))


def _lately(view):
    recent = view["recent"]
    if not recent:
        body = '<p class="muted">No incident closed yet.</p>'
    else:
        body = _incident_timeline(view) + "".join(_incident(record, False) for record in recent)
    return ('<section id="lately"><h2>Lately: %s%s</h2>%s</section>'
            % (_plural(len(recent), "closed incident"), _cut(len(recent), view), body))


def _situations(view):
    """Linked incidents of several sources (docs/situations.md): the first cause, how sure, and a timeline."""
    linked = view.get("situations") or []
    if not linked:
        return ""
    cards = []
    for situation, members in linked:
        cause = situation["first_cause"]
        points = [(_float(r.get("first_seen")), _float(r.get("last_seen")), _float(r.get("score")),
                   "%s %s: %s" % (r.get("source", ""), r.get("kind", ""), r.get("reason", "")),
                   r.get("status") == "open") for r in members]
        end = max([p[1] for p in points] + [_float(situation["last_seen"])])
        span = max(300.0, (end - _float(situation["first_seen"])) * 1.1)
        cards.append("".join((
            '<article class="situation%s" id="situation-%s">' % (" open" if situation.get("status") == "open" else "",
                                                                escape_text(situation["id"])),
            "<h3>%s: probable first cause <b>%s</b> (%s sure), %s</h3>"
            % ("OPEN" if situation.get("status") == "open" else "closed", escape_text(cause["source"]),
               "%d%%" % round(100 * _float(situation["confidence"])), _plural(len(situation["incidents"]), "incident")),
            timeline(points, end + span * 0.02, span, view["threshold"], height=120),
            "<ol>%s</ol>" % "".join("<li>%s</li>" % escape_text(e) for e in situation["evidence"]),
            "</article>")))
    return ('<section id="situations"><h2>Situations: %s%s</h2>%s</section>'
            % (_plural(len(linked), "linked group"), _cut(len(linked), view, "newest"), "".join(cards)))


def _cut(shown, view, which="last"):
    """Says so when a list stopped at page_max_rows."""
    return " (the %s %d: [http] page_max_rows)" % (which, shown) if shown >= view["max_rows"] else ""


def _incident_timeline(view):
    shown = [(r, False) for r in view["recent"]] + [(r, True) for r in view["open"]]
    times = [_float(r.get("first_seen")) for r, _ in shown] + [_float(r.get("last_seen")) for r, _ in shown]
    end = max(times)
    span = max(600.0, (end - min(times)) * 1.05)
    points = [(_float(r.get("first_seen")), _float(r.get("last_seen")), _float(r.get("score")),
               "%s %s in %s: %s" % ("open" if is_open else "closed", r.get("kind", ""), r.get("source", ""),
                                    r.get("reason", "")), is_open) for r, is_open in shown]
    return (timeline(points, end + span * 0.02, span, view["threshold"])
            + '<p class="muted">Score (0-100) against log time, UTC: red open, purple closed, each from first to '
            'last seen; dashed: the anomaly threshold (%s).</p>' % number(float(view["threshold"])))


def _incident(record, is_open):
    """One incident card; a record that is not the shape a worker writes (a hand-edited file) is named, not shown."""
    try:
        return _incident_card(record, is_open)
    except (AttributeError, TypeError, ValueError) as exc:
        return '<article class="incident"><p class="notes">An incident record could not be shown: %s</p></article>' % (
            escape_text(exc))


def _incident_card(record, is_open):
    """One incident: what, where, how strong, why (its reasons, expected against observed) and samples."""
    reasons = [r for r in record.get("reasons", []) if r != record.get("reason")]
    detail = ""
    if record.get("expected") is not None or record.get("observed") is not None:
        detail = " (expected %s, observed %s)" % (escape_text(record.get("expected")),
                                                  escape_text(record.get("observed")))
    template = record.get("template") or ""
    samples = "\n".join(str(s) for s in record.get("samples", [])[:MAX_SAMPLES_SHOWN])
    return "".join((
        '<article class="incident%s" id="incident-%s">' % (" open" if is_open else "", escape_text(record.get("id"))),
        '<h3>%s %s in <b>%s</b>, score %s</h3>' % ("OPEN" if is_open else "closed", escape_text(record.get("kind")),
                                                    escape_text(record.get("source")), number(record.get("score"))),
        '<p class="why">%s%s</p>' % (escape_text(record.get("reason", "")), detail),
        "<ul>%s</ul>" % "".join("<li>%s</li>" % escape_text(r) for r in reasons) if reasons else "",
        '<p class="muted">%s to %s UTC, %s suspicious lines, tiers %s%s</p>'
        % (_when(record.get("first_seen")), _when(record.get("last_seen")), number(record.get("lines", 0)),
           escape_text(", ".join(record.get("tiers", [])) or "-"),
           "; template <code>%s</code>" % escape_text(template) if template else ""),
        "<pre>%s</pre>" % escape_text_lines(samples) if samples else "",
        "</article>"))


def escape_text_lines(text):
    """Sample lines one per line: each escaped (its own newlines written out), joined by real newlines."""
    return "\n".join(escape_text(line) for line in text.split("\n"))


def _templates(view):
    rows = [(t["template"], t["count"], "%s lines%s" % (number(t["count"]), "" if t["rate"] is None else
                                                       ", %s/s" % number(float(t["rate"]))))
            for t in view["templates"]]
    body = bar_chart(rows) if rows else '<p class="muted">No template learned yet (or no snapshot taken).</p>'
    return ('<section id="templates"><h2>Top templates</h2><p class="muted">Lines per template since learning '
            'began; the rate is between the workers\' last two snapshots.</p>%s</section>' % body)


def _tiers(view):
    rows = []
    for t in view["tiers"]:
        state = ("off (run-time switch)" if t["switched_off"] else "on" if t["enabled"] else "off (configuration)")
        learning = "scoring" if t["warm"] else "warming up (%s lines seen)" % number(t["lines_seen"])
        rows.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
                    % (t["tier"], escape_text(t["name"]), state, learning if t["enabled"] else "-"))
    return ('<section id="tiers"><h2>Tiers</h2><table><tr><th>tier</th><th>what</th><th>state</th><th>learning</th>'
            '</tr>%s</table></section>' % "".join(rows))


def _inputs(view):
    rows, bars = [], []
    for i in view["inputs"]:
        lag = i["lag_bytes"]
        files = "" if i["files"] is None else "in " + _plural(i["files"], "file")
        if i["known"] is not None and i["known"] > view["max_rows"]:
            files += " (the first %d of %d checkpoints: [http] page_max_rows)" % (view["max_rows"], i["known"])
        rows.append('<tr><td>%s</td><td>%s</td><td class="num">%s</td><td>%s</td></tr>'
                    % (escape_text(i["input"]), escape_text(i["type"]), "-" if lag is None else _bytes(lag),
                       escape_text(files.strip() or ("spooled" if lag is not None else "not measured"))))
        if lag is not None:
            bars.append((i["input"], lag, _bytes(lag)))
    chart = bar_chart(bars) if any(value for _n, value, _s in bars) else ""
    return ('<section id="inputs"><h2>Inputs and their lag</h2><p class="muted">Lag: bytes written to a file '
            'input\'s files past its committed checkpoint, or waiting in a network input\'s spool.</p>'
            '<table><tr><th>input</th><th>type</th><th>lag</th><th></th></tr>%s</table>%s</section>'
            % ("".join(rows), chart))


def _footer(view):
    notes = "".join("<li>%s</li>" % escape_text(n) for n in view["notes"])
    return ('<footer><p class="muted">Refreshes every %s s. Incidents are as the workers saw them within the '
            'last second; templates and tiers as of their last snapshots (every %s s).</p>%s</footer>'
            % (number(view["refresh_seconds"]) if view["refresh_seconds"] else "- (off)",
               number(view["snapshot_seconds"]),
               '<div class="notes">Not shown:<ul>%s</ul></div>' % notes if notes else ""))


def _float(value):
    try:
        result = float(value)
    except (TypeError, ValueError):
        return 0.0
    return result if math.isfinite(result) else 0.0


def _plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def _bytes(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def _when(epoch):
    if epoch is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(epoch)))
    except (TypeError, ValueError, OverflowError, OSError):
        return escape_text(epoch)
