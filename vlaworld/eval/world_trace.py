"""Per-episode world diagnostics in the evaluator (``--diagnostics``): what goes into ``diagnostics``.

The evaluator computes chunks with ``predict_chunk`` on batches of mixed episodes, so nothing here
relies on ``Policy.act``'s batch-wide state: every statistic is read per batch row and accumulated
per episode identity.

- Attention (entropy, entropy ratio, per-K mass): the row's statistics of the injection's last
  denoising step in each chunk (as the research plugin logged them), averaged over the episode's
  chunks in which the injection ran on that row.
- Memory norm: per chunk the mean over the K memory slots of their L2 norm, averaged over chunks.
- Prophet cosine (``pred`` mode): the workers send the world camera's frame of every env step
  (``observation.world_trace``); each step's clip of the last m frames (repeat-padded at the episode
  start) is encoded, batched across the episodes of a call, and each chunk's predicted change is
  scored per horizon k against the observed change z_{t+k} − z_t (``HorizonCosine``). The frames after
  the last chunk boundary arrive with the episode's end, so every horizon the episode reached counts.

Cost: one extra V-JEPA clip per env step, and the world camera rendered at every step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlaworld.eval.episode import EpisodeId
from vlaworld.eval.worker import WORLD_TRACE_KEY
from vlaworld.policy import Policy
from vlaworld.world.diagnostics import HorizonCosine

DIGITS = 6  # rounding of the recorded floats (far below any difference the report can resolve)
# Clips per encoder call: 14 workers x 10 steps is 140 ViT-g clips at a boundary; bound the activations.
MAX_CLIPS = 64


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), DIGITS) if values else None


@dataclass(kw_only=True)
class _Episode:
    clip: deque  # the last m world-camera frames, repeat-padded at the start
    cosine: HorizonCosine | None  # over this episode alone; None where the Prophet is not scored
    frames_seen: int = 0  # env steps observed so far (the reset observation is step 0)
    chunks: int = 0
    entropy: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    per_k: list[list[float]] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)


class DiagnosticsRecorder:
    """Accumulates one ``diagnostics`` object per episode; see the module docstring for each field."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        world = policy.world  # None for a plain SmolVLA checkpoint: no gate, no memory, nothing to attend
        if world is not None:
            policy.record_diagnostics = True  # attention probabilities are only materialised when asked
        self.gate = None if world is None else float(policy.gate)
        self.world_path = world is not None and bool(world.active)
        self.horizon = 0 if world is None else int(world.rollout.horizon)
        self.window = 1 if world is None else int(world.rollout.window)
        # The Prophet is scored only where its prediction is the memory that drove the actions.
        self.prophet = self.world_path and policy.config.memory == "pred"
        self._episodes: dict[EpisodeId, _Episode] = {}

    @property
    def needs_trace(self) -> bool:
        """Whether the workers must send the world camera's frame of every env step."""
        return self.prophet

    def begin_episode(self, episode: EpisodeId) -> None:
        self._episodes[episode] = _Episode(clip=deque(maxlen=self.window),
                                           cosine=HorizonCosine(self.horizon) if self.prophet else None)

    def observe(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> None:
        """Encode the new frames of every row's world trace in one call and score the Prophet with them."""
        if not self.prophet:
            return
        owners, steps, clips = [], [], []
        for episode, obs in zip(episodes, observations, strict=True):
            if WORLD_TRACE_KEY not in obs:
                raise KeyError(f"--diagnostics in pred mode needs {WORLD_TRACE_KEY} from the workers (episode {episode})")
            state = self._episodes[episode]
            for frame in obs[WORLD_TRACE_KEY]:
                if not state.clip:
                    state.clip.extend([frame] * self.window)  # clamped at the episode start
                else:
                    state.clip.append(frame)
                owners.append(state)
                steps.append(state.frames_seen)
                clips.append(np.stack(state.clip))
                state.frames_seen += 1
        if not clips:
            return
        stacked = np.stack(clips)  # (N, m, H, W, 3): one clip per env step of every row
        z = torch.cat([self.policy.encode_world(stacked[i : i + MAX_CLIPS]).cpu()
                       for i in range(0, len(stacked), MAX_CLIPS)])  # (N, D)
        for i, (state, step) in enumerate(zip(owners, steps)):
            state.cosine.observed(step, z[i : i + 1])

    def after_chunk(self, episodes: Sequence[EpisodeId], boundary_frames: Sequence[np.ndarray]) -> None:
        """Take each real row's attention and memory statistics, and its Prophet prediction, of the chunk
        just computed; ``boundary_frames`` (the world camera at the boundary) check the trace is aligned."""
        rows = self.policy.last_chunk_stats
        prediction = self.policy.last_world_prediction if self.prophet else None
        if self.prophet and prediction is None:
            raise RuntimeError("--diagnostics: the policy made no Prophet prediction for a pred-mode chunk")
        for i, episode in enumerate(episodes):
            state, row = self._episodes[episode], rows[i]
            state.chunks += 1
            attention = row.get("attention")
            if attention is not None and attention["applied"]:
                state.entropy.append(attention["attn_entropy"])
                state.ratio.append(attention["attn_entropy_ratio"])
                state.per_k.append(attention["attn_per_k"])
            if row.get("memory_norm") is not None and row.get("memory_finite", True):
                state.norms.append(float(row["memory_norm"]))
            if prediction is not None and row.get("memory_finite", True):  # a dropped memory predicted nothing
                if not np.array_equal(state.clip[-1], boundary_frames[i]):
                    raise RuntimeError(f"episode {episode}: the world trace is out of step with the chunk "
                                       "boundary observation (a worker/parent protocol bug)")
                state.cosine.predicted(state.frames_seen - 1, prediction[i : i + 1].cpu())

    def end_episode(self, episode: EpisodeId, last: Mapping[str, Any] | None) -> dict[str, Any]:
        """Score the frames after the last boundary (``last``), then the episode's ``diagnostics`` object."""
        if self.prophet and last is not None:
            self.observe([episode], [last])
        state = self._episodes.pop(episode)
        per_k = [_mean(col) for col in zip(*state.per_k)] if state.per_k else None
        out: dict[str, Any] = {
            "gate": None if self.gate is None else round(self.gate, DIGITS),
            "world_path": self.world_path,
            "chunks": state.chunks,
            "attn_chunks": len(state.ratio),
            "attn_entropy": _mean(state.entropy),
            "attn_entropy_ratio": _mean(state.ratio),
            "attn_per_k": per_k,
            "memory_norm": _mean(state.norms),
            "prophet_cosine": None,
            "prophet_cosine_per_k": None,
            "prophet_pairs_per_k": None,
        }
        if state.cosine is not None:
            overall = state.cosine.overall()
            out["prophet_cosine"] = None if overall is None else round(overall, DIGITS)
            out["prophet_cosine_per_k"] = [None if c is None else round(c, DIGITS) for c in state.cosine.summary()]
            out["prophet_pairs_per_k"] = state.cosine.counts()
        return out
