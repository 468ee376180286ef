"""supervisor/arbiter.py: a listener kept across a reload is forked again (after a crash) with what the
supervisor holds now, not with the objects of the start-up it was first made for."""
import socket

from anomaly_detector.supervisor import arbiter
from anomaly_detector.supervisor.children import ChildContext, ChildSet


def _cfg(http_port):
    ingest = {"type": "http", "listen_address": "127.0.0.1", "listen_port": 0}
    return {"inputs": {"ingest": ingest}, "http": {"bind": "127.0.0.1", "port": http_port}}


def _listening():
    return socket.create_server(("127.0.0.1", 0))


def test_a_kept_listener_forked_again_closes_the_http_socket_of_now_and_runs_on_the_new_config(monkeypatch):
    ran = []
    monkeypatch.setattr(arbiter, "run_listener", lambda ctx, daemon: ran.append(daemon))
    monkeypatch.setattr(arbiter, "run_inputs", lambda ctx, daemon: None)
    monkeypatch.setattr(ChildSet, "start", lambda self, name=None: None)   # no fork: the targets run here
    arb = arbiter.Arbiter.__new__(arbiter.Arbiter)
    arb.cfg, arb.control, arb.rings, arb._restarts = _cfg(8001), None, [], {}
    arb.children = ChildSet()
    arb.http_socket, ingest_socket = _listening(), _listening()
    arb.network_sockets = {arbiter.network_address(arb.cfg["inputs"]["ingest"]): ingest_socket}
    arb._start_children()
    # A reload that moves the sidecar's port keeps the listener (its settings are unchanged).
    old_http, arb.http_socket = arb.http_socket, _listening()
    old_http.close()
    arb.cfg = _cfg(8002)
    for name in [n for n in arb.children.children if n != "listener"]:
        del arb.children.children[name]
    arb._start_children()
    # The listener crashes and is forked again from its kept spec: its inherited copy of today's
    # sidecar socket must be closed (a port must not listen in a process that does not serve it).
    ctx = ChildContext("listener", arbiter.LISTENER_SLOT, "input", None, 0)
    arb.children.children["listener"].spec.target(ctx)
    assert arb.http_socket.fileno() == -1, "the sidecar's socket of now was left open in the listener"
    assert ingest_socket.fileno() != -1 and ran[-1].cfg["http"]["port"] == 8002
    ingest_socket.close()
