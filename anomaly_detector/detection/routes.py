"""A URL path's route in plain Python: the twin of route_kernels (tests) and the text an explanation
shows for a series split by route."""
import re

from .route_kernels import ID_SEGMENT, ROUTE_MARK

_MASK64 = (1 << 64) - 1
_ID = re.compile(rb"[0-9a-fA-F-]{%d,}" % ID_SEGMENT)
_DIGITS = re.compile(rb"[0-9]+")
_MARK = bytes([ROUTE_MARK])


def route_text(value):
    """The route of the bytes value (bytes, each digit run and id segment one ROUTE_MARK byte), None
    when it does not start with "/"."""
    if not value.startswith(b"/"):
        return None
    path = re.split(rb"[?#]", value, maxsplit=1)[0]
    segments = path.split(b"/")[1:]
    out = []
    for seg in segments:
        if _ID.fullmatch(seg) and re.search(rb"[0-9]", seg):
            out.append(_MARK)
        else:
            out.append(_DIGITS.sub(_MARK, seg))
    return b"/" + b"/".join(out)


def route_hash(value):
    """FNV-1a of route_text(value), 0 when it is none (route_kernels.route_hash)."""
    text = route_text(value)
    if text is None:
        return 0
    h = 14695981039346656037
    for c in text:
        h = ((h ^ c) * 1099511628211) & _MASK64
    return h or 1


def shown(value):
    """The route as an explanation writes it: `/product/<*>`."""
    text = route_text(value)
    return None if text is None else text.replace(_MARK, b"<*>").decode("utf-8", "replace")


def route_codes(values, hashes):
    """Twin of route_kernels.route_codes over a list of value bytes and their hashes."""
    return [route_hash(v) or h for v, h in zip(values, hashes)]


def learn_routes(values, table, full, max_routes):
    """Twin of route_kernels.learn_routes over [(slot, value bytes, weight, slot is full)]: table is
    slot -> list of route hashes, full a set of slots whose routes are full."""
    for slot, value, weight, cat_full in values:
        if weight <= 0.0 or slot < 0 or not cat_full or slot in full:
            continue
        h = route_hash(value)
        known = table.setdefault(slot, [])
        if h == 0 or h in known:
            continue
        if len(known) < max_routes:
            known.append(h)
        else:
            full.add(slot)
