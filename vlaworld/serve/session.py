"""One connection = one episode session: its noise generator and its world-camera frame history.

A session's randomness derives from its id alone, so a served rollout is reproducible and pairs with
any other run given the same id: an integer id in [0, 2**63) *is* the ``torch.Generator`` seed (the
evaluator sends ``vlaworld.eval.episode.noise_seed(episode, --seed)``, the seed of the episode's local
generator, so remote and local episodes draw the same numbers); any other id (a string, a negative or
larger number) is hashed. Each chunk draws, in order, its flow-matching noise
``randn((chunk_size, max_action_dim))`` and then, in the random memory modes, the memory noise: the
order the local evaluator draws them in (vlaworld.eval.policies).

The frame history has ``Policy.act``'s semantics: each request adds its world-camera frame, repeat-
padded at the episode start, and a chunk reads the last n = m+T−1. That is exact for a client that
calls at every env step; a client that calls only at chunk boundaries sends the window itself as
``observation.world_frames`` (as the evaluator does) and the history is not read.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

SEED_LIMIT = 1 << 63  # torch.Generator.manual_seed takes a signed 64-bit integer on some builds
SEED_DERIVATION = (
    "an integer session_id in [0, 2**63) is the torch.Generator seed; any other id: "
    "sha256(utf-8 of str(id))[:8] little-endian & (2**63-1)"
)


def session_seed(session_id: int | str) -> int:
    """The generator seed of a session id (module docstring)."""
    if isinstance(session_id, (int, np.integer)) and not isinstance(session_id, bool) and 0 <= session_id < SEED_LIMIT:
        return int(session_id)
    digest = hashlib.sha256(str(session_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (SEED_LIMIT - 1)


def new_session_id() -> int:
    """A fresh id for a client that sent none (reported back, so the rollout can be replayed)."""
    return secrets.randbelow(SEED_LIMIT)


@dataclass(kw_only=True)
class Session:
    """An episode in progress on one connection."""

    id: int | str
    frames_needed: int  # n = m+T−1 world-camera frames per chunk, 0 when the world path reads none
    chunks: int = 0  # chunks served since the episode started
    generator: torch.Generator = field(init=False)
    _frames: deque = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(session_seed(self.id))
        self._frames = deque(maxlen=max(self.frames_needed, 1))

    @property
    def seed(self) -> int:
        return session_seed(self.id)

    def describe(self) -> dict:
        """What a reply says about the session (so a client can replay or pair it)."""
        return {"id": self.id, "seed": self.seed, "chunks": self.chunks}

    def window_with(self, frame: np.ndarray) -> np.ndarray:
        """The last n frames [n, H, W, 3] if ``frame`` were added now (nothing is stored yet)."""
        frames = list(self._frames) if self._frames else [frame] * (self.frames_needed - 1)
        frames = [*frames, frame][-self.frames_needed :]
        return np.stack(frames)

    def commit(self, frame: np.ndarray | None) -> None:
        """A chunk was served: count it and keep its frame (a failed request changes nothing)."""
        self.chunks += 1
        if frame is None or not self.frames_needed:
            return
        frame = np.array(frame, copy=True)  # not a view that keeps the whole request message alive
        if not self._frames:
            self._frames.extend([frame] * self.frames_needed)
        else:
            self._frames.append(frame)
