"""numba kernels of routes: a URL path's value as the category that splits a template's series.

An access log's path position holds thousands of values (`/search?q=shoes`, `/product/1234`), so
its categorical slot fills and no series could split by it; its route (`/search`, `/product/<*>`)
is a category of a few values. A route is the value's path before "?" and "#", each digit run and
each id segment (8+ hex digits and dashes holding a digit: a hash, a uuid) one ROUTE_MARK byte.
Only values starting with "/" are routes (nginx and apache paths, JSON `path` fields).

Per slot, up to max_categories route hashes are learned once its raw values overflowed (cat_full),
and the slot stops there when more routes come (route_full): the bound holds for routes as well.
Tier 2 counts a path's route as the value (route_codes): a surge of product pages is one of
`/product/<*>`, where no single page is ever a heavy value.
routes.py is the plain-Python twin (and the text explanations show); the tests compare them.
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

FNV_OFFSET = np.uint64(14695981039346656037)
FNV_PRIME = np.uint64(1099511628211)
SLASH, QUERY, FRAGMENT, DASH = 47, 63, 35, 45
ROUTE_MARK = 1       # byte standing for a digit run or an id segment in a route
ID_SEGMENT = 8       # an id segment's shortest length (the masking code's hex strings)


@njit(cache=True, inline="always")
def _mix(h, c):
    return (h ^ np.uint64(c)) * FNV_PRIME


@njit(cache=True, inline="always")
def _digit(c):
    return 48 <= c <= 57


@njit(cache=True, inline="always")
def _segment_end(buf, i, b):
    while i < b and buf[i] != SLASH and buf[i] != QUERY and buf[i] != FRAGMENT:
        i += 1
    return i


@njit(cache=True, _nrt=False)
def _id_segment(buf, a, b):
    """buf[a:b] is ID_SEGMENT+ hex digits and dashes, one a digit at least (words like `feedback`
    stay words)."""
    if b - a < ID_SEGMENT:
        return False
    digit = False
    for i in range(a, b):
        c = buf[i]
        if _digit(c):
            digit = True
        elif not (97 <= c <= 102 or 65 <= c <= 70 or c == DASH):
            return False
    return digit


@njit(cache=True, _nrt=False)
def route_hash(buf, a, b):
    """FNV-1a of the route of the value buf[a:b], 0 when it is no URL path (routes.route_text)."""
    if b <= a or buf[a] != SLASH:
        return np.uint64(0)
    h = FNV_OFFSET
    i = a
    while i < b and buf[i] == SLASH:   # one "/segment" per turn
        h = _mix(h, SLASH)
        e = _segment_end(buf, i + 1, b)
        if _id_segment(buf, i + 1, e):
            h = _mix(h, ROUTE_MARK)
        else:
            k = i + 1
            while k < e:
                if _digit(buf[k]):
                    h = _mix(h, ROUTE_MARK)
                    while k < e and _digit(buf[k]):
                        k += 1
                else:
                    h = _mix(h, buf[k])
                    k += 1
        i = e
    return h if h != 0 else np.uint64(1)


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.U64_1D), cache=True)
def route_codes(buf, starts, ends, hashes):
    """Each value's route hash where buf[starts[j]:ends[j]] is a URL path, else its own hash (hashes[j]):
    the values tier 2 counts, one per endpoint (tier2_values)."""
    out = hashes.copy()
    _route_into(buf, starts, ends, out)
    return out


@kt.loop
def _route_into(buf, starts, ends, out):
    """route_codes' loop (kt.loop: no reference counting of buf per value)."""
    for j in range(starts.shape[0]):
        h = route_hash(buf, starts[j], ends[j])
        if h != 0:
            out[j] = h


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.F32_1D, kt.I8_1D, kt.U64_2D, kt.I32_1D,
           kt.I8_1D), cache=True, _nrt=False)
def learn_routes(buf, param_ptr, param_start, param_end, param_slot, weights, cat_full, route_table, route_nd,
                 route_full):
    """Learn the routes of the values (weight > 0) of full slots (in place): a new one is added while
    the slot holds fewer than route_table.shape[1], past that the slot's routes are full."""
    max_routes = route_table.shape[1]
    for i in range(param_ptr.shape[0] - 1):
        if weights[i] <= 0.0:
            continue
        for j in range(param_ptr[i], param_ptr[i + 1]):
            s = param_slot[j]
            if s < 0 or cat_full[s] == 0 or route_full[s] != 0:
                continue
            h = route_hash(buf, param_start[j], param_end[j])
            if h == 0 or known_route(route_table, route_nd, s, h) >= 0:
                continue
            if route_nd[s] < max_routes:
                route_table[s, route_nd[s]] = h
                route_nd[s] += 1
            else:
                route_full[s] = 1


@njit(cache=True, _nrt=False)
def known_route(route_table, route_nd, s, h):
    """Index of route h among slot s's, -1 when it has none such."""
    for q in range(min(route_nd[s], route_table.shape[1])):
        if route_table[s, q] == h:
            return q
    return -1
