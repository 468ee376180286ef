"""Situations (detection/situations.py) on incident records of real replays of generated cascades.

A small workload of each family with cascades is replayed once per module through `replay
--incidents --situations`; the tests read what it wrote and feed its records to the correlator.
"""
import json

import pytest
from click.testing import CliRunner

from anomaly_detector.commands.replay import replay_command
from anomaly_detector.detection.situations import (
    Correlator,
    name_parts,
    parse_dependencies,
    situations_of,
    tokens_of,
)
from anomaly_detector.workload import cascades as generated_cascades
from anomaly_detector.workload.generator import generate
from bench import shopgen
from bench.situation_bench import score

LAYOUT = {"id": str, "first_seen": float, "last_seen": float, "incidents": list, "sources": list,
          "first_cause": dict, "confidence": float, "evidence": list}


def _replay(out, files, fmt=None):
    inc, sit = out / "incidents.jsonl", out / "situations.jsonl"
    args = ["--output", str(out / "replay.jsonl"), "--incidents", str(inc), "--situations", str(sit)]
    result = CliRunner().invoke(replay_command, args + (["--format", fmt] if fmt else []) + files,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(x) for x in open(inc)], [json.loads(x) for x in open(sit)]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    w = generate(str(out), days=1.5, seed=1, lines_per_day=120_000, fmt="jsonl", cascades=6)
    incidents, situations = _replay(out, w.files, "jsonl")
    return w, incidents, situations


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop")
    w = shopgen.generate(str(out), days=1.5, seed=1, lines_per_day=120_000, cascades=6)
    incidents, situations = _replay(out, w.files)
    return w, incidents, situations


def _scored(w, incidents, situations, known):
    labels = [lab for lab in w.incidents if "cascade" in lab["detail"]]
    return score(labels, w.cascades, incidents, situations, known)


# ---------------------------------------------------------------- replay --situations

@pytest.mark.parametrize("family", ["generated", "shop"])
def test_every_incident_is_in_exactly_one_situation_with_the_fixed_layout(family, request):
    _w, incidents, situations = request.getfixturevalue(family)
    listed = [iid for s in situations for iid in s["incidents"]]
    assert sorted(listed) == sorted(r["id"] for r in incidents) and len(set(listed)) == len(listed)
    assert [s["first_seen"] for s in situations] == sorted(s["first_seen"] for s in situations)
    for s in situations:
        assert list(s) == list(LAYOUT) and all(isinstance(s[k], t) for k, t in LAYOUT.items())
        assert set(s["first_cause"]) == {"source", "template", "onset"} and 0.0 <= s["confidence"] <= 1.0
        assert s["first_cause"]["source"] in s["sources"] and all(isinstance(e, str) for e in s["evidence"])
    assert any(len(s["incidents"]) > 1 for s in situations) and any(len(s["incidents"]) == 1 for s in situations)


def test_generated_cascades_are_one_situation_each_naming_the_root(generated):
    w, incidents, situations = generated
    results = [r for r in _scored(w, incidents, situations, list(w.sources)) if r["detected"] >= 2]
    assert len(results) >= 3
    assert all(r["one"] for r in results), results
    assert sum(r["cause"] for r in results) >= len(results) - 1, results
    assert sum(r["merged"] for r in results) == 0, results


def test_shop_cascades_are_one_situation_each_naming_the_root(shop):
    w, incidents, situations = shop
    results = [r for r in _scored(w, incidents, situations, list(shopgen.PROGRAMS)) if r["detected"] >= 2]
    assert len(results) >= 3
    assert all(r["one"] for r in results), results
    assert sum(r["cause"] for r in results) >= len(results) - 1, results
    assert sum(r["merged"] for r in results) == 0, results


def test_evidence_gives_each_source_its_onset_then_the_links(generated):
    _w, _incidents, situations = generated
    story = max(situations, key=lambda s: len(s["sources"]))
    assert len(story["sources"]) >= 2
    first = story["evidence"][0]
    assert first.startswith(story["first_cause"]["source"] + ": ") or " from " in first
    assert all(" from " in e for e in story["evidence"][:len(story["incidents"])])
    assert any("->" in e for e in story["evidence"][len(story["incidents"]):])


# ---------------------------------------------------------------- the correlator on those records

def _cascade_records(w, incidents, role):
    """Detected incidents of the first cascade's labelled incidents of a role, in order of onset."""
    labels = [lab for lab in w.incidents if lab["detail"].get("role") == role and lab["detail"]["cascade"] == 0]
    out = [r for lab in labels for r in incidents if r["source"] == lab["source"]
           and r["first_seen"] <= lab["end"] + 60 and r["last_seen"] >= lab["start"] - 60]
    return sorted(out, key=lambda r: r["first_seen"])


def test_time_overlap_alone_links_nothing_and_a_configured_dependency_does(generated):
    w, incidents, _ = generated
    root = _cascade_records(w, incidents, "root")[0]
    other = dict(_cascade_records(w, incidents, "unrelated")[0], first_seen=root["first_seen"] + 5)
    apart = situations_of([root, other])
    assert len(apart) == 2
    dep = "%s->%s" % (other["source"], root["source"])
    together = situations_of([root, other], dependencies=[dep])
    assert len(together) == 1 and together[0]["first_cause"]["source"] == root["source"]
    assert any("configured dependency" in e for e in together[0]["evidence"])


