"""Session ids no pattern names (detection/session_ids.py), learned from real replays of plain logs:
a job number shared by the steps of a job becomes their session key; a clock, an address or a user
id shared by unrelated lines does not; a job that skips a step is then reported."""
import json

import numpy as np
import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.tier4_sequence import MODE_PARAM
from anomaly_detector.pipeline import Pipeline

T0 = 1_772_000_000.0   # 2026-02-25


def _iso(t):
    import datetime
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def job_log(path, jobs=3000, broken=(), seed=0, first=0, archived_from=None, reused=0.0):
    """A worker's log: each job `received`, `rendered`, `uploaded`, `done` (ids in no pattern), other
    lines sharing clocks, addresses and user ids; jobs in `broken` never log `uploaded`; jobs from
    `archived_from` on also log `archived` (a step a deploy added); a `reused` share of jobs takes the
    number of the job before it (a number handed out again). Jobs first..jobs-1."""
    rng = np.random.default_rng(seed)
    lines = []
    t = T0 + 20.0 * first
    for k in range(first, jobs):
        t += float(rng.exponential(20.0))
        if not (reused and k > first and rng.random() < reused):   # (no draw at all when reused is 0)
            job = 40000 + 7 * k + int(rng.integers(0, 7))
        kind = ("invoice", "slip", "label")[int(rng.integers(0, 3))]
        steps = [(0.0, f"job {job} received type={kind}"),
                 (rng.uniform(0.2, 2), f"job {job} rendered in {int(rng.integers(20, 900))} ms"),
                 (rng.uniform(0.2, 2), f"job {job} uploaded to store in {int(rng.integers(5, 300))} ms"),
                 (rng.uniform(0.1, 1), f"job {job} done in {rng.uniform(0.5, 5):.1f} s")]
        if k in broken:
            del steps[2]
        if archived_from is not None and k >= archived_from:
            steps.append((rng.uniform(0.1, 1), f"job {job} archived to cold storage"))
        at = t
        for gap, text in steps:
            at += gap
            lines.append((at, "worker: " + text))
        clock = _iso(t)[11:23]
        lines.append((t + 0.5, f"cache: save started at {clock}"))
        lines.append((t + 0.5, f"cache: save finished at {clock}"))
        peer = "10.0.%d.%d" % (rng.integers(0, 4), rng.integers(1, 250))
        lines.append((t + 0.7, f"proxy: accepted {peer}"))
        lines.append((t + 0.8, f"proxy: closed {peer}"))
        user = "u%d" % rng.integers(0, 25)
        lines.append((t + 1.1, f"web: login ok user={user}"))
        lines.append((t + 1.3, f"web: order placed user={user}"))
    lines.sort()
    path.write_text("".join(f"{_iso(at)} INFO {text}\n" for at, text in lines))
    return path


def replay(path, learn=True, state=None):
    """Replay path; with state (a directory), first restore the state saved there, and save it after."""
    cfg = default_config()
    cfg["detection"]["tier4"]["learn_session_ids"] = learn
    pipeline = Pipeline(cfg)
    if state is not None:
        pipeline.load(str(state))
    records = [json.loads(line) for chunk in pipeline.process_file(str(path)) for line in chunk.splitlines()]
    incidents = pipeline.finish()
    if state is not None:
        pipeline.save(str(state))
    return pipeline, records, incidents


def learned(pipeline, what="tok"):
    """{template text: the learned id's parameter position (what="tok") or its family (what="pre")}."""
    loc = pipeline.engine.tiers["t4"].locator
    return {pipeline.miner.template(int(t)): int(getattr(loc, what)[t]) for t in np.flatnonzero(loc.mode == MODE_PARAM)}


def test_a_job_number_shared_by_the_steps_is_learned_as_their_session_id(tmp_path):
    pipeline, _, _ = replay(job_log(tmp_path / "jobs.log", jobs=1500))
    found = learned(pipeline)
    steps = {t.split()[3] for t in found if t.startswith("worker: job")}
    assert steps == {"received", "rendered", "uploaded", "done"}, found   # `received` is one template per type
    assert all(position == 0 for position in found.values()), found      # the job number, not a duration
    assert all(t.startswith("worker: job") for t in found), found        # no clock, address or user


