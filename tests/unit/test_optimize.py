"""--optimize-models: the miner's compaction, the request a running worker takes, the command on the files
of a stopped daemon and its lock. On a live daemon: tests/integration/test_maintenance.py."""
import json
import os
import time

from click.testing import CliRunner

from anomaly_detector import cli
from anomaly_detector.config.loader import load_config
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.storage import locks
from anomaly_detector.storage.layout import worker_paths
from anomaly_detector.worker import optimize

JOBS = ("alpha", "bravo", "charlie")


def job_line(name, i):
    return "scheduler job %s finished successfully on node %d after retry" % (name, i)


def learned_miner():
    miner = TemplateMiner(max_templates=100)
    for name in JOBS:
        for i in range(4):
            miner.add_line(job_line(name, i))
    miner.add_line("VM Started on the host right now")
    miner.add_line("VM Paused on the host right now")
    return miner


def test_near_duplicates_merge_at_the_threshold_asked():
    miner = learned_miner()
    assert miner.counts()["templates"] == 5        # online: 3 words are not yet a value (it waits for 5)
    assert miner.merge_near_duplicates(4) == 0     # a group of 3 stays below 4
    assert miner.merge_near_duplicates(3) == 2
    assert miner.counts() == {"templates": 3, "archived": 0, "aliases": 2}
    texts = [t for _tid, t, _n in miner.templates()]
    assert "scheduler job <*> finished successfully on node <*> after retry" in texts
    assert "VM Started on the host right now" in texts   # two words: not merged
    assert sorted(miner.take_widened()) == [0, 1, 2]


def test_merged_ids_keep_mapping_lines_and_survive_a_reload():
    miner = learned_miner()
    ids = {name: miner.add_line(job_line(name, 9))[0] for name in JOBS}
    miner.merge_near_duplicates(3)
    survivor = min(ids.values())
    assert {miner.current_id(t) for t in ids.values()} == {survivor}
    assert miner.add_line(job_line("bravo", 11))[0] == survivor
    again = TemplateMiner.from_state(json.loads(json.dumps(miner.to_state())), max_templates=100)
    assert again.counts()["templates"] == 3 and again.add_line(job_line("charlie", 12))[0] == survivor


def test_rebuild_indexes_forgets_shapes_of_ids_gone_from_the_archive():
    miner = learned_miner()
    miner._archived_shapes[12345] = 999          # an id the archive no longer holds
    assert miner.rebuild_indexes() == 1 and 12345 not in miner._archived_shapes
    assert miner.add_line(job_line("alpha", 3))[0] == 0   # the shape table still finds it


def test_archived_templates_evicted_long_ago_are_pruned():
    miner = TemplateMiner(max_templates=16, archive_size=64)
    for i in range(40):     # distinct events: the live set of 16 evicts a sixteenth at a time
        miner.add_line("event number%s happened in subsystem%s today" % (chr(97 + i % 26) * (1 + i // 26),
                                                                      chr(97 + i % 26)))
    archived = miner.counts()["archived"]
    assert archived > 0
    assert miner.prune_archive(time.time() - 86400) == []          # evicted just now: kept
    state = json.loads(json.dumps(miner.to_state()))
    old = sorted(miner._archived_at)[:3]
    for row in state["archived_at"]:
        if row[0] in old:
            row[1] = time.time() - 100 * 86400
    again = TemplateMiner.from_state(state, max_templates=16, archive_size=64)   # eviction times are saved
    assert sorted(again.prune_archive(time.time() - 90 * 86400)) == old
    assert again.counts()["archived"] == archived - 3
    assert not set(old) & set(again._archived_shapes.values())


def test_compact_reports_merged_and_pruned():
    pipeline = Pipeline(make_config_dict())
    pipeline.miner = learned_miner()
    figures = optimize.compact(pipeline, {"merge_min_values": 3, "stale_template_days": 90})
    assert figures["before"]["templates"] == 5 and figures["after"]["templates"] == 3
    assert figures["merged"] == 2 and figures["pruned"] == 0


def make_config_dict():
    from anomaly_detector.config.loader import default_config
    return default_config()


def test_a_worker_applies_each_request_once(tmp_path):
    state = str(tmp_path)
    requests = optimize.OptimizeRequests(state, 0)
    assert requests.poll() is None                 # no request
    retention = {"merge_min_values": 3, "stale_template_days": 90}
    optimize.write_request(state, optimize.make_request("r1", retention))
    got = requests.poll()
    assert got == {"id": "r1", "merge_min_values": 3, "stale_template_days": 90}
    assert requests.poll() is None                 # unchanged file: one stat, nothing
    requests.done(got, {"merged": 2})
    assert optimize.read_json(optimize.result_path(state, 0)) == {"merged": 2, "id": "r1"}
    optimize.write_request(state, optimize.make_request("r1", retention))         # rewritten with the same id: already applied
    assert requests.poll() is None
    assert optimize.OptimizeRequests(state, 0).poll() is None    # a restarted worker remembers it
    optimize.write_request(state, optimize.make_request("r2", retention))
    assert requests.poll()["id"] == "r2"


def make_config(tmp_path):
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = {d}/state\nlog_dir = {d}/log\n[processing]\nworkers = 1\n"
                    "[inputs]\n[[app]]\npath = {d}/app.log\n[retention]\nmerge_min_values = 3\n".format(d=tmp_path))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, [p.render() for p in problems]
    return cfg, str(path)


