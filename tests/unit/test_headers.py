"""HeaderFormat: all 16 Loghub formats, the 10 samples against their structured CSVs, and the kernel."""
import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing import header_kernels as hk
from anomaly_detector.parsing.headers import (
    LOGHUB_FORMATS,
    HeaderFormat,
    HeaderFormatError,
)


def _data_dir():
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "shared" / "data" / "loghub-2k", Path("/work/shared/data/loghub-2k")):
        if cand.is_dir():
            return cand
    return None


DATA = _data_dir()
SAMPLED = ["HDFS", "Hadoop", "Spark", "Zookeeper", "OpenStack", "Apache", "Linux", "Mac", "Android", "HealthApp"]
SIMPLE = ["HDFS", "Spark", "Hadoop", "Zookeeper", "Android", "HealthApp", "OpenStack", "Apache"]


def sample_lines(name):
    if DATA is None:
        pytest.skip("Loghub samples not found beside the repo")
    raw = (DATA / name / f"{name}_2k.log").read_bytes()
    return [ln.rstrip(b"\r").decode("utf-8") for ln in raw.split(b"\n") if ln.strip()]


def structured_rows(name):
    with open(DATA / name / f"{name}_2k.log_structured.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", SAMPLED)
def test_match_reproduces_structured_csv(name):
    lines = sample_lines(name)
    rows = structured_rows(name)
    hf = HeaderFormat(LOGHUB_FORMATS[name])
    assert len(lines) == len(rows) == 2000
    for line, row in zip(lines, rows):
        got = hf.match(line)
        assert got is not None, line
        want = {f: row[f] for f in hf.fields}
        assert got == want, line
    assert set(hf.fields) == set(rows[0]) - {"LineId", "EventId", "EventTemplate"}


