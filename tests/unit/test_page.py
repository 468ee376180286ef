"""The page at / as HTML and SVG (metrics/page.py, svg.py): hostile text stays text, the charts scale,
the Content-Security-Policy admits the page's own style and nothing else, and builds are shared."""
import base64
import hashlib
import html.parser
import json
import os
import re
import threading
import urllib.error
import urllib.request

import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.metrics import page
from anomaly_detector.metrics.httpd import SidecarHTTPServer
from anomaly_detector.metrics.incidents_api import IncidentsAPI, WorkerViews
from anomaly_detector.metrics.sidecar import Readings
from anomaly_detector.metrics.svg import bar_chart, escape_text, timeline
from anomaly_detector.storage.layout import worker_paths

HOSTILE = ("<script>document.title='pwned'</script>\"'><img src=x onerror=alert(1)>"
           "\x1b[31m\x00\x7f\x85\u202e\u2028\udcff &amp;")
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "small", "p", "span",
                "b", "ul", "li", "section", "article", "pre", "code", "table", "tr", "th", "td", "footer", "div",
                "svg", "g", "rect", "line", "circle", "text"}
ALLOWED_ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "name", "class", "id", "xmlns", "width", "height",
                      "viewbox", "role", "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "fill", "stroke",
                      "stroke-width", "stroke-dasharray", "font-size", "font-family", "text-anchor"}


class Elements(html.parser.HTMLParser):
    """Start tags with their attributes, and the text, of a document."""

    def __init__(self, document):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.title = [], [], None
        self._in_title = False
        self.feed(document)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_title and self.title is None:   # the document's; SVG <title>s (tooltips) come later
            self.title = data


def incident(i, text, is_open=False):
    return {"id": "%s%d" % (text, i), "first_seen": 1000.0 + 100 * i, "last_seen": 1060.0 + 100 * i,
            "source": text, "kind": text, "reason": "critical rule: " + text, "reasons": ["other " + text],
            "tiers": ["t1", text], "score": 90.0 + i, "lines": 6, "expected": text, "observed": text,
            "template": text, "samples": [text, "second line " + text]}


def view(text=HOSTILE):
    return {"name": "svc", "health": {"status": "healthy", "reasons": [text], "workers": 2}, "generated": 0.0,
            "refresh_seconds": 15, "threshold": 70.0, "figures": {"lines read": 10, text: 5},
            "open": [incident(0, text, True)], "recent": [incident(1, text), incident(2, text)],
            "snapshot_seconds": 60.0, "max_rows": 20,
            "templates": [{"template": text, "count": 10, "rate": 0.5}, {"template": "b", "count": 5, "rate": None}],
            "tiers": [{"tier": "t1", "name": text, "enabled": True, "switched_off": False, "warm": True,
                       "lines_seen": 1}],
            "inputs": [{"input": text, "type": "file", "lag_bytes": 2048, "files": 1, "known": 1},
                       {"input": "net", "type": "http", "lag_bytes": None, "files": None, "known": None}],
            "notes": [text]}


def test_escape_text_leaves_no_markup_and_shows_invisible_characters():
    out = escape_text(HOSTILE)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert "&lt;script&gt;" in out and "&amp;amp;" in out
    for shown in ("\\x1b", "\\x00", "\\x7f", "\\x85", "\\u202e", "\\u2028", "\\udcff"):
        assert shown in out
    assert not re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202e\u2028\ud800-\udfff]", out)
    assert escape_text("tab\tstays") == "tab\tstays"
    out.encode("utf-8")   # no lone surrogate left to fail the encoding


def test_hostile_text_everywhere_stays_text():
    document = page.render(view())
    parsed = Elements(document)
    assert parsed.title == "anomaly_detector: svc"
    assert {tag for tag, _ in parsed.tags} <= ALLOWED_TAGS
    assert all(name in ALLOWED_ATTRIBUTES for _, attrs in parsed.tags for name in attrs)
    assert [tag for tag, _ in parsed.tags].count("script") == 0
    text = "".join(parsed.text)
    # every hostile field is shown, as text with its invisible characters written out
    shown = "<script>document.title='pwned'</script>\"'><img src=x onerror=alert(1)>\\x1b[31m"
    assert text.count(shown) >= 12
    document.encode("utf-8")


def test_the_page_has_its_sections_and_svg():
    document = page.render(view("plain"))
    parsed = Elements(document)
    ids = [attrs.get("id") for _, attrs in parsed.tags if attrs.get("id")]
    assert ids[:1] == ["health"] and {"now", "lately", "templates", "tiers", "inputs"} <= set(ids)
    assert {"incident-plain0", "incident-plain1", "incident-plain2"} <= set(ids)
    assert [tag for tag, _ in parsed.tags].count("svg") == 3        # timeline, templates, input lag
    text = "".join(parsed.text)
    assert "Anomalous now: 1 open incident" in text and "Lately: 2 closed incidents" in text
    assert "critical rule: plain (expected plain, observed plain)" in text
    assert "10 lines, 0.5/s" in text and "2.0 KiB" in text
    assert '<meta http-equiv="refresh" content="15">' in document
    assert "page_max_rows" not in document


