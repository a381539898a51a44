"""The built-in demo policy: deterministic files, loads through the public API, runs the world path."""

import numpy as np

import vlaworld
from vlaworld.demo import ensure_demo


def test_demo_is_deterministic_and_runs_the_whole_neural_path(tmp_path):
    a = ensure_demo(tmp_path / "a")
    ensure_demo(tmp_path / "b")
    for rel in ("pretrained_model/model.safetensors", "pretrained_model/config.json",
                "pretrained_model/policy_preprocessor.json", "world_encoder/model.safetensors", "vlm/tokenizer.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert ensure_demo(tmp_path / "a") == a  # built once
    policy = vlaworld.load_policy(a.ckpt, vlm=a.vlm, world_encoder=a.world_encoder)
    assert policy.config.type == "smolvla_world" and policy.config.memory == "pred" and policy.gate > 0.1
    rng = np.random.default_rng(0)
    batch = {
        "observation.images.image": rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8),
        "observation.images.image2": rng.integers(0, 256, (1, 256, 256, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=(1, 8)).astype(np.float32),
        "task": ["pick up the black bowl between the plate and the ramekin and place it on the plate"],
    }
    action = policy.act(batch)
    assert action.shape == (1, 7) and np.isfinite(action).all()
    assert policy.world_encoder_calls == policy.config.world.context_frames  # T latents for the first chunk
