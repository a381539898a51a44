"""Compiled stages agree with the eager path they replace (slow on CPU: inductor compiles C++)."""

import pytest
import torch

from tests.tiny_checkpoint import libero_batch, write_tiny_vjepa, write_tiny_vlm, write_tiny_world_checkpoint

import vlaworld

pytestmark = pytest.mark.slow


def test_compiled_world_policy_matches_eager(tmp_path):
    vlm, vj = write_tiny_vlm(tmp_path / "vlm"), write_tiny_vjepa(tmp_path / "vj")
    ckpt = write_tiny_world_checkpoint(tmp_path / "w")
    eager = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, dtype="float32")
    compiled = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, dtype="float32", compile=True)
    assert compiled.config.compile
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    for _ in range(2):  # the second call runs the already compiled graphs
        a = eager.predict_chunk(batch, noise=noise)
        b = compiled.predict_chunk(batch, noise=noise)
        assert (a - b).abs().max().item() < 1e-5