def test_the_situation_id_stays_as_incidents_join(generated):
    w, incidents, _ = generated
    members = _cascade_records(w, incidents, "root") + _cascade_records(w, incidents, "dependent")
    correlator = Correlator()
    first = correlator.add(members[0]).id
    ids = {correlator.add(r).id for r in sorted(members[1:], key=lambda r: r["first_seen"])}
    assert ids == {first}
    again = correlator.add(dict(members[0], last_seen=members[0]["last_seen"] + 30))   # an update
    assert again.id == first and len(again.members) == len(members)


def test_max_open_closes_the_quietest_early_and_loses_no_incident(generated):
    _w, incidents, _ = generated
    hits = []
    records = situations_of(incidents, max_open=1, on_limit=hits.append)   # unrelated and cascade: two at once
    assert "max_open" in hits
    listed = sorted(i for s in records for i in s["incidents"])
    assert listed == sorted(r["id"] for r in incidents)


def test_history_links_a_pair_whose_incidents_always_follow_each_other(generated):
    """Records stripped of their lines (no shared token, no name): only the learned history can link."""
    w, incidents, _ = generated
    root = dict(_cascade_records(w, incidents, "root")[0], samples=[], template="")
    dep = dict(_cascade_records(w, incidents, "dependent")[0], samples=[], template="")
    lag = dep["first_seen"] - root["first_seen"]
    correlator = Correlator(window_seconds=300)
    sizes = []
    for k in range(6):
        t = root["first_seen"] + 7200.0 * k
        correlator.close_quiet(t)
        a = correlator.add(dict(root, id="r%d" % k, first_seen=t, last_seen=t + 60))
        b = correlator.add(dict(dep, id="d%d" % k, first_seen=t + lag, last_seen=t + lag + 60))
        sizes.append(len(b.members) if a is b else 1)
    assert sizes[0] == 1 and sizes[-1] == 2
    ranked, confidence = correlator.rank(correlator.situation_of("d5"))
    assert ranked[0].source == root["source"] and 0.5 < confidence <= 1.0


def test_max_pairs_bounds_the_learned_pairs(generated):
    _w, incidents, _ = generated
    hits = []
    correlator = Correlator(max_pairs=2, on_limit=hits.append)
    for r in sorted(incidents, key=lambda r: r["first_seen"]):
        correlator.add(r)
    assert len(correlator.pairs) <= 2 and (hits == [] or set(hits) == {"max_pairs"})


# ---------------------------------------------------------------- the pieces

def test_tokens_keep_identifiers_and_called_hosts():
    tokens, words, calls = tokens_of(["timeout waiting for db-primary-1:5432 after 3000 ms request 0a1b2c3d4e5f"])
    assert {"db-primary-1", "port:5432", "0a1b2c3d4e5f"} <= tokens and calls == {"db-primary-1"}
    tokens, _, calls = tokens_of(["lock wait timeout exceeded on table orders host=db-primary-1 txn=88"])
    assert {"db-primary-1", "orders"} <= tokens and calls == frozenset()
    assert "took" in tokens_of(["query took 3.5 ms"])[1] and tokens_of(["query took 3.5 ms"])[0] == frozenset()


def test_name_parts_of_hosts_and_programs():
    assert name_parts("web-1/nginx") >= {"web-1/nginx", "web-1", "web", "nginx"}
    assert name_parts("db") == {"db"}


def test_dependencies_are_dependent_arrow_cause():
    assert parse_dependencies(["app->db", " web -> app "]) == {("app", "db"), ("web", "app")}
    with pytest.raises(ValueError, match="DEPENDENT->CAUSE"):
        parse_dependencies(["app db"])


def test_generated_cascades_spread_with_delays_and_name_the_dependency(generated):
    w, _incidents, _ = generated
    by_id = {lab["id"]: lab for lab in w.incidents}
    for c in w.cascades:
        starts = [by_id[i]["start"] for i in c["members"]]
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(10.0 <= g <= 90.0 for g in gaps), gaps
        root, dependents = generated_cascades.KINDS[c["kind"]]
        assert len(dependents) == 2 and by_id[c["root"]]["source"] == root[0]
        unrelated = by_id[c["unrelated"][0]]
        assert unrelated["source"] not in {by_id[i]["source"] for i in c["members"]}
        assert abs(unrelated["start"] - starts[0]) <= 120.0


def test_without_the_cascade_lines_a_seed_writes_what_it_wrote_without_cascades(generated, tmp_path):
    """Cascades draw from a stream of their own: detect_bench's workloads stay comparable."""
    w, _incidents, _ = generated
    plain = generate(str(tmp_path), days=1.5, seed=1, lines_per_day=120_000, fmt="jsonl")
    cascade_lines = {n for lab in w.incidents if "cascade" in lab["detail"] for n in lab["lines"]["workload.jsonl"]}
    with open(w.files[0], encoding="utf-8") as f:
        kept = [line for n, line in enumerate(f, 1) if n not in cascade_lines]
    with open(plain.files[0], encoding="utf-8") as f:
        assert kept == f.readlines()
    def same(labels):   # line numbers shift by the cascade lines before them; the rest is equal
        return [{k: v for k, v in lab.items() if k != "lines"} for lab in labels]
    assert same(lab for lab in w.incidents if "cascade" not in lab["detail"]) == same(plain.incidents)
    assert not plain.cascades