HANDWRITTEN = {
    "BGL": [
        (("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 "
         "RAS KERNEL INFO instruction cache parity error corrected"),
         {"Label": "-", "Timestamp": "1117838570", "Date": "2005.06.03", "Node": "R02-M1-N0-C:J12-U11",
          "Time": "2005-06-03-15.42.50.675872", "NodeRepeat": "R02-M1-N0-C:J12-U11", "Type": "RAS",
          "Component": "KERNEL", "Level": "INFO", "Content": "instruction cache parity error corrected"}),
        (("APPREAD 1117869872 2005.06.04 R04-M1-N4-I:J18-U11 2005-06-04-00.24.32.432192 R04-M1-N4-I:J18-U11 "
         "RAS APP FATAL ciod: failed to read message prefix on control stream (CioStream socket to "
         "172.16.96.116:33569"),
         {"Label": "APPREAD", "Timestamp": "1117869872", "Date": "2005.06.04", "Node": "R04-M1-N4-I:J18-U11",
          "Time": "2005-06-04-00.24.32.432192", "NodeRepeat": "R04-M1-N4-I:J18-U11", "Type": "RAS",
          "Component": "APP", "Level": "FATAL",
          "Content": "ciod: failed to read message prefix on control stream (CioStream socket to 172.16.96.116:33569"}),
    ],
    "HPC": [
        (("134681 node-246 unix.hw state_change.unavailable 1077804742 1 Component State Change: Component "
         "\\042SCSI-WWID:01000010:6005-08b4-0001-00c6-0006-3000-003d-0000\\042 is in the unavailable state (HWID=1973)"),
         {"LogId": "134681", "Node": "node-246", "Component": "unix.hw", "State": "state_change.unavailable",
          "Time": "1077804742", "Flag": "1",
          "Content": "Component State Change: Component \\042SCSI-WWID:01000010:6005-08b4-0001-00c6-0006-3000-003d-0000"
                     "\\042 is in the unavailable state (HWID=1973)"}),
        ("2560 node-70 action start 1074119817 1 clusterAddMember  (command 1902)",
         {"LogId": "2560", "Node": "node-70", "Component": "action", "State": "start", "Time": "1074119817",
          "Flag": "1", "Content": "clusterAddMember  (command 1902)"}),
    ],
    "Thunderbird": [
        ("- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed for user root",
         {"Label": "-", "Timestamp": "1131566461", "Date": "2005.11.09", "User": "dn228", "Month": "Nov",
          "Day": "9", "Time": "12:01:01", "Location": "dn228/dn228", "Component": "crond(pam_unix)",
          "PID": "2915", "Content": "session closed for user root"}),
        (("- 1131566463 2005.11.09 tbird-admin1 Nov 10 10:01:03 local@tbird-admin1 postfix/postdrop: warning: "
         "unable to look up public/pickup: No such file or directory"),
         {"Label": "-", "Timestamp": "1131566463", "Date": "2005.11.09", "User": "tbird-admin1", "Month": "Nov",
          "Day": "10", "Time": "10:01:03", "Location": "local@tbird-admin1", "Component": "postfix/postdrop",
          "PID": "", "Content": "warning: unable to look up public/pickup: No such file or directory"}),
    ],
    "Windows": [
        (("2016-09-28 04:30:30, Info                  CBS    Loaded Servicing Stack v6.1.7601.23505 with Core: "
         "C:\\Windows\\winsxs\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_6.1.7601.23505_none_"
         "681aa442f6fed7f0\\cbscore.dll"),
         {"Date": "2016-09-28", "Time": "04:30:30", "Level": "Info", "Component": "CBS",
          "Content": "Loaded Servicing Stack v6.1.7601.23505 with Core: C:\\Windows\\winsxs\\amd64_microsoft-"
                     "windows-servicingstack_31bf3856ad364e35_6.1.7601.23505_none_681aa442f6fed7f0\\cbscore.dll"}),
        (("2016-09-28 04:30:31, Info                  CSI    00000001@2016/9/27:20:30:31.455 WcpInitialize "
         "(wcp.dll version 0.0.0.6) called (stack @0x7fed806eb5d @0x7fef9fb9b6d)"),
         {"Date": "2016-09-28", "Time": "04:30:31", "Level": "Info", "Component": "CSI",
          "Content": "00000001@2016/9/27:20:30:31.455 WcpInitialize (wcp.dll version 0.0.0.6) called "
                     "(stack @0x7fed806eb5d @0x7fef9fb9b6d)"}),
    ],
    "OpenSSH": [
        (("Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for "
         "ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!"),
         {"Date": "Dec", "Day": "10", "Time": "06:55:46", "Component": "LabSZ", "Pid": "24200",
          "Content": "reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] "
                     "failed - POSSIBLE BREAK-IN ATTEMPT!"}),
        ("Dec 10 06:55:48 LabSZ sshd[24200]: Connection closed by 173.234.31.186 [preauth]",
         {"Date": "Dec", "Day": "10", "Time": "06:55:48", "Component": "LabSZ", "Pid": "24200",
          "Content": "Connection closed by 173.234.31.186 [preauth]"}),
    ],
    "Proxifier": [
        ("[10.30 16:49:06] chrome.exe - proxy.cse.cuhk.edu.hk:5070 open through proxy proxy.cse.cuhk.edu.hk:5070 HTTPS",
         {"Time": "10.30 16:49:06", "Program": "chrome.exe",
          "Content": "proxy.cse.cuhk.edu.hk:5070 open through proxy proxy.cse.cuhk.edu.hk:5070 HTTPS"}),
        ("[10.30 16:49:07] chrome.exe *64 - play.google.com:443 close, 0 bytes sent, 0 bytes received, lifetime <1 sec",
         {"Time": "10.30 16:49:07", "Program": "chrome.exe *64",
          "Content": "play.google.com:443 close, 0 bytes sent, 0 bytes received, lifetime <1 sec"}),
    ],
}


def _drop_label(fmt):
    return fmt.replace("<Label> ", "", 1)


