"""``--diagnostics`` in the evaluator: per-episode world diagnostics from the batched ``predict_chunk`` path.

The demo policy (tiny world policy, open gate) runs on stand-in envs whose first camera is textured by the
position and the episode, so every episode sees its own latents. The Prophet cosine recorded per episode
is recomputed independently from the frames the env itself kept (one clip per step, one row at a time),
and outcomes and actions must not change when diagnostics are switched on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vlaworld
from tests.support.standins import StandinFactory
from tests.test_eval_neural import RecordingPolicy
from vlaworld.eval.run import cpu_shared_with_workers, run_eval
from vlaworld.eval.episode import episode_list
from vlaworld.eval.scheduler import SchedulerConfig

TASKS = (0, 1)
EPISODES = 2
MAX_STEPS = 14  # boundaries at 0, 4, 8, 12; steps 13-14 arrive with the episode's end
N_ACTION_STEPS = 4
FIELDS = {"gate", "world_path", "chunks", "attn_chunks", "attn_entropy", "attn_entropy_ratio", "attn_per_k",
          "memory_norm", "prophet_cosine", "prophet_cosine_per_k", "prophet_pairs_per_k"}


def load(demo, memory: str = "pred"):
    return vlaworld.load_policy(demo.ckpt, memory=memory, n_action_steps=N_ACTION_STEPS, vlm=demo.vlm,
                                world_encoder=demo.world_encoder)


def rollout(policy, out: Path, *, diagnostics: bool, n_envs: int, max_batch: int | None, frame_dir: Path | None = None):
    recorder = RecordingPolicy(policy, seed=0, diagnostics=diagnostics)
    config = {"suite": "standin", "tasks": list(TASKS), "episodes": EPISODES, "memory": policy.config.memory}
    factory = StandinFactory(textured=True, frame_dir=None if frame_dir is None else str(frame_dir))
    with cpu_shared_with_workers("cpu", n_envs):
        records, stats = run_eval(out=out, config=config, episodes=episode_list("standin", TASKS, EPISODES),
                              policy=recorder, progress=False,
                              scheduler=SchedulerConfig(n_envs=n_envs, env_factory=factory, max_steps=MAX_STEPS,
                                                        max_batch=max_batch))
    rollout.mean_batch = stats.policy_rows / stats.policy_calls
    return {e: np.concatenate(c) for e, c in recorder.trace.items()}, {r.key: r for r in records}


def independent_prophet_cosine(policy, frames: np.ndarray, steps: int) -> tuple[list[float | None], list[int]]:
    """Per-step latents of clamped clips, one row at a time; predictions at every chunk boundary."""
    r = policy.world.rollout
    m, t_ctx, k_max = r.window, r.context, r.horizon
    frames_t = torch.from_numpy(frames)
    z = [policy.encode_world(torch.stack([frames_t[max(0, j)] for j in range(s - m + 1, s + 1)])[None])
         for s in range(steps + 1)]
    sums, counts = [0.0] * k_max, [0] * k_max
    for t in range(0, steps, N_ACTION_STEPS):  # a chunk at every boundary before the episode ended
        z_hist = torch.stack([z[max(0, s)] for s in range(t - t_ctx + 1, t + 1)], dim=1)
        delta = policy.predict_memory(z_hist) - z[t][:, None]
        for k in range(1, k_max + 1):
            if t + k <= steps:
                cos = torch.nn.functional.cosine_similarity(delta[:, k - 1], z[t + k] - z[t], dim=-1)
                sums[k - 1] += float(cos.sum())
                counts[k - 1] += 1
    return [s / c if c else None for s, c in zip(sums, counts)], counts


def test_diagnostics_per_episode_match_an_independent_computation(tmp_path: Path, demo, monkeypatch) -> None:
    """Batched mixed episodes (3 workers, full batching): each record carries its own episode's numbers."""
    monkeypatch.setattr("vlaworld.eval.world_trace.MAX_CLIPS", 3)  # the trace clips in several encoder calls
    policy = load(demo)
    _, records = rollout(policy, tmp_path / "run", diagnostics=True, n_envs=3, max_batch=None,
                         frame_dir=tmp_path)
    assert rollout.mean_batch > 1, "the episodes should have shared policy calls"
    k_max = policy.world.rollout.horizon
    assert len(records) == len(TASKS) * EPISODES
    cosines = []
    for (_, task, episode), rec in records.items():
        d = rec.extra["diagnostics"]
        assert set(d) == FIELDS
        assert d["gate"] == pytest.approx(policy.gate, abs=1e-6) and d["world_path"] is True
        assert d["chunks"] == rec.extra["chunks"] == d["attn_chunks"] == math.ceil(rec.steps / N_ACTION_STEPS)
        assert 0 < d["attn_entropy_ratio"] <= 1 and len(d["attn_per_k"]) == k_max
        assert sum(d["attn_per_k"]) == pytest.approx(1, abs=1e-5)
        assert d["attn_entropy"] == pytest.approx(d["attn_entropy_ratio"] * math.log(k_max), rel=1e-4)
        assert d["memory_norm"] == pytest.approx(rec.extra["memory_norm_mean"], abs=1e-5)
        frames = np.load(tmp_path / f"frames_{task}_{episode}.npy")
        assert len(frames) == rec.steps + 1  # the world camera was rendered at every step
        want, counts = independent_prophet_cosine(policy, frames, rec.steps)
        assert d["prophet_pairs_per_k"] == counts
        assert [c is None for c in d["prophet_cosine_per_k"]] == [w is None for w in want]
        assert [c for c in d["prophet_cosine_per_k"] if c is not None] == pytest.approx(
            [w for w in want if w is not None], abs=1e-5)
        pairs = [(c, n) for c, n in zip(want, counts) if n]
        assert d["prophet_cosine"] == pytest.approx(sum(c * n for c, n in pairs) / sum(n for _, n in pairs), abs=1e-5)
        cosines.append(d["prophet_cosine"])
    assert len(set(cosines)) == len(cosines), "episodes of different textures should score differently"


