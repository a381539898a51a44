"""GPU paths against the eager path they replace (run where a CUDA device exists)."""

import pytest
import torch

import vlaworld
from tests.support.tiny_checkpoint import libero_batch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("bfloat16", 5e-2)])
def test_cuda_graph_and_compile_match_eager(tiny_world, dtype, tol):
    vlm, vj, ckpt = tiny_world
    eager = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, device="cuda", dtype=dtype)
    fast = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, device="cuda", dtype=dtype, compile=True,
                                cuda_graphs=True)
    assert fast.config.cuda_graphs
    for seed in range(3):  # capture on the first call, replay on the next ones with new inputs
        batch = libero_batch(seed=seed)  # new observations: the replay must read the new prefix cache
        noise = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(seed))
        a = eager.predict_chunk(batch, noise=noise)
        b = fast.predict_chunk(batch, noise=noise)
        assert (a - b).abs().max().item() < tol


def test_cuda_matches_cpu_in_float32(tiny_world):
    vlm, vj, ckpt = tiny_world
    cpu = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, dtype="float32")
    gpu = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, device="cuda", dtype="float32")
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    assert (cpu.predict_chunk(batch, noise=noise) - gpu.predict_chunk(batch, noise=noise).cpu()).abs().max() < 1e-4