@pytest.mark.parametrize("name", sorted(HANDWRITTEN))
def test_handwritten_formats(name):
    hf = HeaderFormat(LOGHUB_FORMATS[name])
    for line, want in HANDWRITTEN[name]:
        assert hf.match(line) == want
        _check_kernel_agrees(hf, [line])


@pytest.mark.parametrize("name", ["BGL", "Thunderbird"])
def test_label_can_be_dropped(name):
    hf = HeaderFormat(_drop_label(LOGHUB_FORMATS[name]))
    assert "Label" not in hf.fields
    for line, want in HANDWRITTEN[name]:
        unlabeled = line.split(" ", 1)[1]
        expect = {k: v for k, v in want.items() if k != "Label"}
        assert hf.match(unlabeled) == expect
        _check_kernel_agrees(hf, [unlabeled])


def test_all_sixteen_formats_compile():
    assert len(LOGHUB_FORMATS) == 16
    for name, fmt in LOGHUB_FORMATS.items():
        hf = HeaderFormat(fmt)
        assert hf.fields[-1] == "Content", name


def test_non_matching_line_is_none():
    hf = HeaderFormat(LOGHUB_FORMATS["Apache"])
    assert hf.match("no brackets here") is None
    assert HeaderFormat(LOGHUB_FORMATS["HDFS"]).match("081109 203615 148 INFO") is None


def test_optional_group_fields():
    hf = HeaderFormat(LOGHUB_FORMATS["Linux"])
    assert hf.match("Jun 15 04:06:20 combo logrotate: ALERT exited")["PID"] == ""
    assert hf.match("Jun 15 04:06:20 combo su(pam_unix)[21416]: session opened")["PID"] == "21416"
    assert hf.optional_fields == {"PID"}


def test_literal_regex_characters_are_literal():
    hf = HeaderFormat("<A>.*<B>+ $<Content>")
    assert hf.match("x.*y+ $rest") == {"A": "x", "B": "y", "Content": "rest"}
    assert hf.match("xzzy+ $rest") is None


@pytest.mark.parametrize("bad", [
    "", "   ", "<Date> <Time>", "<Date <Content>", "<Da te> <Content>", "<A> <A> <Content>",
    "(<A> <Content>", "<A>) <Content>", "<A>)? <Content>", "<A> <Content>\\", "\\d<A> <Content>",
    "(<A>)?)? <Content>",
])
def test_bad_formats_raise_one_line_error(bad):
    with pytest.raises(HeaderFormatError) as info:
        HeaderFormat(bad)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# ---- the numba fast path -------------------------------------------------------------------


def _buffer(lines):
    data = "\n".join(lines).encode("utf-8")
    buf = np.frombuffer(data, dtype=np.uint8)   # read-only, as the kernels are declared: no second compile
    starts, ends, pos = [], [], 0
    for line in lines:
        n = len(line.encode("utf-8"))
        starts.append(pos)
        ends.append(pos + n)
        pos += n + 1
    return buf, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _check_kernel_agrees(hf, lines):
    """Wherever the kernel says ok, its spans must decode to exactly what match() returns."""
    buf, starts, ends = _buffer(lines)
    ok, fs, fe = hf.split_batch(buf, starts, ends)
    raw = buf.tobytes()
    for i, line in enumerate(lines):
        if not ok[i]:
            continue
        got = {f: raw[fs[i, j]:fe[i, j]].decode("utf-8") for j, f in enumerate(hf.fields)}
        assert got == hf.match(line), line
    return ok


@pytest.mark.parametrize("name", SAMPLED)
def test_split_batch_agrees_with_match_on_samples(name):
    hf = HeaderFormat(LOGHUB_FORMATS[name])
    ok = _check_kernel_agrees(hf, sample_lines(name))
    assert ok.mean() > 0.99  # optional-group formats (Linux, Mac) too


