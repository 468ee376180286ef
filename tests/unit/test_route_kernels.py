"""route_kernels (a URL path's route, the routes a full slot learns) against their plain-Python twins
in routes.py, on fixed examples and random paths."""
import numpy as np
import pytest

from anomaly_detector.detection import route_kernels as RK
from anomaly_detector.detection import routes

EXAMPLES = {
    b"/search?q=shoes": "/search", b"/search?q=hat": "/search", b"/search": "/search",
    b"/product/123": "/product/<*>", b"/product/77": "/product/<*>",
    b"/api/orders/SO-1234": "/api/orders/SO-<*>", b"/v2/users#top": "/v<*>/users",
    b"/u/3f2a9c1e-0b7d-4e8f-9a1b-2c3d4e5f6a7b/x": "/u/<*>/x", b"/blob/deadbeef12": "/blob/<*>",
    b"/feedback": "/feedback", b"/": "/", b"//a/": "//a/", b"-": None, b"": None, b"GET": None, b"200": None,
}


def _kernel_hash(value):
    return int(RK.route_hash(np.frombuffer(value, np.uint8), 0, len(value)))


@pytest.mark.parametrize("value,route", list(EXAMPLES.items()))
def test_routes_of_examples(value, route):
    assert routes.shown(value) == route
    assert _kernel_hash(value) == routes.route_hash(value)
    assert (routes.route_hash(value) == 0) == (route is None)


def test_one_route_per_query_and_id():
    assert len({_kernel_hash(v) for v in (b"/search?q=a", b"/search?q=b&page=2", b"/search#r")}) == 1
    assert _kernel_hash(b"/product/1") == _kernel_hash(b"/product/99999") != _kernel_hash(b"/products/1")


def _random_paths(rng, n):
    alphabet = np.frombuffer(b"abcdefxyz0123456789-./?#=&_", np.uint8)
    out = []
    for _ in range(n):
        body = bytes(rng.choice(alphabet, rng.integers(0, 30)).tolist())
        out.append((b"/" if rng.random() < 0.85 else b"") + body)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_route_hash_matches_the_twin_on_random_paths(seed):
    for value in _random_paths(np.random.default_rng(seed), 2000):
        assert _kernel_hash(value) == routes.route_hash(value), value


@pytest.mark.parametrize("seed", [1, 2])
def test_learn_routes_matches_the_twin(seed):
    rng = np.random.default_rng(seed)
    n_slots, max_routes, n = 12, 4, 600
    pool = [b"/a?x=1", b"/a?x=2", b"/b/1", b"/c", b"/d/ff00aa11bb", b"/e", b"-", b"/f", b"/g/h"]
    values = [pool[k] for k in rng.integers(0, len(pool), n)]
    ptr = np.arange(n + 1, dtype=np.int64)
    ends = np.cumsum([len(v) for v in values]).astype(np.int64)
    starts = ends - np.array([len(v) for v in values], np.int64)
    buf = np.frombuffer(b"".join(values), np.uint8)
    slots = rng.integers(-1, n_slots, n).astype(np.int64)
    weights = np.where(rng.random(n) < 0.8, 1.0, 0.0).astype(np.float32)
    cat_full = (rng.random(n_slots) < 0.7).astype(np.int8)
    table = np.zeros((n_slots, max_routes), np.uint64)
    nd, full = np.zeros(n_slots, np.int32), np.zeros(n_slots, np.int8)
    RK.learn_routes(buf, ptr, starts, ends, slots, weights, cat_full, table, nd, full)
    want, want_full = {}, set()
    routes.learn_routes([(int(s), v, float(w), bool(cat_full[s]) if s >= 0 else False)
                         for s, v, w in zip(slots, values, weights)], want, want_full, max_routes)
    for s in range(n_slots):
        assert [int(h) for h in table[s, :nd[s]]] == want.get(s, [])
    assert set(np.flatnonzero(full).tolist()) == want_full
    assert want_full and any(nd), "the random batch should fill some slots' routes and not others"


def test_route_codes_are_the_route_hash_of_paths_and_the_value_hash_of_the_rest():
    values = list(EXAMPLES) + _random_paths(np.random.default_rng(5), 200)
    buf = np.frombuffer(b"".join(values), np.uint8)
    ends = np.cumsum([len(v) for v in values]).astype(np.int64)
    starts = ends - np.array([len(v) for v in values], np.int64)
    hashes = np.arange(7, 7 + len(values), dtype=np.uint64)
    got = RK.route_codes(buf, starts, ends, hashes)
    assert got.tolist() == routes.route_codes(values, hashes.tolist())
    assert got[list(EXAMPLES).index(b"/product/123")] == got[list(EXAMPLES).index(b"/product/77")]
    assert got[list(EXAMPLES).index(b"GET")] == 7 + list(EXAMPLES).index(b"GET")