def test_outcomes_identical_with_and_without_diagnostics(tmp_path: Path, demo) -> None:
    policy = load(demo)
    plain_actions, plain = rollout(policy, tmp_path / "plain", diagnostics=False, n_envs=2, max_batch=1)
    diag_actions, diag = rollout(policy, tmp_path / "diag", diagnostics=True, n_envs=2, max_batch=1)
    assert plain.keys() == diag.keys()
    for key in plain:
        assert "diagnostics" not in plain[key].extra and "diagnostics" in diag[key].extra
        a, b = plain[key], diag[key]
        assert (a.success, a.steps, a.seed, a.init_state, a.error) == (b.success, b.steps, b.seed, b.init_state, b.error)
    for e in plain_actions:
        assert np.array_equal(plain_actions[e], diag_actions[e]), f"{e}: diagnostics changed the actions"


@pytest.mark.parametrize("memory", ["zero", "none"])
def test_ablations_record_what_applies(tmp_path: Path, demo, memory: str) -> None:
    """zero: attention and a zero memory norm, no Prophet; none: the world path is absent altogether."""
    policy = load(demo, memory)
    _, records = rollout(policy, tmp_path / memory, diagnostics=True, n_envs=2, max_batch=None)
    for rec in records.values():
        d = rec.extra["diagnostics"]
        assert set(d) == FIELDS and d["prophet_cosine"] is None and d["prophet_cosine_per_k"] is None
        assert d["gate"] == pytest.approx(policy.gate, abs=1e-6)
        if memory == "zero":
            assert d["world_path"] and d["attn_chunks"] == d["chunks"] and d["memory_norm"] == 0.0
        else:
            assert not d["world_path"] and d["attn_chunks"] == 0 and d["attn_entropy_ratio"] is None
    assert policy.world_encoder_calls == 0  # no trace is encoded where the Prophet is not scored


def test_cli_records_the_flag_refuses_to_mix_and_refuses_where_it_cannot_apply(tmp_path: Path, demo, monkeypatch,
                                                                                capsys) -> None:
    import json

    import vlaworld.envs
    from vlaworld.eval.cli import main

    monkeypatch.setattr(vlaworld.envs, "make", StandinFactory(textured=True))
    argv = ["--ckpt", "demo", "--tasks", "0", "--episodes", "1", "--max-steps", "3", "--n-envs", "1", "--device", "cpu",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, "--diagnostics"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["diagnostics"] is True
    line = json.loads((tmp_path / "run" / "episodes.jsonl").read_text().splitlines()[0])
    assert set(line["diagnostics"]) == FIELDS  # one chunk (n_action_steps 10), 3 steps: horizons 1-3 of K=4 reached
    assert line["diagnostics"]["prophet_pairs_per_k"] == [1, 1, 1, 0]
    assert line["diagnostics"]["prophet_cosine_per_k"][3:] == [None]
    assert main(argv) == 2  # resuming without the flag would mix records with and without diagnostics
    assert "diagnostics: true -> (absent)" in capsys.readouterr().err
    assert main(["--policy", "scripted", "--diagnostics", "--out", str(tmp_path / "s")]) == 2
    assert "--diagnostics applies to neural policies" in capsys.readouterr().err


def test_cuda_graphs_refuse_diagnostics(demo) -> None:
    import dataclasses

    policy = load(demo)
    policy.config = dataclasses.replace(policy.config, cuda_graphs=True)
    with pytest.raises(ValueError, match="replayed CUDA graph"):
        policy.record_diagnostics = True


@pytest.mark.slow
def test_compiled_chunks_do_not_change_with_diagnostics(demo) -> None:
    """torch.compile recompiles the denoising step with the statistics in it; the actions stay the same."""
    policy = vlaworld.load_policy(demo.ckpt, vlm=demo.vlm, world_encoder=demo.world_encoder, compile=True)
    cfg = policy.config
    rng = np.random.default_rng(0)
    batch = {k: rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8) for k in cfg.image_features}
    batch["observation.state"] = rng.standard_normal((2, cfg.state_feature.shape[0])).astype(np.float32)
    batch["task"] = ["pick up the bowl", "open the drawer"]
    batch["observation.world_frames"] = rng.integers(0, 256, (2, policy.world_frames_needed, 64, 64, 3), dtype=np.uint8)
    noise = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(0))
    plain = policy.predict_chunk(batch, noise=noise)
    policy.record_diagnostics = True
    recorded = policy.predict_chunk(batch, noise=noise)
    assert torch.equal(plain, recorded)
    assert all(row["attention"]["applied"] for row in policy.last_chunk_stats)