def test_split_batch_backtracking_case_falls_back():
    # The regex finds B='' by giving back one space; the kernel's first choice fails, so ok=False.
    hf = HeaderFormat("<A> <B> <Content>")
    assert hf.match("a  b") == {"A": "a", "B": "", "Content": "b"}
    assert not _check_kernel_agrees(hf, ["a  b"])[0]


def test_split_batch_unicode_whitespace_and_edges():
    hf = HeaderFormat(LOGHUB_FORMATS["HDFS"])
    lines = [
        "\u3000081109 203615 148 INFO dfs.X: hello\u00a0",
        "081109\u2003203615 148 INFO dfs.X: hello",
        "081109 203615 148 INFO dfs.X:\u2028hello",
        "  081109 203615 148 INFO dfs.X: é ü \t ",
        "081109 203615 148 INFO dfs.X: a\nb",
        "081109 203615 148 INFO dfs.X:",
        "",
        "081109 203615 148 INFO dfs.X: ",
    ]
    ok = _check_kernel_agrees(hf, lines)
    assert ok[:4].all() and not ok[4]


def test_ws_len_matches_python_isspace():
    for cp in list(range(0x3100)) + [0x205F, 0x2028, 0x2029, 0x202F, 0xFEFF, 0x10FFFF]:
        ch = chr(cp)
        if 0xD800 <= cp < 0xE000:
            continue
        data = ch.encode("utf-8")
        buf = np.frombuffer(data, dtype=np.uint8)
        want = len(data) if ch.isspace() else 0
        assert hk.ws_len_at(buf, 0, len(data)) == want, hex(cp)
        assert hk.ws_len_before(buf, 0, len(data)) == want, hex(cp)


# ---- against logparser's own regex construction, and the backtracking guard ------------------


def _logparser_regex(fmt):
    """generate_logformat_regex of logpai/logparser, verbatim in behaviour."""
    import re

    splitters = re.split(r"(<[^<>]+>)", fmt)
    regex = ""
    for k, part in enumerate(splitters):
        if k % 2 == 0:
            regex += re.sub(" +", "\\\\s+", part)
        else:
            regex += "(?P<%s>.*?)" % part.strip("<").strip(">")
    return re.compile("^" + regex + "$")


_ALPHABET = st.sampled_from(list("ab1:-[]|,()@ \t") + [" [", "]: ", " - ", "\u00a0", "sshd["])


@settings(max_examples=200, deadline=None)
@given(st.lists(_ALPHABET, max_size=14).map("".join))
def test_match_equals_logparser_regex(line):
    for fmt in LOGHUB_FORMATS.values():
        m = _logparser_regex(fmt).search(line.strip())
        want = None if m is None else {k: (v if v is not None else "") for k, v in m.groupdict().items()}
        assert HeaderFormat(fmt).match(line) == want


def test_non_fitting_long_line_returns_fast():
    import time

    words = " ".join(f"w{i}" for i in range(400))
    for fmt in LOGHUB_FORMATS.values():
        hf = HeaderFormat(fmt)
        t = time.perf_counter()
        hf.match(words + " no colon here")
        hf.match("[" + words)
        assert time.perf_counter() - t < 0.5, fmt


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["WARN", "warn", " Error ", "F", "info\t", "CRITICAL", "notice", "Dbg",
                                           "é", "INFO\u00a0", "", "  ", "fatal", "FAILURE", "x" * 20]),
                          st.text(max_size=8)), max_size=12))
def test_level_codes_kernel_matches_level_code(words):
    from anomaly_detector.parsing.batch import level_code

    data = "\n".join(words).encode("utf-8", "surrogatepass")
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends, pos = [], [], 0
    for w in words:
        n = len(w.encode("utf-8", "surrogatepass"))
        starts.append(pos)
        ends.append(pos + n)
        pos += n + 1
    names, lengths, codes = hk.level_table()
    got = hk.level_codes(buf, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), names, lengths, codes)
    for w, code in zip(words, got.tolist()):
        if code >= 0:
            assert code == level_code(w), w
        else:
            assert not w.isascii()
