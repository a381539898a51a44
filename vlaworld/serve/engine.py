"""The policy side of the server: many sessions' requests -> one ``predict_chunk`` call -> one reply each.

Runs in the server's single policy thread. Each row draws its noise from its own session's generator
(``randn((chunk_size, max_action_dim))``, then the random memory modes draw from it inside the call:
the local evaluator's order), so a row's numbers do not depend on its batch. Rows whose observations
differ in shape (cameras of other sizes) go in separate calls. If a call raises, its rows run again one
at a time from the same generator states, so only the request at fault gets the error; a failed request
leaves its session as it was.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vlaworld.processing import per_row_normal
from vlaworld.processing.padding import compiled_batch_size, pad_rows
from vlaworld.errors import UsageError
from vlaworld.policy import Policy
from vlaworld.serve.observation import WORLD_FRAMES_KEY, ObservationError, Request
from vlaworld.serve.session import Session

RANDOM_MEMORY_MODES = ("random", "random_scaled")  # modes that draw from the sessions' generators


@dataclass(kw_only=True)
class Row:
    """One request waiting for a chunk."""

    session: Session
    request: Request
    received: float  # time.perf_counter() when the message arrived


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """A row's answer."""

    actions: np.ndarray  # [chunk_size, action_dim] float32, unnormalised
    memory: dict  # the policy's per-row memory facts (Policy.last_chunk_stats)
    batch_size: int  # rows in the policy call that computed it
    infer_ms: float  # wall time of that call
    queue_ms: float  # from arrival to the start of the call


@dataclass(kw_only=True)
class EngineStats:
    policy_calls: int = 0
    rows: int = 0
    failed_calls: int = 0


class PolicyEngine:
    """Batches rows through one ``vlaworld.Policy``."""

    def __init__(self, policy: Policy) -> None:
        cfg = policy.config
        if cfg.memory == "shuffle":
            raise UsageError(
                "memory mode 'shuffle' gives each episode the memory of another in its batch; a server's batches "
                "are whoever asked at the same moment, so episodes would pair by chance. Serve another mode."
            )
        self.policy = policy
        self.chunk_size, self.max_action_dim = int(cfg.chunk_size), int(cfg.max_action_dim)
        self.random_memory = cfg.memory in RANDOM_MEMORY_MODES
        self.compiled = bool(cfg.compile or cfg.cuda_graphs)
        self.world_frames = int(policy.world_frames_needed)
        self.world_camera = policy.world_camera
        self.stats = EngineStats()

    def run(self, rows: Sequence[Row]) -> list[Chunk | Exception]:
        """Answer every row: a Chunk, or the exception its request caused."""
        results: list[Chunk | Exception | None] = [None] * len(rows)
        prepared = [self._prepare(row) for row in rows]
        groups: dict[tuple, list[int]] = {}
        for i, obs in enumerate(prepared):
            if isinstance(obs, Exception):
                results[i] = obs
            else:
                groups.setdefault(_signature(obs), []).append(i)
        for members in groups.values():
            for i, result in zip(members, self._run_group([rows[i] for i in members], [prepared[i] for i in members])):
                results[i] = result
        return results

    def _prepare(self, row: Row) -> dict | Exception:
        """The row's observation with its world-frame window (from the session when the client sent none)."""
        obs = dict(row.request.observation)
        if self.world_frames and WORLD_FRAMES_KEY not in obs:
            try:
                obs[WORLD_FRAMES_KEY] = row.session.window_with(obs[self.world_camera])  # (n, H, W, 3)
            except ValueError as exc:  # np.stack: frames of another size than earlier in the episode
                return ObservationError(f"{self.world_camera} changed size within the episode ({exc}); "
                                        "send {'reset': true} when the camera changes")
        return obs

    def _run_group(self, rows: list[Row], observations: list[dict]) -> list[Chunk | Exception]:
        before = [r.session.generator.get_state() for r in rows]
        noise = per_row_normal((len(rows), self.chunk_size, self.max_action_dim),
                               [r.session.generator for r in rows])  # (B, chunk_size, max_action_dim)
        drawn = [r.session.generator.get_state() for r in rows]
        try:
            chunks = self._call(rows, observations, noise)
        except Exception as exc:  # noqa: BLE001 - find the row at fault: each alone, from the same states
            self.stats.failed_calls += 1
            if len(rows) == 1:
                rows[0].session.generator.set_state(before[0])
                return [exc]
            chunks = []
            for i, (row, obs) in enumerate(zip(rows, observations)):
                row.session.generator.set_state(drawn[i])
                try:
                    chunks.extend(self._call([row], [obs], noise[i : i + 1]))
                except Exception as single:  # noqa: BLE001 - reported to that client, which may retry
                    self.stats.failed_calls += 1
                    row.session.generator.set_state(before[i])
                    chunks.append(single)
        return chunks

    def _call(self, rows: list[Row], observations: list[dict], noise: torch.Tensor) -> list[Chunk]:
        n = len(rows)
        size = compiled_batch_size(n) if self.compiled else n
        observations, noise, generators = pad_rows(observations, noise, [r.session.generator for r in rows], size)
        batch = {k: np.stack([o[k] for o in observations]) for k in observations[0] if k != "task"}
        batch["task"] = [o["task"] for o in observations]
        start = time.perf_counter()
        chunk = self.policy.predict_chunk(batch, noise=noise, generators=generators if self.random_memory else None)
        actions = chunk[:n].float().cpu().numpy()  # (B, chunk_size, action_dim)
        infer_ms = (time.perf_counter() - start) * 1e3
        stats = self.policy.last_chunk_stats
        self.stats.policy_calls += 1
        self.stats.rows += n
        out = []
        for row, obs, act, mem in zip(rows, observations, actions, stats):
            row.session.commit(obs.get(self.world_camera) if self.world_frames else None)
            out.append(Chunk(actions=act, memory=mem, batch_size=n, infer_ms=infer_ms,
                             queue_ms=(start - row.received) * 1e3))
        return out


def _signature(obs: dict) -> tuple:
    """Observations with equal signatures stack (same keys, shapes and dtypes)."""
    return tuple(sorted((k, v.shape, v.dtype.str) for k, v in obs.items() if isinstance(v, np.ndarray)))

