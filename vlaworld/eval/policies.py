"""Adapters that let the scheduler drive a policy episode by episode (scheduler.ChunkPolicy).

- ``NeuralChunkPolicy`` wraps ``vlaworld.Policy``: it stacks the waiting workers' observations into
  one batch (mixed tasks), draws each row's flow-matching noise from that episode's own generator
  (episode.chunk_noise), passes the generators for the random memory modes, and accumulates the
  per-chunk memory statistics and a digest of its actions into the episode's record; with
  ``diagnostics=True`` it also records each episode's world diagnostics (eval.world_trace).
- ``ScriptedChunkPolicy`` runs the privileged-state libero_spatial expert, one action per chunk
  (it reads the simulator state every step and needs no cameras).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vlaworld.envs.scripted import ScriptedSpatialExpert
from vlaworld.eval.episode import EpisodeId, chunk_noise, episode_generator
from vlaworld.eval.worker import (
    PRIVILEGED_KEY,
    STATE_KEY,
    TASK_KEY,
    WORLD_FRAMES_KEY,
    WORLD_TRACE_KEY,
    ObservationNeeds,
)

if TYPE_CHECKING:
    import torch


class EvaluatedConfig(Protocol):
    """The resolved-config fields the evaluator reads (vlaworld.policy.ResolvedConfig has them all)."""

    chunk_size: int
    n_action_steps: int
    max_action_dim: int
    image_features: Sequence[str]
    memory: str | None  # None: no world path in the architecture (plain SmolVLA)
    compile: bool
    cuda_graphs: bool


class EvaluatedPolicy(Protocol):
    """What the evaluator needs from a policy: ``vlaworld.Policy`` is one; tests drive stand-ins.

    Diagnostics (eval.world_trace) need more of the world API and take a ``vlaworld.Policy`` itself.
    """

    config: EvaluatedConfig
    rename_map: Mapping[str, str]  # env feature name -> the checkpoint's
    world_frames_needed: int  # world-camera frames per chunk request (0: no V-JEPA window)
    world_camera: str | None  # the checkpoint's name of the world camera
    world_encoder_calls: int
    last_chunk_stats: list[dict]  # one memory-statistics row per batch row of the last call

    def predict_chunk(self, batch: Mapping[str, Any], *, noise: torch.Tensor | None = None,
                      generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """[B, chunk_size, action_dim] actions for a batch of observations."""


# Rollout memory modes that draw random numbers (SPEC §6); they get the episodes' generators.
RANDOM_MEMORY_MODES = ("random", "random_scaled")


class ScriptedChunkPolicy:
    """The privileged scripted expert: one action per step from the simulator state, no cameras."""

    n_action_steps = 1
    min_batch = 1
    world_encoder_calls = None
    needs = ObservationNeeds(cameras=False, privileged=True)

    def __init__(self) -> None:
        self._experts: dict[EpisodeId, ScriptedSpatialExpert] = {}

    def begin_episode(self, episode: EpisodeId) -> None:
        self._experts[episode] = ScriptedSpatialExpert()

    def predict(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        return [self._experts[e].act(o[PRIVILEGED_KEY])[None] for e, o in zip(episodes, observations, strict=True)]

    def end_episode(self, episode: EpisodeId) -> dict[str, Any]:
        self._experts.pop(episode, None)
        return {}

    def close(self) -> None:
        pass


def env_feature(rename_map: Mapping[str, str], feature: str) -> str:
    """The env's name for a checkpoint feature: the checkpoint's rename map (env -> policy) inverted."""
    return {policy_name: env_name for env_name, policy_name in rename_map.items()}.get(feature, feature)


class EpisodeTally:
    """Per-episode sums of the policy's per-chunk statistics (policy.last_chunk_stats rows), and a
    sha256 of every action handed to the env: equal digests mean bit-identical rollouts (local vs served)."""

    def __init__(self) -> None:
        self.chunks = 0
        self.nonfinite = 0
        self.unshuffled = 0
        self.norms: list[float] = []
        self._digest = hashlib.sha256()

    def add(self, row: Mapping[str, Any], actions: np.ndarray) -> None:
        """One chunk: its memory facts and the [n, action_dim] actions sent to the env."""
        self._digest.update(np.ascontiguousarray(actions, dtype=np.float32).tobytes())
        self.chunks += 1
        if "memory_finite" in row:
            self.nonfinite += not bool(row["memory_finite"])
        norm = row.get("memory_norm")
        if norm is not None and math.isfinite(float(norm)):
            self.norms.append(float(norm))

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chunks": self.chunks, "memory_nonfinite_chunks": self.nonfinite,
                               "actions_sha256": self._digest.hexdigest()}
        if self.unshuffled:
            out["memory_unshuffled_chunks"] = self.unshuffled
        if self.norms:
            out["memory_norm_mean"] = round(sum(self.norms) / len(self.norms), 6)
        return out


class NeuralChunkPolicy:
    """A ``vlaworld.Policy`` behind the scheduler, with identity-seeded noise per episode."""

    def __init__(self, policy: EvaluatedPolicy, *, seed: int, diagnostics: bool = False) -> None:
        self.policy = policy
        self.seed = seed
        cfg = policy.config
        self.n_action_steps = int(cfg.n_action_steps)
        self.chunk_size = int(cfg.chunk_size)
        self.max_action_dim = int(cfg.max_action_dim)
        self.image_keys = tuple(cfg.image_features)
        self.world_frames = policy.world_frames_needed
        self.diagnostics = None
        if diagnostics:
            from vlaworld.eval.world_trace import DiagnosticsRecorder  # torch: only for neural policies

            self.diagnostics = DiagnosticsRecorder(policy)
        trace = self.diagnostics is not None and self.diagnostics.needs_trace
        self.world_camera = env_feature(policy.rename_map, policy.world_camera) if self.world_frames or trace else None
        self.needs = ObservationNeeds(cameras=True, world_frames=self.world_frames, world_camera=self.world_camera,
                                      world_trace=trace)
        self.random_memory = cfg.memory in RANDOM_MEMORY_MODES
        # compiled code and CUDA graphs are specialised per batch size: pad to few sizes (processing.padding)
        self.pad_batches = cfg.compile or cfg.cuda_graphs
        # 'shuffle' hands each row the pred memory of another row of the batch: it needs two rows.
        self.min_batch = 2 if cfg.memory == "shuffle" else 1
        self._generators: dict[EpisodeId, Any] = {}
        self._tally: dict[EpisodeId, EpisodeTally] = {}

    def begin_episode(self, episode: EpisodeId) -> None:
        self._generators[episode] = episode_generator(episode, self.seed)
        self._tally[episode] = EpisodeTally()
        if self.diagnostics is not None:
            self.diagnostics.begin_episode(episode)

    def batch(self, observations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The env observation dicts stacked: uint8 [B,H,W,3] cameras, [B,8] state, B task strings."""
        first = observations[0]
        keys = [k for k in first if k.startswith("observation.") and k != WORLD_TRACE_KEY]  # trace: per-row lengths
        batch: dict[str, Any] = {k: np.stack([o[k] for o in observations]) for k in keys}
        batch[STATE_KEY] = batch[STATE_KEY].astype(np.float32, copy=False)
        batch[TASK_KEY] = [str(o[TASK_KEY]) for o in observations]
        if self.world_frames and WORLD_FRAMES_KEY not in batch:
            raise KeyError(f"the workers sent no {WORLD_FRAMES_KEY}; the policy needs {self.world_frames} frames")
        return batch

    def predict(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        from vlaworld.processing.padding import compiled_batch_size, pad_rows  # torch: only for neural policies

        rows = len(episodes)
        generators = [self._generators[e] for e in episodes]
        noise = chunk_noise(generators, self.chunk_size, self.max_action_dim)  # [B, chunk, max_action_dim]
        size = max(compiled_batch_size(rows) if self.pad_batches else rows, self.min_batch)
        observations, noise, generators = pad_rows(observations, noise, generators, size)
        batch = self.batch(observations)
        if self.diagnostics is not None:  # before the chunk: this boundary's latent is the base of its prediction
            self.diagnostics.observe(episodes, observations[:rows])
        if self.random_memory:
            chunk = self.policy.predict_chunk(batch, noise=noise, generators=generators)
        else:
            chunk = self.policy.predict_chunk(batch, noise=noise)
        if self.diagnostics is not None:
            boundary = [o[self.world_camera] for o in observations[:rows]] if self.world_camera else []
            self.diagnostics.after_chunk(episodes, boundary)
        actions = chunk[:rows, : self.n_action_steps].float().cpu().numpy()  # [B, n, action_dim]
        stats = self.policy.last_chunk_stats
        for episode, row, chunk_actions in zip(episodes, stats[:rows], actions, strict=True):
            self._tally[episode].add(row, chunk_actions)
            # alone in the batch (the last episode running): swapped with its own copy, i.e. pred memory
            self._tally[episode].unshuffled += rows < self.min_batch
        return list(actions)

    @property
    def world_encoder_calls(self) -> int:
        return self.policy.world_encoder_calls

    def close(self) -> None:
        pass

    def end_episode(self, episode: EpisodeId, last: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The episode's extra record fields; ``last``: the world trace after its last boundary (diagnostics)."""
        self._generators.pop(episode, None)
        tally = self._tally.pop(episode, None)
        fields = tally.fields() if tally is not None else {}
        if self.diagnostics is not None and tally is not None:
            fields["diagnostics"] = self.diagnostics.end_episode(episode, last)
        return fields
