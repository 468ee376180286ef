"""Numeric series pooled over a source's hosts (series_kernels.host_last): a rise or a fall is counted
against the same host's last value, so two hosts' clocks in one series are clocks (not judged), while a
measurement pooled over hosts is judged as before; kernel and twin alike."""
from types import SimpleNamespace

import numpy as np
import pytest

from anomaly_detector.detection import series_kernels as K
from anomaly_detector.detection import series_twins as T
from anomaly_detector.detection.series import SeriesBook, host_codes

LABELS = 16
T0 = 1.77e9


def _uptimes(days=3.0, restart_day=2.3):
    """(t, host index, uptime) of two hosts logging their uptime every 5 min, 37 s apart; the second
    restarts (a deploy) restart_day days in."""
    rng = np.random.default_rng(3)
    out = []
    for host, booted in ((0, T0 - 2 * 86400), (1, T0 - 2 * 86400 + 4000)):
        for k in range(int(days * 288)):
            t = T0 + k * 300 + host * 37 + rng.uniform(0, 3)
            since = T0 + restart_day * 86400 if host == 1 and t >= T0 + restart_day * 86400 else booted
            out.append((t, host, float(int(t - since))))
    return sorted(out)


def _book_run(values, hosts):
    """Feed (t, host index, value) to a SeriesBook in batches of 50 lines of one source and slot, the
    lines naming their host when hosts (names) is given -> (highest score, judged at the end)."""
    book = SeriesBook(100, LABELS)
    best = 0.0
    for i in range(0, len(values), 50):
        chunk = values[i:i + 50]
        n = len(chunk)
        batch = SimpleNamespace(n=n, param_ptr=np.arange(n + 1, dtype=np.int64),
                                param_num=np.array([v for _, _, v in chunk]), source_id=np.zeros(n, np.int32))
        if hosts:
            batch.host_id, batch.hosts = np.array([h for _, h, _ in chunk], np.int32), list(hosts)
        ts = np.array([t for t, _, _ in chunk])
        rows = book.rows_of(batch, np.zeros(n, np.int64))
        best = max(best, float(book.score(batch, rows, ts)[0].max()))
        book.learn(batch, rows, ts, np.ones(n, np.float32))
    return best, bool(K.judged_rows(book.state, book.labels, 1)[0])


def test_two_hosts_clocks_pooled_in_one_series_are_not_judged_and_a_restart_raises_no_flag():
    values = _uptimes()
    # without the hosts the pooled values alternate between two clocks: judged, and the restart flags
    best, judged = _book_run(values, None)
    assert judged and best >= 70.0
    # host by host they are clocks
    best, judged = _book_run(values, ["api-1", "api-2"])
    assert not judged and best == 0.0


def test_a_latency_pooled_over_two_hosts_is_still_judged_and_its_spike_flagged():
    rng = np.random.default_rng(8)
    values = [(T0 + k * 150.0, k % 2, float(rng.lognormal(4.0, 0.2))) for k in range(2000)]
    values[1500] = (values[1500][0], values[1500][1], 5000.0)
    best, judged = _book_run(values, ["api-1", "api-2"])
    assert judged and best >= 70.0


def _host_shapes(rng, n):
    t = np.arange(n) * 150.0
    clocks = np.where(np.arange(n) % 2 == 0, t + 9e4, t + 1e5)
    clocks[n // 2::2] -= 1e5 - 300.0      # the second host restarts halfway
    return {
        "two clocks": (clocks, np.where(np.arange(n) % 2 == 0, 11, 22)),
        "latency on three hosts, some lines naming none": (rng.lognormal(5.0, 0.25, n), rng.integers(0, 4, n) * 7),
        "counters on more hosts than slots": (np.cumsum(rng.integers(1, 5, n)) + 1000.0 * (np.arange(n) % 12),
                                              np.arange(n) % 12 + 1),
    }


@pytest.mark.parametrize("shape", list(_host_shapes(np.random.default_rng(0), 10)))
def test_kernel_matches_the_twin_with_hosts(shape):
    rng = np.random.default_rng(12)
    values, hosts = _host_shapes(rng, 3000)[shape]
    times = np.arange(values.size) * 150.0
    st, season = np.zeros((1, K.COLS)), np.zeros((1, K.SEASON_ROWS, K.SEASON_BUCKETS))
    seen, labels, rec = np.zeros((1, K.SEASON_BUCKETS), np.int8), np.zeros((1, LABELS)), np.zeros((1, K.RECORD_COLS))
    twin = T.Series(LABELS)
    for x, t, h in zip(values.tolist(), times.tolist(), hosts.tolist()):
        got = K.step(st, season, seen, labels, rec, 0, x, t, 1.0, 70.0, 40.0, 1.0, 1.0, K.RECORD_WEIGHT,
                     K.SHIFT_FLAGS_PER_DAY, 0.1, float(h))
        want = twin.step(x, t, 1.0, host=h)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert st[0, K.RISES] == pytest.approx(twin.rises, rel=1e-12)


def test_host_codes_name_a_host_alike_in_every_batch_and_lines_naming_none_zero():
    one = SimpleNamespace(n=3, host_id=np.array([0, 1, -1], np.int32), hosts=["api-1", "api-2"])
    other = SimpleNamespace(n=2, host_id=np.array([1, 0], np.int32), hosts=["api-3", "api-1"])
    a, b = host_codes(one), host_codes(other)
    assert a[0] == b[0] and a[0] != a[1] and a[2] == 0 and b[1] not in (0, a[0], a[1])
    assert host_codes(SimpleNamespace(n=2, host_id=None, hosts=[])).tolist() == [0, 0]
    assert float(a.max()) == a.max()       # exact in the kernel's float state


def test_a_snapshot_from_before_the_hosts_last_values_loads_with_every_slot_free():
    book = SeriesBook(max_series=4, max_labels=LABELS)
    book._row(7 << 32)
    book.state[0, [K.N_OBS, K.RISES, K.LAST_X]] = [50.0, 0.5, 3.0]
    saved = book.state_dict()
    saved["state"] = [row[:K.HOSTLESS_COLS] for row in saved["state"]]
    again = SeriesBook(max_series=4, max_labels=LABELS)
    again.load(saved)
    assert again.state.shape[1] == K.COLS
    assert list(again.state[0, [K.N_OBS, K.RISES, K.LAST_X]]) == [50.0, 0.5, 3.0]
    assert not again.state[0, K.HOST_KEY:K.HOST_KEY + 2 * K.HOST_SLOTS].any()
    # a host's first value after the load counts against the series' last, as it did before
    assert K.host_last(again.state, 0, 5.0, 4.0) == 3.0 and K.host_last(again.state, 0, 5.0, 4.5) == 4.0
