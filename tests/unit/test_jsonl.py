"""parse_json_line: keys and dotted paths, and the bounds on hostile input."""
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing.jsonl import parse_json_line, parse_json_line_reason


def test_default_keys():
    r = parse_json_line('{"message":"hi","timestamp":"2026-03-02T10:00:00Z","source":"web","level":"warn","x":1}')
    assert (r["message"], r["timestamp"], r["source"], r["level"]) == ("hi", "2026-03-02T10:00:00Z", "web", "warn")
    assert r["fields"]["x"] == 1


def test_dotted_paths_and_flat_dotted_keys():
    line = '{"log":{"msg":"nested","lvl":"error"},"@ts":1717171717,"host.name":"h1"}'
    r = parse_json_line(line, message_key="log.msg", timestamp_key="@ts", source_key="host.name",
                        level_key="log.lvl")
    assert (r["message"], r["timestamp"], r["source"], r["level"]) == ("nested", 1717171717, "h1", "error")
    assert parse_json_line(line, message_key="log.nope.deeper")["message"] is None


def test_non_string_message_is_serialised():
    assert parse_json_line('{"message":{"a":[1,2]}}')["message"] == '{"a":[1,2]}'
    assert parse_json_line('{"message":42}')["message"] == "42"


def test_rejections_have_reasons():
    assert parse_json_line_reason("{bad") == (None, "not_json")
    assert parse_json_line_reason("[1,2]") == (None, "not_object")
    assert parse_json_line_reason('"s"') == (None, "not_object")
    assert parse_json_line_reason("x" * 2_000_000) == (None, "too_long")
    assert parse_json_line_reason("[" * 65 + "]" * 65) == (None, "too_deep")
    assert parse_json_line_reason('{"a":' * 100 + "1" + "}" * 100) == (None, "too_deep")
    assert parse_json_line("{bad") is None


def test_depth_64_is_accepted_and_brackets_in_strings_do_not_count():
    ok = '{"a":' * 63 + '{"message":"deep"}' + "}" * 63
    assert parse_json_line(ok) is not None
    assert parse_json_line('{"message":"' + "[" * 500 + '"}')["message"] == "[" * 500


def _bounded(line, limit=0.5):
    t = time.perf_counter()
    result = parse_json_line_reason(line)
    assert time.perf_counter() - t < limit  # generous for a loaded machine; normally well under 100 ms
    return result


def test_hostile_inputs_are_bounded():
    assert _bounded("[" * 1_100_000)[1] == "too_long"
    assert _bounded("[" * 900_000)[1] == "too_deep"
    assert _bounded('{"message":1e999999}')[0]["message"] == "Infinity"
    assert _bounded('{"n":' + "9" * 100_000 + "}")[1] == "not_json"  # beyond the int digit limit
    many = "{" + ",".join(f'"k{i}":0' for i in range(90_000)) + "}"
    assert _bounded(many)[0] is not None
    assert _bounded('{"a":"' + "\\" * 500_000 + '"}')[1] in ("not_json", None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20).map(str))
def test_never_raises(line):
    record, reason = parse_json_line_reason(line)
    assert (record is None) != (reason is None)
