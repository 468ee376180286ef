"""After the supervisor's warm-up, a worker's first ring batch compiles nothing: the kernels on the
worker's own path (joining the batch, the scored-lines record) were typed with the arrays a ring
batch has (writable copies), not with read-only views that numba types apart."""
from anomaly_detector.config.loader import load_config
from anomaly_detector.detection.output_kernels import record_prefix
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.worker import outputs, warmup
from anomaly_detector.worker.detector import input_parser, score_lines
from anomaly_detector.worker.joining import join_lines

KERNELS = (join_lines, outputs._render, outputs._invalid_utf8_lines)


def test_a_ring_batch_after_warm_up_adds_no_signature(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "c.ini").write_text("[paths]\nstate_dir = %s/state\nlog_dir = %s/log\n[inputs]\n[[app]]\ntype = file\n"
                                    "path = %s/logs/*.log\n" % (tmp_path, tmp_path, tmp_path))
    cfg, problems = load_config(str(tmp_path / "c.ini"))
    assert cfg, problems
    warmup.warm_up(cfg)
    before = [len(kernel.signatures) for kernel in KERNELS]
    ring = Ring.create(bytearray(ring_bytes(64, 1 << 16)), 64, 1 << 16)
    ring.writer().push_batch([b"2026-03-02T10:00:00.000Z INFO web GET /a 200 3ms", b"bad \xff utf-8 \x00"])
    buf, starts, ends, _ = ring.reader().pop_batch(10)
    parser = input_parser("app", cfg["inputs"]["app"], cfg["processing"]["max_line_bytes"], 256)
    records, names, ids = score_lines(Pipeline(cfg), parser, record_prefix("app"), buf, starts, ends, 1, True)
    assert outputs.scored_lines(records, buf, starts, ends, names, ids).count(b"\n") == 2
    assert [len(kernel.signatures) for kernel in KERNELS] == before
