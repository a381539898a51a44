"""Failure modes a careless or hostile user found, each refused or recorded visibly (no MuJoCo here).

Non-finite actions, a second evaluator on a locked directory, flags that cannot work, garbage in the
episodes file, a full disk, files that are not what they claim: each case failed silently (or with a
library traceback) before.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from tests.support.standins import StandinFactory, StandinPolicy, raw_keys, run_standin
from vlaworld.eval import results
from vlaworld.eval.cli import main
from vlaworld.eval.lock import LOCK_FILE, RunDirLocked, run_dir_lock
from vlaworld.eval.results import POLICY_ERROR, ResultsFormatError, read_episodes
from vlaworld.eval.summary import summarize

TASKS = (0, 1)


class NaNPolicy(StandinPolicy):
    """The stand-in policy, except that task 1's episodes get NaN actions from their second chunk on."""

    def predict(self, episodes, observations):
        chunks = super().predict(episodes, observations)
        for e, o, c in zip(episodes, observations, chunks):
            if e.task_id == 1 and o["observation.images.image"][0, 0, 0] > 1:  # observation index >= 1
                c[2, 1] = np.nan
        return chunks


def test_non_finite_actions_are_a_policy_error_and_never_stepped(tmp_path):
    marker = tmp_path / "markers"
    marker.mkdir()
    out = tmp_path / "run"
    records, stats = run_standin(out, n_envs=2, tasks=TASKS, episodes=2, policy=NaNPolicy(),
                                 factory=StandinFactory(marker_dir=str(marker)))
    bad = [r for r in records if r.task_id == 1]
    assert all(r.error and r.extra["error_kind"] == POLICY_ERROR and r.extra["nonfinite_actions"] == 1
               for r in bad) and stats.policy_errors == 2
    assert all(r.steps == StandinPolicy.n_action_steps for r in bad)  # stopped at the NaN chunk, unstepped
    ended = {tuple(line.split()[2:4]) for line in (marker / "timeline.txt").read_text().splitlines() if " end " in line}
    assert ("1", "0") not in ended and ("1", "1") not in ended and ("0", "0") in ended
    assert all(r.error is None for r in records if r.task_id == 0)
    rate = summarize(records)["overall"]
    assert rate["n"] == 2 and rate["errors"] == 2 and rate["policy_errors"] == 2  # never scored as failures
    _, again = run_standin(out, n_envs=2, tasks=TASKS, episodes=2, policy=NaNPolicy())
    assert again.episodes == 0 and again.policy_errors == 0  # a policy error is an outcome: not re-run


def test_a_second_evaluator_on_a_locked_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    with run_dir_lock(out):
        with pytest.raises(RunDirLocked, match=r"in use by another evaluator \(pid \d+ on "):
            run_standin(out, n_envs=1, tasks=(0,), episodes=1)
        assert main(["--policy", "scripted", "--tasks", "0", "--episodes", "1", "--out", str(out)]) == 2
    assert "in use by another evaluator" in capsys.readouterr().err
    assert not (out / "run.json").exists()
    run_standin(out, n_envs=1, tasks=(0,), episodes=1)  # released: the run goes ahead
    assert (out / LOCK_FILE).read_text() == ""


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "since_utc": "then"}))
    with pytest.warns(UserWarning, match="took over the lock .*pid 999999 on gone"):
        records, _ = run_standin(out, n_envs=1, tasks=(0,), episodes=1)
    assert len(records) == 1


