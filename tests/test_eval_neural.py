"""The neural path of the evaluator on stand-in envs: the built-in demo policy (world modality on)
driven by the scheduler, on CPU and, when present, CUDA (workers never touch the GPU).

With one row per policy call (--max-batch 1) an episode's actions are bit-identical whatever the
worker count, batch or neighbours: identity alone seeds it. With full batching the float math of a
row may differ in the last bits from the single-row call (reported, not asserted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vlaworld
from tests.support.standins import StandinFactory
from vlaworld.eval.run import cpu_shared_with_workers, run_eval
from vlaworld.eval.episode import EpisodeId, chunk_noise, episode_generator, episode_list
from vlaworld.eval.policies import NeuralChunkPolicy
from vlaworld.eval.scheduler import SchedulerConfig

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]),
]
TASKS = (0, 1)
EPISODES = 2
MAX_STEPS = 8  # chunks at observations 0 and 4


class RecordingPolicy(NeuralChunkPolicy):
    """Keeps every chunk of actions per episode (the retries' are replaced)."""

    def __init__(self, policy: Any, *, seed: int, diagnostics: bool = False) -> None:
        super().__init__(policy, seed=seed, diagnostics=diagnostics)
        self.trace: dict[EpisodeId, list[np.ndarray]] = defaultdict(list)

    def begin_episode(self, episode: EpisodeId) -> None:
        super().begin_episode(episode)
        self.trace[episode] = []

    def predict(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        chunks = super().predict(episodes, observations)
        for e, c in zip(episodes, chunks, strict=True):
            self.trace[e].append(c.copy())
        return chunks


def rollout(policy, out: Path, *, n_envs: int, max_batch: int | None):
    recorder = RecordingPolicy(policy, seed=0)
    memory, device = policy.config.memory, policy.config.device
    config = {"suite": "standin", "tasks": list(TASKS), "episodes": EPISODES, "memory": memory, "device": device}
    with cpu_shared_with_workers(device, n_envs):  # as the CLI does: no oversubscribed cores
        records, stats = run_eval(out=out, config=config, episodes=episode_list("standin", TASKS, EPISODES),
                                  policy=recorder, progress=False,
                                  scheduler=SchedulerConfig(n_envs=n_envs, env_factory=StandinFactory(),
                                                            max_steps=MAX_STEPS, max_batch=max_batch))
    return {e: np.concatenate(c) for e, c in recorder.trace.items()}, records, stats


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory", ["pred", pytest.param("random", marks=pytest.mark.slow)])
def test_episode_actions_do_not_depend_on_workers(tmp_path: Path, demo, device: str, memory: str) -> None:
    policy = vlaworld.load_policy(demo.ckpt, device=device, memory=memory, n_action_steps=4, vlm=demo.vlm,
                                  world_encoder=demo.world_encoder)
    one, records, _ = rollout(policy, tmp_path / "one", n_envs=1, max_batch=1)
    three, _, _ = rollout(policy, tmp_path / "three", n_envs=3, max_batch=1)
    assert set(one) == set(three) and len(one) == len(TASKS) * EPISODES
    for e in one:
        assert np.array_equal(one[e], three[e]), f"{e}: actions depend on the schedule"
    assert all(r.extra["chunks"] == 2 and r.extra["memory_nonfinite_chunks"] == 0 for r in records)
    assert (policy.world_encoder_calls > 0) == (memory == "pred")
    batched, _, bstats = rollout(policy, tmp_path / "batched", n_envs=3, max_batch=None)
    diff = max(float(np.abs(batched[e] - one[e]).max()) for e in one)
    print(f"{device}/{memory}: max |batched - single-row| action difference {diff:.3g}; "
          f"mean batch {bstats.throughput(3)['mean_batch']:.2f}")
    assert diff < 1e-2


class _FakeConfig:
    chunk_size, n_action_steps, max_action_dim, memory, compile, cuda_graphs = 4, 2, 3, "random", True, False
    image_features = ("observation.images.image",)


class _FakePolicy:
    """An EvaluatedPolicy whose predict_chunk echoes each row's state and noise, so row bookkeeping can be checked."""

    config = _FakeConfig()
    rename_map: dict[str, str] = {}
    world_frames_needed, world_camera, world_encoder_calls = 0, None, 0
    last_chunk_stats: list[dict] = []

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def predict_chunk(self, batch, noise, generators):
        self.sizes.append(len(batch["task"]))
        assert len(generators) == noise.shape[0] == len(batch["task"])
        self.last_chunk_stats = [{"memory_finite": True, "memory_norm": 1.0}] * noise.shape[0]
        state = torch.as_tensor(batch["observation.state"])[:, None, :1].expand(-1, noise.shape[1], 1)
        return torch.cat([state, noise[:, :, :2]], dim=2)  # [B, chunk, 3]


def test_compiled_policy_batches_are_padded_to_powers_of_two() -> None:
    fake = _FakePolicy()
    adapter = NeuralChunkPolicy(fake, seed=0)
    eps = [EpisodeId(suite="s", task_id=0, episode=e) for e in range(3)]
    for e in eps:
        adapter.begin_episode(e)
    obs = [{"observation.images.image": np.zeros((2, 2, 3), np.uint8), "observation.state": np.full(8, i, np.float32),
            "task": "t"} for i in range(3)]
    out = adapter.predict(eps, obs)
    assert fake.sizes == [4] and len(out) == 3
    for i, e in enumerate(eps):  # each real row: its own state and its own episode's noise, first n steps
        ref = chunk_noise([episode_generator(e, 0)], 4, 3)[0, :2, :2].numpy()
        assert (out[i][:, 0] == i).all() and np.array_equal(out[i][:, 1:], ref)
    assert all(adapter.end_episode(e)["chunks"] == 1 for e in eps)


@pytest.mark.slow
def test_shuffle_memory_gets_two_rows(tmp_path: Path, demo) -> None:
    policy = vlaworld.load_policy(demo.ckpt, memory="shuffle", n_action_steps=4, vlm=demo.vlm,
                                  world_encoder=demo.world_encoder)
    _, records, stats = rollout(policy, tmp_path / "run", n_envs=3, max_batch=None)
    assert stats.throughput(3)["mean_batch"] > 1
    # Only the run's last episode can end up alone (its own memory, counted as unshuffled).
    assert sum(r.extra.get("memory_unshuffled_chunks", 0) > 0 for r in records) <= 1