def test_a_job_number_handed_out_again_now_and_then_is_still_their_session_id(tmp_path):
    # 3% of jobs share the number of the job before them: each step sees 3% of its values twice, far above
    # what a once-per-step id allows, but every value came back from the step before (a reused counter)
    pipeline, _, _ = replay(job_log(tmp_path / "jobs.log", jobs=1500, reused=0.03))
    found = learned(pipeline)
    steps = {t.split()[3] for t in found if t.startswith("worker: job")}
    assert steps == {"received", "rendered", "uploaded", "done"}, found
    assert all(t.startswith("worker: job") and position == 0 for t, position in found.items()), found


def test_nothing_learned_when_switched_off(tmp_path):
    pipeline, _, _ = replay(job_log(tmp_path / "jobs.log", jobs=600), learn=False)
    assert learned(pipeline) == {}


@pytest.mark.parametrize("learn", [True, False])
def test_jobs_that_skip_a_step_are_reported_only_with_learned_ids(tmp_path, learn):
    broken = set(range(2600, 2640))
    _, records, incidents = replay(job_log(tmp_path / "jobs.log", jobs=3000, broken=broken), learn=learn)
    reasons = " ".join(str(i.get("reason")) for i in incidents)
    # "'done' never follows 'rendered'" or "never finished": either way the job workflow is named
    assert ("workflow 'worker: job" in reasons) == learn, reasons[:2000]


@pytest.mark.parametrize("restart", [False, True])
def test_a_step_that_comes_later_joins_the_learned_family(tmp_path, restart):
    """Jobs gain an `archived` step after 1500 jobs (a deploy), when the other steps' ids are long
    learned: its job number joins their family, in one run or after a restart from saved state."""
    if restart:
        replay(job_log(tmp_path / "a.log", jobs=1500), state=tmp_path)
        pipeline, _, _ = replay(job_log(tmp_path / "b.log", first=1500, jobs=3000, archived_from=1500),
                                state=tmp_path)
    else:
        pipeline, _, _ = replay(job_log(tmp_path / "jobs.log", jobs=3000, archived_from=1500))
    families = learned(pipeline, "pre")
    archived = [f for t, f in families.items() if "archived" in t]
    received = {f for t, f in families.items() if "received" in t}
    assert len(archived) == 1 and len(received) == 1, families
    assert archived[0] in received, families


def hourly_log(path, hours=30, seed=0):
    """A backup every hour (started, dumped, uploaded, done, its tag in no pattern) among busy lines whose
    numbers (latencies, sizes) are often equal to the backup's: 30 runs, far fewer than MIN_VALUES."""
    rng = np.random.default_rng(seed)
    lines = []
    for h in range(hours):
        t = T0 + 3600.0 * h + 900.0
        tag = "2026%04d-%02d15" % (225 + h // 24, h % 24)
        at = t
        for gap, text in ((0.0, f"backup {tag} started: type=incr"),
                          (rng.uniform(30, 140), f"backup {tag} dump finished: {rng.integers(1, 99)} GB in {rng.integers(30, 140)} s"),
                          (rng.uniform(8, 40), f"backup {tag} upload finished in {rng.integers(8, 40)} s"),
                          (0.5, f"backup {tag} done")):
            at += gap
            lines.append((at, "pg-backup: " + text))
    t = T0
    while t < T0 + 3600.0 * hours:
        t += float(rng.exponential(4.0))
        lines.append((t, f"api: GET /items/{rng.integers(1, 99)} took {rng.integers(1, 140)} ms"))
    lines.sort()
    path.write_text("".join(f"{_iso(at)} INFO {text}\n" for at, text in lines))
    return path


def test_an_hourly_job_tag_is_learned_from_its_first_runs(tmp_path):
    pipeline, _, _ = replay(hourly_log(tmp_path / "hourly.log"))
    found = learned(pipeline)
    steps = {t.split()[3] for t in found if t.startswith("pg-backup: backup")}
    assert steps == {"started:", "dump", "upload", "done"}, found
    assert all(t.startswith("pg-backup:") for t in found), found   # no latency or item number
