"""metrics/admin.py over a real control block: routing on the raw path, the rate window (a stepped
clock, no sleeping), the token check, and the flags each action stores. The HTTP side and the effects
in the processes are tested on a live daemon (tests/integration/test_daemon_admin.py)."""
import pytest

from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.metrics.admin import ACTIONS, AdminAPI, _action
from anomaly_detector.supervisor.arbiter import MAX_WORKERS

TOKEN = "0123456789abcdef-token"


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def control():
    return ControlBlock.create(bytearray(control_bytes(4, 4)), 4, 4, batch_size=500, workers_wanted=2)


def call(api, action, body=b"", token=TOKEN, method="POST"):
    headers = {"Authorization": "Bearer " + token} if token is not None else {}
    return api.handle(method, "/admin/" + action, headers, len(body), "127.0.0.1", lambda: body)


def test_routes_only_exact_action_paths():
    assert [_action("/admin/" + a) for a in ACTIONS] == list(ACTIONS)
    for path in ("/admin/../set-workers", "/admin/%2e%2e/set-workers", "/admin/set-workers/", "/admin/Set-Workers",
                 "/admin//set-workers", "/admin/set-workers%00", "/admin", "/metrics"):
        assert _action(path) == "unknown", path
    assert _action("/admin/set-workers?x=1") == "set-workers"


def test_rate_window_slides_and_counts_refusals(control):
    clock = Clock()
    api = AdminAPI(control, TOKEN, rate_per_minute=3, clock=clock)
    assert [call(api, "enable-tier4", token="bad").status for _ in range(3)] == [401, 401, 401]
    assert call(api, "enable-tier4").status == 429          # a right token does not skip the limit
    clock.now += 59.9
    assert call(api, "enable-tier4").status == 429
    clock.now += 0.2                                         # the first three left the window
    assert call(api, "enable-tier4").status == 200
    samples = api.samples()["admin_requests_total"]
    assert samples[(("action", "enable-tier4"), ("status", "429"))] == 2
    assert samples[(("action", "enable-tier4"), ("status", "401"))] == 3


def test_actions_store_the_flags(control):
    api = AdminAPI(control, TOKEN, max_batch_size=4096)
    assert call(api, "disable-tier4").status == 200 and control.flags().tier4_enabled is False
    assert call(api, "enable-backpressure").status == 200 and control.flags().backpressure is True
    for _ in range(3):
        assert call(api, "reduce-learning-rate").status == 200
    assert control.flags().learning_rate_factor == 0.125
    assert call(api, "set-batch-size", b'{"size": 4096}').status == 200 and control.flags().batch_size == 4096
    assert call(api, "set-batch-size", b'{"size": 4097}').status == 400 and control.flags().batch_size == 4096
    reply = call(api, "set-workers", b'{"count": %d}' % MAX_WORKERS)
    assert reply.status == 202 and control.flags().workers_wanted == MAX_WORKERS
    assert call(api, "set-workers", b'{"count": %d}' % (MAX_WORKERS + 1)).status == 400


def test_learning_rate_stops_at_its_floor(control):
    api = AdminAPI(control, TOKEN, rate_per_minute=100)
    statuses = [call(api, "reduce-learning-rate").status for _ in range(21)]
    assert statuses == [200] * 19 + [400, 400]   # 2**-19 >= 1e-6 > 2**-20
    assert "floor" in call(api, "reduce-learning-rate").body["error"]


def test_disabled_api_answers_403_with_the_reason(control):
    api = AdminAPI(control, "", disabled_reason="[http] admin_token_file is not set")
    reply = call(api, "disable-tier4")
    assert reply.status == 403 and reply.body["error"] == "admin API disabled: [http] admin_token_file is not set"
    assert call(api, "disable-tier4", token="").status == 403   # an empty token never matches an empty one
    assert control.flags().tier4_enabled is True and api.samples()["admin_api_enabled"] == 0
