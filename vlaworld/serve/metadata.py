"""The first message of every connection (openpi's protocol): what the served policy is and takes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vlaworld.policy import Policy
from vlaworld.serve.observation import ObservationSpec
from vlaworld.serve.session import SEED_DERIVATION

PROTOCOL = "openpi-websocket (msgpack + openpi numpy extension; metadata first; GET /healthz)"
MESSAGES = {
    "infer": "an observation map -> {'actions': float32 [chunk_size, action_dim], 'server_timing', 'session', "
             "'memory'}; a new chunk per request (execute the first n_action_steps, then ask again)",
    "reset": "{'reset': true, 'session_id': ID} starts a new episode (fresh frame history, generator seeded "
             "from ID); with an observation in the same map it also answers it. openpi-client's reset() sends "
             "nothing: send this through infer()",
    "errors": "a bad request is answered with a text frame naming the problem (openpi-client raises "
              "RuntimeError); the connection and the session stay as they were",
}


def observation_spec(policy: Policy) -> ObservationSpec:
    """The inputs the server checks, from the policy's resolved config."""
    cfg = policy.config
    rename = policy.rename_map
    return ObservationSpec(
        cameras=tuple(cfg.image_features), empty_cameras=int(cfg.empty_cameras),
        state_dim=int(cfg.state_feature.shape[0]), world_frames=int(policy.world_frames_needed),
        world_camera=policy.world_camera if policy.world_frames_needed else None, rename=rename,
    )


def build_metadata(policy: Policy, spec: ObservationSpec, *, policy_kind: str, checkpoint_sha256: str | None,
                   window_ms: float, max_batch: int) -> dict[str, Any]:
    """JSON-compatible metadata (msgpack carries it as maps, lists, text and numbers)."""
    cfg = policy.config
    forced = None if cfg.dtype == "lerobot" else cfg.dtype
    return {
        "server": "vlaworld", "protocol": PROTOCOL, "messages": MESSAGES,
        "policy": {  # the fields the evaluator records in run.json, as a local run records them
            "policy": policy_kind, "ckpt": cfg.checkpoint, "memory": cfg.memory,
            "n_action_steps": int(cfg.n_action_steps), "device": cfg.device, "dtype": forced,
            "numerics": cfg.numerics, "compile": bool(cfg.compile),
        },
        "checkpoint_sha256": checkpoint_sha256,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "action_dim": int(cfg.action_feature.shape[0]), "chunk_size": int(cfg.chunk_size),
        "n_action_steps": int(cfg.n_action_steps), "max_action_dim": int(cfg.max_action_dim),
        "features": spec.describe(),
        "session_seed": SEED_DERIVATION,
        "noise": "per chunk: torch.randn((chunk_size, max_action_dim), generator=session generator), then the "
                 "random memory modes' draws",
        "batching": {"window_ms": window_ms, "max_batch": max_batch},
    }
