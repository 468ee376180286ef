"""Inline SVG charts for the page at `/` (metrics/page.py), and the one escaping function both use.

Our own few lines instead of a charting library: the page must work offline, load nothing from
elsewhere, and every string in it may come from a log line, so all text goes through escape_text.
Charts use presentation attributes only (fill=, x=, ...), never style= (the page's
Content-Security-Policy allows no inline style attribute).
"""
import html
import math
import re
import time

# Control characters (C0 but tab, DEL, C1), line and paragraph separators, bidi overrides and lone
# surrogates (undecodable bytes): shown as \xNN / \uNNNN so a hostile line cannot hide or reorder text.
_INVISIBLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
PALETTE = ("#c0392b", "#d35400", "#2471a3", "#7d3c98", "#1e8449", "#7f8c8d")


def _visible(match):
    code = ord(match.group())
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def escape_text(value):
    """Any value as HTML text (also safe inside a quoted attribute): <, >, &, both quotes escaped and
    invisible characters written out."""
    return html.escape(_INVISIBLE.sub(_visible, str(value)), quote=True)


def number(value):
    """1234567 -> '1,234,567'; floats with one decimal under 100; anything not a finite number as text."""
    if value is None:
        return "-"
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return escape_text(value)
    if isinstance(value, float) and abs(value) < 100:
        return "%.1f" % value
    return "{:,}".format(int(round(value)))


def bar_chart(rows, width=960, bar_height=14, max_label=130):
    """Horizontal bars, each under its label: rows are (label, value, note); the longest bar is the largest
    value. A label longer than max_label characters is cut, and shown whole in a <title> (hover)."""
    if not rows:
        return ""
    top = max(value for _label, value, _note in rows) or 1
    room = width - 160
    step = bar_height + 22
    height = len(rows) * step + 4
    parts = ['<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'role="img">' % (width, height, width, height)]
    for i, (label, value, note) in enumerate(rows):
        y = 4 + i * step
        length = max(1.0, room * value / top)
        short = label if len(label) <= max_label else label[:max_label - 1] + "\u2026"
        parts.append('<g><title>%s</title>' % escape_text("%s: %s" % (label, note or number(value))))
        parts.append('<text x="0" y="%d" font-size="12" font-family="monospace" fill="#222">%s</text>'
                     % (y + 12, escape_text(short)))
        parts.append('<rect x="0" y="%d" width="%.1f" height="%d" fill="%s"/>'
                     % (y + 16, length, bar_height, PALETTE[2]))
        parts.append('<text x="%.1f" y="%d" font-size="12" fill="#222">%s</text></g>'
                     % (length + 6, y + 16 + bar_height - 3, escape_text(note or number(value))))
    parts.append("</svg>")
    return "".join(parts)


def timeline(points, now, span, threshold, width=960, height=160):
    """Incidents over the last `span` seconds up to `now`: one line from first to last seen at the height
    of its score (0-100), a dot at its end, and the anomaly threshold dashed. points: (first, last,
    score, label, open)."""
    left, right, top, bottom = 40, 10, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t):
        return left + plot_w * min(1.0, max(0.0, (t - (now - span)) / span))

    def y(score):
        return top + plot_h * (1 - min(100.0, max(0.0, score)) / 100.0)

    parts = ['<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'role="img">' % (width, height, width, height),
             '<rect x="%d" y="%d" width="%d" height="%d" fill="#fafafa" stroke="#ccc"/>' % (left, top, plot_w, plot_h)]
    for score in (0, 50, 100):
        parts.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end" fill="#666">%d</text>'
                     % (left - 4, y(score) + 3, score))
    parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c0392b" stroke-dasharray="4 3"/>'
                 % (left, left + plot_w, y(threshold), y(threshold)))
    for tick in _ticks(now, span):
        parts.append('<text x="%.1f" y="%d" font-size="10" text-anchor="middle" fill="#666">%s</text>'
                     % (x(tick[0]), height - 8, escape_text(tick[1])))
    for first, last, score, label, is_open in points:
        colour = PALETTE[0] if is_open else PALETTE[3]
        parts.append('<g><title>%s</title><line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" '
                     'stroke-width="3"/><circle cx="%.1f" cy="%.1f" r="4" fill="%s"/></g>'
                     % (escape_text(label), x(first), x(last), y(score), y(score), colour, x(last), y(score), colour))
    parts.append("</svg>")
    return "".join(parts)


def _ticks(now, span):
    """About five (time, 'HH:MM' or 'MM-DD HH:MM') labels across the span, on round steps."""
    steps = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
    step = next((s for s in steps if span / s <= 6), steps[-1])
    fmt = "%H:%M" if span <= 86400 else "%m-%d %H:%M"
    first = math.ceil((now - span) / step) * step
    return [(t, time.strftime(fmt, time.gmtime(t))) for t in range(int(first), int(now) + 1, step)]
