"""World-encoder clips per env step for each rollout memory mode, from a short simulated act() loop.

The demo policy (tiny, random, open gate) is driven exactly as an env loop drives it: one ``act``
per env step with a fresh observation, a chunk every ``n_action_steps``. The count is the policy's
own ``world_encoder_calls`` (clips encoded), divided by env steps × batch rows. Expected: T /
n_action_steps in the modes that need latents (pred, random_scaled, signflip, shuffle), 0 in none,
zero and random. The plugin this replaces encoded one clip per env step in every mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vlaworld.demo import ensure_demo
from vlaworld.load import load_policy
from vlaworld.policy import Policy
from vlaworld.config.world import MEMORY_MODES
from vlaworld.world.memory import LATENT_MODES


def simulated_observation(policy: Policy, bsz: int, rng: np.random.Generator) -> dict:
    cfg = policy.config
    batch: dict = {}
    for key in cfg.image_features:
        c, h, w = cfg.input_features[key].shape
        batch[key] = rng.integers(0, 256, (bsz, h, w, c), dtype=np.uint8)
    batch["observation.state"] = rng.standard_normal((bsz, cfg.state_feature.shape[0])).astype(np.float32)
    batch["task"] = ["pick up the black bowl"] * bsz
    return batch


def clips_per_env_step(policy: Policy, steps: int, bsz: int, seed: int = 0) -> float:
    """Run ``steps`` act() calls on ``bsz`` simulated episodes; clips encoded per env step per episode."""
    rng = np.random.default_rng(seed)
    policy.reset()
    before = policy.world_encoder_calls
    with torch.no_grad():
        for _ in range(steps):
            policy.act(simulated_observation(policy, bsz, rng))
    return (policy.world_encoder_calls - before) / (steps * bsz)


def world_calls_table(
    n_action_steps: Sequence[int], *, modes: Sequence[str] = MEMORY_MODES, chunks: int = 3, bsz: int = 2
) -> dict[str, dict[str, float]]:
    """{mode: {n_action_steps: clips per env step}} with the demo policy on the CPU.

    Each run covers ``chunks`` whole chunks (steps = chunks × n_action_steps) so the ratio is exact;
    ``bsz`` >= 2 because ``shuffle`` swaps memories between episodes.
    """
    paths = ensure_demo()
    table: dict[str, dict[str, float]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a count, not a timing: the tiny demo's ops only pay thread barriers
    try:
        for mode in modes:
            table[mode] = {}
            for n in n_action_steps:
                policy = load_policy(paths.ckpt, vlm=paths.vlm, world_encoder=paths.world_encoder,
                                              memory=mode, n_action_steps=n)
                table[mode][str(n)] = clips_per_env_step(policy, chunks * n, bsz)
    finally:
        torch.set_num_threads(threads)
    return table


def expected_clips_per_env_step(mode: str, context_frames: int, n_action_steps: int) -> float:
    """What the lazy history should cost: T clips per chunk in latent modes, none otherwise."""
    return context_frames / n_action_steps if mode in LATENT_MODES else 0.0
