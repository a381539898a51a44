"""End to end on real LIBERO through ``python -m vlaworld.eval``: short runs, two workers each.

The scripted expert shows the environment and the success accounting work (it succeeds, with no
camera rendered); the tiny test checkpoint and the built-in demo run the whole neural path (images,
world frames, identity-seeded noise, memory stats) and resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.tiny_checkpoint import write_tiny_checkpoint
from vlaworld.eval.cli import main
from vlaworld.eval.results import read_episodes
from vlaworld import debug

pytestmark = pytest.mark.libero


def test_scripted_expert_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "scripted"
    argv = ["--policy", "scripted", "--suite", "libero_spatial", "--tasks", "0", "--episodes", "2",
            "--n-envs", "2", "--max-steps", "160", "--out", str(out)]
    assert main(argv) == 0
    records = read_episodes(out).records
    assert sorted(r.episode for r in records) == [0, 1]
    assert all(r.error is None and r.extra["rendered_steps"] == 0 for r in records)  # no camera rendered
    assert sum(r.success for r in records) > 0
    assert all(r.seed == 1000 + r.episode and r.init_state == r.episode for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["successes"] == sum(r.success for r in records)
    assert summary["throughput"]["env_steps"] == sum(r.steps for r in records)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["policy"] == "scripted" and run["sim_stack"]["recipe"]["settle_steps"] == 10


def test_outcomes_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    """Workers reuse their env across episodes, so an env whose layout depended on its reset history
    would make outcomes depend on the schedule. One worker runs 0, 1, 2 in turn; two split them."""
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        assert main(["--policy", "scripted", "--tasks", "1", "--episodes", "3", "--n-envs", str(n),
                     "--max-steps", "160", "--out", str(out)]) == 0
        runs[n] = {r.key: (r.success, r.steps) for r in read_episodes(out).records}
    assert runs[1] == runs[2] and len(runs[1]) == 3


def test_tiny_checkpoint_full_path_and_resume(tmp_path: Path, capsys, tiny_smolvla) -> None:
    vlm, ckpt = tiny_smolvla
    out = tmp_path / "tiny"
    argv = ["--ckpt", str(ckpt), "--vlm", str(vlm), "--tasks", "0,1", "--episodes", "1", "--n-envs", "2",
            "--max-steps", "5", "--n-action-steps", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    records = read_episodes(out).records
    assert sorted((r.task_id, r.episode) for r in records) == [(0, 0), (1, 0)]
    assert all(r.error is None and r.steps == 5 and r.extra["chunks"] == 3 for r in records)
    # Boundaries at observations 0, 2, 4: rendered there only.
    assert all(r.extra["rendered_steps"] == 3 for r in records)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["n_action_steps"] == 2 and len(run["checkpoint_hash"]) == 64
    assert run["config"]["numerics"] == "lerobot-0.4" and run["config"]["policy_config"]["runtime_dtypes"]
    assert main(argv) == 0  # resume: nothing left to run, same records
    assert read_episodes(out).records == records
    assert main([*argv[:-2], "--seed", "1", "--out", str(out)]) == 2  # changed config refused
    assert main([*argv[:-2], "--numerics", "lerobot-0.6", "--out", str(out)]) == 2  # other numbers: refused too
    name = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    stats = load_file(ckpt / name)
    save_file({k: v * 20 if k.endswith("std") else v for k, v in stats.items()}, ckpt / name)
    capsys.readouterr()
    assert main(argv) == 2  # the stats changed under the run: refused, naming the file
    assert f"fingerprint.checkpoint/{name}" in capsys.readouterr().err


def test_demo_policy_world_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = ["--ckpt", "demo", "--tasks", "0", "--episodes", "1", "--n-envs", "1", "--max-steps", "3",
            "--n-action-steps", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    (record,) = read_episodes(out).records
    assert record.error is None and record.extra["chunks"] == 2 and record.extra["memory_nonfinite_chunks"] == 0
    assert "memory_norm_mean" in record.extra
    summary = json.loads((out / "summary.json").read_text())
    assert summary["throughput"]["world_encoder_calls_per_env_step"] > 0


def test_nan_weights_are_a_policy_error_never_stepped(tmp_path: Path, monkeypatch) -> None:
    """NaN weights give NaN actions: the episode is recorded as a policy error, nothing reaches MuJoCo
    (so no MUJOCO_LOG.TXT appears in the working directory), and it is not scored as a failure."""
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")
    tensors = load_file(ckpt / "model.safetensors")
    tensors["model.action_out_proj.bias"] = torch.full_like(tensors["model.action_out_proj.bias"], float("nan"))
    save_file(tensors, ckpt / "model.safetensors")
    vlm = debug.write_vlm(tmp_path / "vlm")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "run"
    assert main(["--ckpt", str(ckpt), "--vlm", str(vlm), "--tasks", "0", "--episodes", "1", "--n-envs", "1",
                 "--max-steps", "5", "--device", "cpu", "--out", str(out)]) == 0
    (record,) = read_episodes(out).records
    assert record.extra["error_kind"] == "policy" and record.steps == 0 and "non-finite" in record.error
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 0 and summary["overall"]["policy_errors"] == 1
    assert not (work / "MUJOCO_LOG.TXT").exists() and not (Path.cwd() / "MUJOCO_LOG.TXT").exists()
