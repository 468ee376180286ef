"""Header formats recognised on an input's first lines when no log_format is configured."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from test_records import DATA, _compare

from anomaly_detector.config.loader import load_config
from anomaly_detector.parsing.batch import LEVEL_CRITICAL, LEVEL_UNKNOWN
from anomaly_detector.parsing.columns import parse_columns
from anomaly_detector.parsing.headers import LOGHUB_FORMATS
from anomaly_detector.parsing.records import RecordParser
from anomaly_detector.worker.detector import input_parser

# Datasets whose lines carry their level in a header the plain parser does not read: found.
FOUND = ["HDFS", "OpenStack", "Zookeeper", "Android"]
# Read by the plain parser already (Hadoop, Spark, Apache) or without a level field at all: unchanged.
NOT_FOUND = ["Hadoop", "Spark", "Apache", "Linux", "Mac", "HealthApp"]


def _sample(name):
    if DATA is None:
        pytest.skip("Loghub-2k samples not found")
    return (DATA / name / (name + "_2k.log")).read_bytes()


def bgl_lines(n=300, fatal_every=0):
    """BGL-style RAS lines: a label column, epoch, date, node, time, node, type, component, level."""
    out = []
    for i in range(n):
        fatal = fatal_every and i % fatal_every == fatal_every - 1
        label, level, text = ("KERNDTLB", "FATAL", "data TLB error interrupt") if fatal else \
            ("-", "INFO", "instruction cache parity error corrected")
        t = 1117838570 + i
        node = "R%02d-M1-N%d-C:J12-U11" % (i % 8, i % 10)
        out.append("%s %d 2005.06.03 %s 2005-06-03-15.%02d.%02d.%06d %s RAS KERNEL %s %s"
                   % (label, t, node, (42 + i // 60) % 60, i % 60, i * 7, node, level, text))
    return out


@pytest.mark.parametrize("name", FOUND)
def test_a_header_with_a_level_the_plain_parser_misses_is_found(name):
    parser = RecordParser(detect_log_format=True, source=name)
    cols = parse_columns(parser, _sample(name))
    assert parser.detected_log_format == LOGHUB_FORMATS[name]
    assert (cols.level != LEVEL_UNKNOWN).all() and np.isfinite(cols.ts).all()


@pytest.mark.parametrize("name", NOT_FOUND)
def test_lines_the_plain_parser_reads_or_without_a_level_field_are_left_alone(name):
    parser = RecordParser(detect_log_format=True, source=name)
    parse_columns(parser, _sample(name))
    assert parser.detected_log_format == ""


def test_bgl_lines_get_their_level_and_time_from_the_header():
    data = ("\n".join(bgl_lines(300, fatal_every=50)) + "\n").encode()
    parser = RecordParser(detect_log_format=True, source="bgl")
    cols = parse_columns(parser, data)
    assert parser.detected_log_format == LOGHUB_FORMATS["BGL"]
    assert int((cols.level == LEVEL_CRITICAL).sum()) == 6
    assert cols.content(49) == "data TLB error interrupt"
    assert not math.isnan(cols.ts[0])


def test_without_detection_nothing_changes():
    data = ("\n".join(bgl_lines(300, fatal_every=50)) + "\n").encode()
    parser = RecordParser(source="bgl")
    cols = parse_columns(parser, data)
    assert parser.detected_log_format == "" and (cols.level == LEVEL_UNKNOWN).all()


@pytest.mark.parametrize("name", ["HDFS", "Zookeeper"])
def test_parse_columns_still_equals_parse_many_with_detection(name):
    data = _sample(name)
    cols = _compare({"detect_log_format": True, "source": name}, data)
    assert (cols.level != LEVEL_UNKNOWN).all()


def test_few_lines_wait_for_more_then_decide():
    parser = RecordParser(detect_log_format=True, source="bgl")
    lines = bgl_lines(120)
    parse_columns(parser, ("\n".join(lines[:10]) + "\n").encode())
    assert parser.wants_sniff                     # 10 lines are not enough to decide
    cols = parse_columns(parser, ("\n".join(lines[10:]) + "\n").encode())
    assert parser.detected_log_format == LOGHUB_FORMATS["BGL"] and (cols.level != LEVEL_UNKNOWN).all()


def _input_section(tmp_path, extra):
    (tmp_path / "c.ini").write_text("[paths]\nstate_dir = %s/state\nlog_dir = %s/log\n[inputs]\n[[bgl]]\n"
                                    "type = file\npath = %s/*.log\n%s" % (tmp_path, tmp_path, tmp_path, extra))
    cfg, problems = load_config(str(tmp_path / "c.ini"))
    assert cfg, problems
    return cfg["inputs"]["bgl"]


@pytest.mark.parametrize("extra, found", [("", LOGHUB_FORMATS["BGL"]), ("detect_log_format = false\n", "")])
def test_the_input_key_turns_detection_off(tmp_path, extra, found):
    parser = input_parser("bgl", _input_section(tmp_path, extra), 65536, 256)
    parse_columns(parser, ("\n".join(bgl_lines(200)) + "\n").encode())
    assert parser.detected_log_format == found


def test_replay_flags_fatal_bgl_lines_without_a_format_and_not_with_content_only(tmp_path):
    path = tmp_path / "bgl.log"
    path.write_text("\n".join(bgl_lines(3000, fatal_every=500)) + "\n")
    flagged = []
    for extra in ([], ["--log-format", "<Content>"]):
        out = tmp_path / "out.jsonl"
        subprocess.run([sys.executable, "-m", "anomaly_detector", "replay", str(path), "--output", str(out)] + extra,
                       check=True, capture_output=True)
        flagged.append(sum(json.loads(line)["anomaly"] for line in out.open()))
    assert flagged == [6, 0]


def test_a_header_behind_docker_compose_prefixes_is_found():
    lines = _sample("HDFS").splitlines()[:300]
    parser = RecordParser(detect_log_format=True, source_prefix="auto", source="x")
    cols = parse_columns(parser, b"".join(b"hdfs-1  | " + line + b"\n" for line in lines))
    assert parser.detected_log_format == LOGHUB_FORMATS["HDFS"]
    assert "hdfs" in cols.sources and (cols.level != LEVEL_UNKNOWN).all()


def _regex_shares(header, texts):
    """fit_shares as the regex alone reads the lines (the reference of the kernel-split version)."""
    from anomaly_detector.parsing.batch import level_code
    from anomaly_detector.parsing.timestamps import TimestampParser
    level, stamps, fits, stamped = header.fields[header.level_index], TimestampParser(), 0, 0
    for text in texts:
        fields = header.match(text)
        if fields is not None and level_code(fields[level]) != LEVEL_UNKNOWN:
            fits += 1
            stamped += stamps.from_fields(fields) is not None
    return fits / len(texts), stamped / len(texts)


SYSLOG_FILE = ["Mar  5 00:00:%02d web-%d nginx[%d]: 10.0.0.%d - - \"GET /item/%d HTTP/1.1\" 200 512 \"-\" \"curl/8\" rt=0.%03d"
               % (i % 60, i % 2, 900 + i, i, i, i) for i in range(150)] + \
              ["Mar  5 00:01:%02d db-1 postgres[%d]: [7-1] LOG:  duration: 1.%d ms  statement: SELECT 1" % (i, i, i)
               for i in range(50)]


@pytest.mark.parametrize("name", FOUND + NOT_FOUND + ["infra"])
def test_kernel_split_fit_shares_equal_the_regex_and_stop_early_only_below_the_bar(name):
    from anomaly_detector.parsing.header_sniff import MIN_FIT_SHARE, best_format, candidates, fit_shares
    texts = SYSLOG_FILE if name == "infra" else _sample(name).decode("utf-8", "replace").splitlines()[:200]
    best = None
    for format_name, header in candidates():
        want = _regex_shares(header, texts)
        assert fit_shares(header, texts) == want, header
        early = fit_shares(header, texts, MIN_FIT_SHARE)
        assert early == want if want[0] >= MIN_FIT_SHARE else early[0] < MIN_FIT_SHARE, header
        rank = want + (len(header.fields),)
        if want[0] >= MIN_FIT_SHARE and (best is None or rank > best[0]):
            best = (rank, format_name, header.format)
    assert best_format(texts) == (None if best is None else best[1:])
    if name in FOUND:
        assert best[2] == LOGHUB_FORMATS[name]