def saved_templates(cfg, index=0):
    pipeline = Pipeline(cfg)
    assert pipeline.load(worker_paths(cfg["paths"]["state_dir"], index)) or True
    return pipeline.miner.counts()["templates"]


def test_command_compacts_the_files_of_a_stopped_worker(tmp_path):
    cfg, path = make_config(tmp_path)
    pipeline = Pipeline(cfg)
    pipeline.miner = learned_miner()
    paths = worker_paths(cfg["paths"]["state_dir"], 0)
    pipeline.save(paths)
    result = CliRunner().invoke(cli.cli, ["--config", path, "--optimize-models"])
    assert result.exit_code == 0, result.output
    assert "worker 0 (on disk): templates 5 -> 3 (2 near-duplicates merged)" in result.output, result.output
    assert "optimize: templates 5 -> 3 over 1 worker(s)" in result.output
    assert saved_templates(cfg) == 3
    assert os.path.exists(paths.templates + ".prev")       # the generation before is kept


def test_a_second_optimize_is_refused_by_the_lock(tmp_path):
    cfg, path = make_config(tmp_path)
    fd = locks.take(locks.lock_path(cfg["paths"]["state_dir"], "optimize"))
    try:
        result = CliRunner().invoke(cli.cli, ["--config", path, "--optimize-models"])
    finally:
        locks.release(fd)
    assert result.exit_code == 3
    assert "another --optimize-models is running (it holds %s" % locks.lock_path(cfg["paths"]["state_dir"],
                                                                                 "optimize") in result.output


def test_a_running_worker_that_does_not_answer_is_an_error(tmp_path):
    cfg, path = make_config(tmp_path)
    with open(path, "a") as f:
        f.write("optimize_wait_seconds = 1\n")
    held = locks.take(locks.lock_path(cfg["paths"]["state_dir"], "worker-0"), exclusive=False)
    try:
        result = CliRunner().invoke(cli.cli, ["--config", path, "--optimize-models"])
    finally:
        locks.release(held)
    assert result.exit_code == 3
    assert "worker 0 did not apply the optimization within 1 s" in result.output
    assert optimize.read_json(os.path.join(optimize.optimize_dir(cfg["paths"]["state_dir"]), "request.json"))


def test_a_worker_whose_state_dir_cannot_hold_its_lock_still_starts(tmp_path, caplog):
    from anomaly_detector.worker.detector import DetectorWorker
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the state directory should be")
    assert DetectorWorker._take_lock(str(not_a_dir), 0) is None
    assert "cannot take" in caplog.text
    fd = DetectorWorker._take_lock(str(tmp_path / "ok"), 1)
    try:
        try:
            locks.release(locks.take(locks.lock_path(str(tmp_path / "ok"), "worker-1")))
            raise AssertionError("the worker's lock was free")
        except locks.LockBusy:
            pass
    finally:
        locks.release(fd)