def test_lists_cut_at_page_max_rows_say_so():
    v = view("plain")
    v["max_rows"] = 2
    v["inputs"][0].update(files=2, known=7)
    text = "".join(Elements(page.render(v)).text)
    assert "Lately: 2 closed incidents (the last 2: [http] page_max_rows)" in text
    assert "Anomalous now: 1 open incident<" not in text and "in 2 files (the first 2 of 7 checkpoints" in text


def test_without_closed_incidents_or_refresh_the_page_says_so():
    v = view("plain")
    v.update(recent=[], refresh_seconds=0)
    document = page.render(v)
    assert "No incident closed yet." in document and "http-equiv" not in document


def test_the_policy_admits_exactly_the_pages_style_and_nothing_from_elsewhere():
    document = page.render(view("plain"))
    style = re.search(r"<style>(.*?)</style>", document, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    policy = dict(part.strip().split(" ", 1) for part in page.CONTENT_SECURITY_POLICY.split(";"))
    assert policy["style-src"] == "'sha256-%s'" % digest
    assert policy["default-src"] == policy["script-src"] == policy["img-src"] == "'none'"
    assert ("Content-Security-Policy", page.CONTENT_SECURITY_POLICY) in page.HEADERS
    assert not re.search(r"\s(?:src|href|style)=", document)


def test_bar_chart_bars_scale_to_the_largest_value_and_labels_are_cut_with_the_whole_in_a_title():
    chart = bar_chart([("a" * 200, 100, "100 lines"), ("b", 25, "25 lines")], width=960)
    widths = [float(w) for w in re.findall(r'<rect x="0" y="\d+" width="([\d.]+)"', chart)]
    assert widths == [800.0, 200.0]
    assert "a" * 129 + "\u2026" in chart and "<title>%s: 100 lines</title>" % ("a" * 200) in chart
    assert bar_chart([]) == ""


def test_timeline_places_scores_and_times_inside_the_plot():
    chart = timeline([(1000.0, 1500.0, 100.0, "<b>x</b>", True), (0.0, 100.0, 0.0, "y", False)],
                     now=2000.0, span=1000.0, threshold=50.0, width=1050, height=134)
    lines = re.findall(r'<line x1="([\d.]+)" x2="([\d.]+)" y1="([\d.]+)" y2="([\d.]+)" stroke="#(\w+)" '
                       r'stroke-width', chart)
    assert lines[0] == ("40.0", "540.0", "10.0", "10.0", "c0392b")       # open: red, at the top (score 100)
    assert lines[1][:2] == ("40.0", "40.0") and lines[1][2] == "110.0"   # before the span: at its left edge
    assert 'y1="60.0" y2="60.0" stroke="#c0392b" stroke-dasharray' in chart   # the threshold, half-way
    assert "&lt;b&gt;x&lt;/b&gt;" in chart and "<b>" not in chart


def readings(tmp_path):
    cfg = default_config()
    cfg["paths"]["state_dir"] = str(tmp_path / "state")
    cfg["inputs"] = {"app": {"type": "file", "path": str(tmp_path / "app.log")}}
    control = ControlBlock.create(bytearray(control_bytes(4, 2)), 4, 2)
    return cfg, Readings(cfg, control, [], [("ad-worker-0", "worker", 1)], os.getpid())


def built_page(cfg, source, **kwargs):
    return page.Page(cfg, source, WorkerViews(cfg["paths"]["state_dir"]), **kwargs)


def write_view(cfg, worker, open_=(), closed=()):
    """A worker's incidents view as worker/incident_view.py writes it (version, open, closed, templates)."""
    path = os.path.join(worker_paths(cfg["paths"]["state_dir"], worker).alerting, "incidents-view.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": 1, "worker": worker, "written": 0.0, "templates": {},
                   "open": [dict(r, status="open") for r in open_],
                   "closed": [dict(r, status="resolved") for r in closed]}, f)


def test_requests_within_a_second_share_one_build(tmp_path):
    cfg, source = readings(tmp_path)
    now = [100.0]
    built = built_page(cfg, source, clock=lambda: now[0])
    calls = []
    gather = built.gather
    built.gather = lambda: calls.append(1) or gather()
    status, content_type, first, headers = built.response()
    assert status == 200 and content_type == "text/html; charset=utf-8" and dict(headers)["X-Content-Type-Options"] == "nosniff"
    now[0] += 0.5
    assert built.body() is first and len(calls) == 1
    now[0] += 0.6
    built.body()
    assert len(calls) == 2
    assert b"Nothing open" in first and b"No incident closed yet" in first


