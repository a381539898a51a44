"""Helpers for the policy-server tests: the demo policy, observations, and the in-process reference.

The reference is what the server must reproduce: ``Policy.predict_chunk`` on one sample, with the noise
a session seeded from ``seed`` draws (``randn((chunk_size, max_action_dim))`` per chunk, in order) and the
world-frame window ``Policy.act`` would keep (the first frame repeated at the episode start).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import vlaworld
from vlaworld.demo import ensure_demo

CAMERAS = ("observation.images.image", "observation.images.image2")
TASK = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def require_openpi_client():
    """openpi-client is installed by the README's test command (--no-deps); CI must have it."""
    if os.environ.get("CI") or os.environ.get("VLAWORLD_REQUIRE_OPENPI_CLIENT"):
        from openpi_client import websocket_client_policy

        return websocket_client_policy
    return pytest.importorskip("openpi_client.websocket_client_policy",
                               reason="pip install --no-deps openpi-client==0.1.2 (README, Run the tests)")


def load_demo(**options) -> vlaworld.Policy:
    paths = ensure_demo()
    return vlaworld.load_policy(paths.ckpt, vlm=paths.vlm, world_encoder=paths.world_encoder, **options)


def observation(seed: int, size: int = 32) -> dict:
    """One unbatched sample in the demo's feature names (small images: the demo resizes them anyway)."""
    rng = np.random.default_rng(seed)
    obs = {k: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for k in CAMERAS}
    obs["observation.state"] = rng.standard_normal(8).astype(np.float32)
    obs["task"] = TASK
    return obs


class Reference:
    """The in-process answer to a session's successive requests (module docstring)."""

    def __init__(self, policy: vlaworld.Policy, seed: int) -> None:
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)
        self.frames: list[np.ndarray] = []

    def chunk(self, obs: dict) -> np.ndarray:
        cfg, policy = self.policy.config, self.policy
        n = policy.world_frames_needed
        frame = obs[policy.world_camera]
        self.frames = ([frame] * n if not self.frames else self.frames) + [frame]
        self.frames = self.frames[-n:]
        batch = {k: np.asarray(v)[None] for k, v in obs.items() if k.startswith("observation.")}
        batch["task"] = [obs.get("task", obs.get("prompt"))]
        batch["observation.world_frames"] = np.stack(self.frames)[None]  # (1, n, H, W, 3)
        noise = torch.randn((cfg.chunk_size, cfg.max_action_dim), generator=self.generator)[None]
        return policy.predict_chunk(batch, noise=noise)[0].float().numpy()


def count_calls(policy: vlaworld.Policy) -> list[int]:
    """Record the batch size of every predict_chunk call the policy makes (the real call runs)."""
    sizes: list[int] = []
    real = policy.predict_chunk

    def counted(batch, noise=None, memory=None, generators=None):
        sizes.append(len(batch["task"]))
        return real(batch, noise=noise, memory=memory, generators=generators)

    policy.predict_chunk = counted
    return sizes


def max_abs(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True))
