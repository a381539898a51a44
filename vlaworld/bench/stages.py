"""The stages of one chunk as zero-argument callables, so each can be timed (or FLOP-counted) alone.

``vision``: SigLIP + connector over every camera; ``prefix``: the 16-layer VLM pass that fills the KV
cache; ``denoise``: the 10-step Euler loop of the expert against the cache; ``world_encoder``: the T
V-JEPA clips a chunk needs, from the host frame window as the policy does it (preprocessing and
host→device copy included); ``world_encoder_core``: the same clips already on the device;
``prophet``: z_hist -> the [B, K, D] memory. ``total`` is a whole chunk from the host batch (images
resized on the device, world memory in ``pred`` mode); ``total_smolvla`` the same without the world
path (memory ``none``), which is what LeRobot's SmolVLA computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vlaworld.bench.inputs import HostBatch, StageInputs, prefix_inputs
from vlaworld.bench.names import ALL_STAGES, WORLD_STAGES
from vlaworld.bench.stack import Stack

Sampler = Callable[..., torch.Tensor]  # (prefix, noise, memory) -> actions, e.g. head.sample_actions


def stage_callables(
    stack: Stack, batch: HostBatch, inputs: StageInputs, sampler: Sampler, stages: tuple[str, ...]
) -> dict[str, Callable[[], Any]]:
    """The requested stages bound to their inputs; world stages need a stack built with the encoder."""
    head, world, dev = stack.head, stack.world, stack.device
    unknown = set(stages) - set(ALL_STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {ALL_STAGES}")
    if world is None and set(stages) & {*WORLD_STAGES, "total"}:
        raise ValueError("world stages need the world encoder (build_stack(..., world_encoder=True))")

    def chunk(with_world: bool) -> torch.Tensor:
        inputs = prefix_inputs(stack, batch)
        memory = world.memory(batch.batch_size, batch.world_window, None, dev) if with_world else None
        prefix = head.encode_prefix(inputs)
        return sampler(prefix, batch.noise.to(dev), memory)

    table: dict[str, Callable[[], Any]] = {
        "vision": lambda: head.embed_images(inputs.vision_input),
        "prefix": lambda: head._prefill(inputs.prefix_embs, inputs.prefix_positions, inputs.prefix_mask),
        "denoise": lambda: sampler(inputs.prefix, inputs.noise, inputs.memory),
        "world_encoder": lambda: world.latent_history(batch.world_window),
        "world_encoder_core": lambda: world.encoder.encode(inputs.clips),
        "prophet": lambda: world.predict(inputs.z_hist),
        "total_smolvla": lambda: chunk(False),
        "total": lambda: chunk(True),
    }
    return {name: _no_grad(table[name]) for name in stages}


def _no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return fn()

    return run
