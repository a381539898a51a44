"""The durable results store: append/fsync, torn lines, dedup, resume refusal, summaries."""

import json
import os

import pytest

from vlaworld.eval import results, summary
from vlaworld.eval.results import ConfigChanged, EpisodeRecord, EpisodeWriter, ResultsFormatError, RunInfo
from vlaworld.eval.stats import wilson_interval


def rec(task_id=0, episode=0, success=True, error=None, **extra):
    return EpisodeRecord(suite="libero_spatial", task_id=task_id, task=f"task {task_id}", episode=episode,
                         seed=1000 + episode, init_state=episode % 50, success=success, steps=120, wall_s=3.5,
                         error=error, extra=extra)


def write(run_dir, records):
    with EpisodeWriter(run_dir) as w:
        for r in records:
            w.append(r)
    return run_dir / results.EPISODES_FILE


def test_round_trip_with_extra_fields(tmp_path):
    records = [rec(0, 0, memory={"nonfinite_chunks": 0, "gate": 0.015}), rec(0, 1, success=False),
               rec(1, 0, error="EGL crash")]
    path = write(tmp_path, records)
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first)[:10] == list(results.EPISODE_FIELDS) and first["memory"]["gate"] == 0.015
    assert first["success"] is True and json.loads(lines[2])["error"] == "EGL crash"
    log = results.read_episodes(tmp_path)
    assert log.records == tuple(records) and log.torn_tail is None and log.duplicates == 0
    assert results.read_episodes(path).records == tuple(records)  # a *.jsonl path is the file itself


def test_each_append_is_flushed_and_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    with EpisodeWriter(tmp_path) as w:
        base = len(synced)  # the new file's directory entry is synced once
        for i in range(3):
            w.append(rec(0, i))
            assert len(synced) == base + i + 1 and synced[-1] == w._file.fileno()
            # visible to an independent reader before the writer closes
            assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == i + 1