def test_a_record_of_the_wrong_shape_is_named_and_the_rest_shown():
    v = view("plain")
    v["recent"].insert(0, {"id": "odd", "first_seen": "soon", "last_seen": None, "score": "high",
                           "samples": 5, "tiers": [1, 2], "reasons": "x"})
    v["recent"].append({"id": "nan", "score": float("nan"), "first_seen": float("inf")})
    text = "".join(Elements(page.render(v)).text)
    assert "An incident record could not be shown" in text
    assert "closed plain in plain, score 91.0" in text and "score nan" in text


def test_a_failed_build_answers_500_with_the_error_escaped(tmp_path):
    cfg, source = readings(tmp_path)
    built = built_page(cfg, source)
    built.gather = lambda: (_ for _ in ()).throw(RuntimeError("<b>boom</b>"))
    status, _type, body, headers = built.response()
    assert status == 500 and b"RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in body and headers == page.HEADERS


def test_the_sidecar_serves_the_page_at_get_slash_only(tmp_path, closing):
    cfg, source = readings(tmp_path)
    for with_page in (True, False):
        server = closing(SidecarHTTPServer("127.0.0.1", 0, source, page=built_page(cfg, source) if with_page
                                           else None))
        server.close = server.server_close
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        url = "http://127.0.0.1:%d/" % server.port
        if with_page:
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200 and resp.headers["Content-Security-Policy"] == page.CONTENT_SECURITY_POLICY
                assert resp.read().startswith(b"<!DOCTYPE html>")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10)
            assert refused.value.code == 405
        else:
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(url, timeout=10)
            assert missing.value.code == 404
        server.shutdown()


def test_a_skipped_read_is_counted_by_reason_and_named_on_the_page(tmp_path):
    cfg, source = readings(tmp_path)
    path = tmp_path / "state" / "baselines" / "worker-0" / "templates.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a snapshot\n")
    built = built_page(cfg, source)
    document = built.body().decode()
    assert "Not shown:" in document and "templates.json" in document
    assert built.samples()["page_reads_skipped_total"] == {(("reason", "too_large"),): 0,
                                                           (("reason", "unreadable"),): 1}
    assert path.read_bytes() == b"not a snapshot\n"


def test_incidents_come_from_the_workers_views_open_strongest_first_and_closed_once(tmp_path):
    cfg, source = readings(tmp_path)
    weak, strong, done = incident(0, "weak"), incident(1, "strong"), incident(2, "done")
    write_view(cfg, 0, open_=[weak, done])          # worker 0 published before "done" closed ...
    write_view(cfg, 1, open_=[strong], closed=[dict(done, last_seen=done["last_seen"] + 5)])   # ... worker 1 after
    text = "".join(Elements(built_page(cfg, source).body().decode()).text)
    assert "Anomalous now: 2 open incidents" in text and "Lately: 1 closed incident" in text
    assert text.index("OPEN strong in strong") < text.index("OPEN weak in weak")
    assert "closed done in done" in text and "OPEN done" not in text


def test_linked_incidents_of_two_sources_show_as_one_situation_with_their_first_cause(tmp_path):
    """db's lock timeouts on db-primary-1, then app's timeouts calling it, and batch apart: one situation of
    db and app naming db, on the page and in GET /api/situations (same views, same correlator)."""
    cfg, source = readings(tmp_path)
    db = dict(incident(0, "db"), samples=["lock wait timeout exceeded on table orders host=db-primary-1 txn=77"])
    app = dict(incident(0, "app"), first_seen=1030.0, last_seen=1090.0,
               samples=["timeout waiting for db-primary-1:5432 after 3000 ms request 0a1b2c3d4e5f"])
    batch = dict(incident(0, "batch"), first_seen=1010.0, samples=["disk quota exceeded on /var/reports"])
    write_view(cfg, 0, open_=[app], closed=[db, batch])
    built = built_page(cfg, source)
    parsed = Elements(built.body().decode())
    ids = [attrs.get("id") for _, attrs in parsed.tags if attrs.get("id")]
    assert "situations" in ids and sum(1 for i in ids if i.startswith("situation-")) == 1
    text = "".join(parsed.text)
    assert "Situations: 1 linked group" in text and "probable first cause db" in text
    assert "app -> db: names db" in text and "app -> db: share db-primary-1" in text and "batch" not in text.split("Situations:")[1].split("Lately")[0]
    listing = IncidentsAPI(WorkerViews(cfg["paths"]["state_dir"]), 10).handle("GET", "/api/situations", {}).body
    # newest onset first: batch (1010) before the db/app situation (1000)
    assert [(s["sources"], s["status"]) for s in listing["situations"]] == [(["batch"], "resolved"), (["app", "db"], "open")]
    assert listing["situations"][1]["first_cause"]["source"] == "db" and listing["count"] == 2
