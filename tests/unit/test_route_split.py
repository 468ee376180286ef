"""Series split by route (tier 3): an access log's path position holds thousands of values (query strings,
product ids), so its categorical slot is full; the path's route (`/search`, `/products/<*>`) still splits
the response time, and one route slowing 12x inside the mix of all routes' times is caught."""
from datetime import datetime, timedelta, timezone

import numpy as np
from test_series_split import _replay, _t3

START = datetime(2026, 3, 2, tzinfo=timezone.utc)
ROUTES = ["/static/app.css", "/products/{id}", "/search?q={q}", "/api/cart", "/checkout", "/reports/{id}?page={p}"]
MEDIANS = np.array([0.002, 0.045, 0.05, 0.013, 0.35, 0.9])    # seconds
SHARES = np.array([30, 25, 9, 14, 6, 8])
WORDS = ["shoes", "red+dress", "hat", "linen+shirt", "sunglasses", "boots", "scarf", "jeans", "watch", "belt"]


def _access_log(factor, n=24000, at=20000, seed=5):
    """nginx-like access lines 3 s apart, six routes (2 ms to 0.9 s) in one template; from line `at` on
    /search (about 9 % of the lines) takes `factor` times as long: 0.6 s, as a report or a checkout
    usually does."""
    rng = np.random.default_rng(seed)
    r = rng.choice(len(ROUTES), n, p=SHARES / SHARES.sum())
    rt = rng.lognormal(0.0, 0.5, n) * MEDIANS[r]
    hit = (np.arange(n) >= at) & (r == 2)
    rt[hit] *= factor
    lines = []
    for k in range(n):
        path = ROUTES[r[k]].format(id=int(rng.integers(1, 99999)), q=WORDS[int(rng.integers(0, len(WORDS)))],
                                   p=int(rng.integers(1, 9)))
        stamp = (START + timedelta(seconds=3 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f'{stamp} INFO web-1 nginx: 10.0.{k % 7}.{k % 200 + 1} "GET {path} HTTP/1.1" 200 '
                     f'{int(rng.integers(200, 30000))} rt={rt[k]:.3f}')
    return lines, hit


def test_one_routes_response_time_is_judged_against_that_routes_own_past(tmp_path):
    lines, hit = _access_log(12.0)
    records = _replay(tmp_path, "all", lines, "--save-state", str(tmp_path / "state"))
    flagged = [k for k, r in enumerate(records) if r["anomaly"]]
    assert any(hit[k] for k in flagged), flagged
    first = next(k for k in flagged if hit[k])
    assert first < 20000 + 40 * 11        # within about 40 of the route's own lines
    assert any("route is '/search'" in reason for reason in records[first]["reasons"]), records[first]["reasons"]
    assert sum(1 for k in flagged if not hit[k]) <= 1
    saved = _t3(tmp_path / "state")[1]["t3"]
    assert max(saved["route_nd"]) == len(ROUTES) and not any(saved["route_full"])


def test_no_slowdown_no_flag(tmp_path):
    lines, _ = _access_log(1.0, n=21000)
    records = _replay(tmp_path, "none", lines)
    assert sum(1 for r in records if r["anomaly"]) <= 1