def test_torn_last_line_is_reported_skipped_and_cut_on_resume(tmp_path):
    path = write(tmp_path, [rec(0, 0), rec(0, 1)])
    full = json.dumps(rec(0, 2).to_json())
    with open(path, "a") as f:
        f.write(full[: len(full) // 2])  # killed mid-write
    with pytest.warns(UserWarning, match="torn last line"):
        log = results.read_episodes(tmp_path)
    assert [r.episode for r in log.records] == [0, 1]
    assert log.torn_tail == full[: len(full) // 2]
    assert any("torn" in n for n in log.notes())
    with pytest.warns(UserWarning, match="removed a torn last line"):
        w = EpisodeWriter(tmp_path)
    assert w.dropped_tail == full[: len(full) // 2]
    w.append(rec(0, 2))
    w.close()
    log = results.read_episodes(tmp_path)
    assert [r.episode for r in log.records] == [0, 1, 2] and log.torn_tail is None


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = write(tmp_path, [rec(0, 0)])
    path.write_text(path.read_text() + json.dumps(rec(0, 1).to_json()))  # newline lost only
    assert [r.episode for r in results.read_episodes(tmp_path).records] == [0, 1]
    with EpisodeWriter(tmp_path) as w:
        assert w.dropped_tail is None
        w.append(rec(0, 2))
    assert [r.episode for r in results.read_episodes(tmp_path).records] == [0, 1, 2]


def test_corrupt_middle_line_is_an_error_with_its_line_number(tmp_path):
    path = write(tmp_path, [rec(0, 0)])
    path.write_text(path.read_text() + "{garbage\n" + json.dumps(rec(0, 1).to_json()) + "\n")
    with pytest.raises(ResultsFormatError, match=r"episodes.jsonl:2: not valid JSON"):
        results.read_episodes(tmp_path)


def test_dedup_keeps_first_complete_record(tmp_path):
    write(tmp_path, [rec(0, 0, success=False), rec(0, 1), rec(0, 0, success=True), rec(0, 1), rec(1, 0)])
    with pytest.warns(UserWarning, match="duplicate"):
        log = results.read_episodes(tmp_path)
    assert [(r.task_id, r.episode, r.success) for r in log.records] == [(0, 0, False), (0, 1, True), (1, 0, True)]
    assert log.duplicates == 2
    assert log.conflicting == (("libero_spatial", 0, 0),)


def test_a_retried_error_episode_gives_way_to_its_complete_record(tmp_path):
    """A resumed run re-runs episodes whose workers failed; the later complete record wins, no conflict."""
    write(tmp_path, [rec(0, 0, success=False, error="worker died: EGL"), rec(0, 1), rec(0, 0, success=True)])
    with pytest.warns(UserWarning, match="duplicate"):
        log = results.read_episodes(tmp_path)
    assert [(r.episode, r.success, r.error) for r in log.records] == [(0, True, None), (1, True, None)]
    assert log.conflicting == ()


@pytest.mark.parametrize("field,value,message", [
    ("success", 1, "'success' must be bool"),
    ("task_id", "3", "'task_id' must be int"),
    ("episode", True, "'episode' must be int"),
    ("error", 5, "'error' must be str or null"),
])
def test_schema_violations_name_the_field(tmp_path, field, value, message):
    row = rec(0, 0).to_json()
    row[field] = value
    (tmp_path / "episodes.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ResultsFormatError, match=message):
        results.read_episodes(tmp_path)


def test_numpy_values_are_stored_as_plain_json(tmp_path):
    np = pytest.importorskip("numpy")
    r = EpisodeRecord(suite="libero_spatial", task_id=np.int64(2), task="t", episode=np.int64(5), seed=1005,
                      init_state=5, success=np.bool_(True), steps=np.int64(80), wall_s=np.float32(2.5),
                      extra={"memory": {"norm": np.float32(1.5), "per_k": np.arange(3)}})
    assert r.success is True and type(r.task_id) is int
    write(tmp_path, [r])
    back = results.read_episodes(tmp_path).records[0]
    assert back.key == ("libero_spatial", 2, 5) and back.extra["memory"] == {"norm": 1.5, "per_k": [0, 1, 2]}
    with pytest.raises(ResultsFormatError, match="'success' must be bool"):
        rec(0, 0, success=1)


def test_missing_fields_and_missing_file(tmp_path):
    (tmp_path / "episodes.jsonl").write_text(json.dumps({"suite": "libero_spatial", "task_id": 0}) + "\n")
    with pytest.raises(ResultsFormatError, match="missing field.*'episode'"):
        results.read_episodes(tmp_path)
    with pytest.raises(FileNotFoundError, match="no episodes file"):
        results.read_episodes(tmp_path / "nope")
    with pytest.raises(ValueError, match="shadow schema fields"):
        rec(0, 0, steps=3).to_json()  # an extra field may not override the schema


def test_run_info_round_trip_and_resume(tmp_path):
    config = {"suite": "libero_spatial", "memory": "pred", "episodes": 200, "env": {"max_steps": 280},
              "tasks": (0, 1, 2)}
    assert results.check_resume(tmp_path, config) is None  # fresh directory
    info = RunInfo(config=config, checkpoint_hash="sha256:abc", versions={"torch": "2.6"},
                   sim_stack={"mujoco": "3.3.2"}, extra={"gpu": "H100"})
    results.write_run_info(tmp_path, info)
    back = results.read_run_info(tmp_path)
    assert back.checkpoint_hash == "sha256:abc" and back.sim_stack == {"mujoco": "3.3.2"}
    assert back.extra == {"gpu": "H100"} and back.config["tasks"] == [0, 1, 2]
    # the same configuration resumes (tuples vs lists are not a change)
    assert results.check_resume(tmp_path, config, checkpoint_hash="sha256:abc").config == back.config
    changed = {**config, "memory": "zero", "env": {"max_steps": 300}, "n_action_steps": 10}
    with pytest.raises(ConfigChanged) as err:
        results.check_resume(tmp_path, changed)
    text = str(err.value)
    assert 'config.memory: "pred" -> "zero"' in text
    assert "config.env.max_steps: 280 -> 300" in text
    assert "config.n_action_steps: (absent) -> 10" in text
    assert "config.suite" not in text and "new --out directory" in text
    results.check_resume(tmp_path, {**config, "n_envs": 8}, ignore=["n_envs"])
    with pytest.raises(ConfigChanged, match="checkpoint_hash"):
        results.check_resume(tmp_path, config, checkpoint_hash="sha256:def")
    with pytest.raises(ConfigChanged, match=r"sim_stack.mujoco: \"3.3.2\" -> \"3.4.0\""):
        results.check_resume(tmp_path, config, sim_stack={"mujoco": "3.4.0"})


def test_resume_refuses_episodes_without_run_json(tmp_path):
    write(tmp_path, [rec(0, 0)])
    with pytest.raises(ConfigChanged, match="no run.json"):
        results.check_resume(tmp_path, {"memory": "pred"})


def test_summary_excludes_errors_and_uses_wilson(tmp_path):
    records = [rec(0, e, success=e < 7) for e in range(10)]  # task 0: 7/10
    records += [rec(1, e, success=e < 2) for e in range(4)] + [rec(1, 4, success=False, error="worker died twice")]
    throughput = {"env_steps_per_s": 123.4, "wall_s": 60.0, "steady_env_steps_per_s": None}
    j, m = summary.write_summary(tmp_path, records, throughput=throughput)
    doc = json.loads(j.read_text())
    assert doc["overall"]["n"] == 14 and doc["overall"]["successes"] == 9 and doc["overall"]["errors"] == 1
    assert doc["overall"]["rate"] == pytest.approx(9 / 14)
    assert doc["overall"]["ci95"] == pytest.approx(list(wilson_interval(9, 14)))
    t1 = doc["per_task"]["1"]
    assert (t1["n"], t1["successes"], t1["errors"], t1["task"]) == (4, 2, 1, "task 1")
    assert doc["per_task"]["0"]["ci95"] == pytest.approx(list(wilson_interval(7, 10)))
    assert doc["throughput"] == throughput
    md = m.read_text()
    assert "| 0 | 7/10 | 0 (0) | 70.0 |" in md and "| 1 | 2/4 | 1 (0) | 50.0 |" in md  # errors (policy) beside k/n
    assert "| **all** | **9/14** | 1 (0) |" in md and "env_steps_per_s: 123.4" in md
    assert doc["overall"]["n_errors"] == 1 and t1["n_errors"] == 1
    assert "steady_env_steps_per_s: n/a" in md  # not measured (no worker finished two episodes)
    assert doc["errors"] == [{"suite": "libero_spatial", "task_id": 1, "episode": 4, "error": "worker died twice",
                             "kind": "infrastructure"}]
    assert "- task 1 episode 4 (infrastructure): worker died twice" in md


def test_summary_of_a_task_with_only_errors(tmp_path):
    j, _ = summary.write_summary(tmp_path, [rec(0, 0, error="boom")])
    t = json.loads(j.read_text())["per_task"]["0"]
    assert t["n"] == 0 and t["rate"] is None and t["ci95"] == [0.0, 1.0] and t["errors"] == 1