@pytest.mark.parametrize("flags, message", [
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--max-steps", "991"], "--max-steps must be <= 990"),
    (["--worker-timeout", "0"], "--worker-timeout must be a positive"),
    (["--n-envs", "0"], "--n-envs must be >= 1"),
    (["--videos", "-1"], "--videos must be >= 0"),
    (["--episodes", "0"], "--episodes must be >= 1"),
])
def test_impossible_flags_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["--policy", "scripted", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_must_be_a_directory_and_cuda_must_exist(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["--policy", "scripted", "--out", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["--ckpt", "demo", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
        assert "pass --device cpu" in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


def run_tiny(ckpt: Path, vlm: Path, out: Path) -> int:
    return main(["--ckpt", str(ckpt), "--vlm", str(vlm), "--tasks", "0", "--episodes", "1", "--device", "cpu",
                 "--out", str(out)])


def test_truncated_weights_give_one_line_naming_the_file(tiny_smolvla, tmp_path, capsys):
    vlm, src = tiny_smolvla
    ckpt = Path(shutil.copytree(src, tmp_path / "ckpt"))
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert run_tiny(ckpt, vlm, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{ckpt / 'model.safetensors'} is not a readable safetensors file" in err


@pytest.mark.parametrize("value", ["50", 50.0, True])
def test_wrong_typed_config_fields_give_one_line_naming_file_and_field(tiny_smolvla, tmp_path, capsys, value):
    vlm, src = tiny_smolvla
    ckpt = Path(shutil.copytree(src, tmp_path / "ckpt"))
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["chunk_size"] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert run_tiny(ckpt, vlm, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{ckpt / 'config.json'}: field 'chunk_size' must be an integer" in err


def test_json_files_that_are_not_objects_or_not_json(tiny_smolvla, tmp_path, capsys):
    vlm, src = tiny_smolvla
    ckpt = Path(shutil.copytree(src, tmp_path / "ckpt"))
    (ckpt / "config.json").write_text("[1, 2]")
    assert run_tiny(ckpt, vlm, tmp_path / "run") == 2
    assert "config.json must hold a JSON object" in capsys.readouterr().err
    (ckpt / "config.json").write_text("{not json")
    assert run_tiny(ckpt, vlm, tmp_path / "run") == 2
    assert "config.json is not valid JSON" in capsys.readouterr().err


def test_a_state_file_outside_the_checkpoint_is_refused(tiny_smolvla, tmp_path, capsys):
    vlm, src = tiny_smolvla
    ckpt = Path(shutil.copytree(src, tmp_path / "ckpt"))
    doc = json.loads((ckpt / "policy_postprocessor.json").read_text())
    name = doc["steps"][0]["state_file"]
    shutil.copyfile(ckpt / name, tmp_path / name)
    doc["steps"][0]["state_file"] = f"../{name}"
    (ckpt / "policy_postprocessor.json").write_text(json.dumps(doc))
    assert run_tiny(ckpt, vlm, tmp_path / "run") == 2
    assert "which is outside the checkpoint directory" in capsys.readouterr().err


def test_newline_terminated_garbage_is_refused_with_its_line_number(tmp_path):
    out = tmp_path / "run"
    run_standin(out, n_envs=1, tasks=(0,), episodes=2)
    path = out / "episodes.jsonl"
    path.write_text(path.read_text() + "garbage}\n")
    with pytest.raises(ResultsFormatError, match=rf"episodes.jsonl:3: not valid JSON.*sed -i '3d' {path}"):
        read_episodes(out)
    with pytest.raises(ResultsFormatError, match="sed -i '3d'"):  # and the resume stops before appending
        run_standin(out, n_envs=1, tasks=(0,), episodes=2)


def test_a_full_disk_leaves_no_temp_files_and_resumes_cleanly(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real_append = results.EpisodeWriter.append

    def append_until_full(self, record):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_append(self, record)

    monkeypatch.setattr(results.EpisodeWriter, "append", append_until_full)
    with pytest.raises(OSError, match="No space left on device"):
        run_standin(out, n_envs=1, tasks=TASKS, episodes=2)
    real_replace = results.os.replace

    def replace_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(results.EpisodeWriter, "append", real_append)
    monkeypatch.setattr(results.os, "replace", replace_full)  # the summary cannot be written either
    with pytest.raises(OSError, match="No space left"):
        run_standin(out, n_envs=1, tasks=TASKS, episodes=2)
    assert not list(out.glob("*.tmp"))
    monkeypatch.setattr(results.os, "replace", real_replace)  # space is back
    records, _ = run_standin(out, n_envs=1, tasks=TASKS, episodes=2)
    assert len(records) == 4 and set(raw_keys(out).values()) == {1}
    assert not list(out.glob("*.tmp"))


def test_an_unreadable_summary_does_not_block_a_resume(tmp_path):
    out = tmp_path / "run"
    run_standin(out, n_envs=1, tasks=(0,), episodes=1)
    (out / "summary.json").write_text("{torn")
    run_standin(out, n_envs=1, tasks=(0,), episodes=1)  # nothing to run: the summary is rebuilt
    assert json.loads((out / "summary.json").read_text())["overall"]["n"] == 1


def test_run_json_that_is_not_json_is_named(tmp_path):
    out = tmp_path / "run"
    run_standin(out, n_envs=1, tasks=(0,), episodes=1)
    (out / "run.json").write_text("{")
    with pytest.raises(ResultsFormatError, match=r"run.json is not valid JSON"):
        run_standin(out, n_envs=1, tasks=(0,), episodes=1)


def test_stats_changed_between_invocations_are_named_on_resume(tiny_smolvla, tmp_path, capsys):
    """The resume check compares the fingerprint of every input file, not only config and weights."""
    import vlaworld
    from vlaworld.eval.results import ConfigChanged, check_resume

    vlm, src = tiny_smolvla
    ckpt = Path(shutil.copytree(src, tmp_path / "ckpt"))
    name = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"

    def config():
        import dataclasses

        return {"policy_config": json.loads(json.dumps(dataclasses.asdict(
            vlaworld.load_policy(ckpt, vlm=vlm).config), default=str))}

    out = tmp_path / "run"
    results.write_run_info(out, results.RunInfo(config=config()))
    from safetensors.torch import save_file

    stats = load_file(ckpt / name)
    stats["action.std"] = stats["action.std"] * 20
    save_file(stats, ckpt / name)
    with pytest.raises(ConfigChanged, match=rf"fingerprint.checkpoint/{name}"):
        check_resume(out, config())


def test_label_given_on_resume_is_recorded(tmp_path):
    from vlaworld.eval.run import run_eval
    from vlaworld.eval.episode import episode_list
    from vlaworld.eval.scheduler import SchedulerConfig

    out = tmp_path / "run"
    eps = episode_list("standin", (0,), 1)

    def run(label):
        config = {"suite": "standin", "tasks": [0], "episodes": 1, "seed": 0, "policy": "standin", "label": label}
        run_eval(out=out, config=config, episodes=eps, policy=StandinPolicy(), progress=False,
                 scheduler=SchedulerConfig(n_envs=1, env_factory=StandinFactory()))

    run("first")
    run("E2 pred")  # the label may change on resume, and the new one is kept
    assert results.read_run_info(out).config["label"] == "E2 pred"
