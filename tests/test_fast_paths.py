"""The fast paths (torch.compile, CUDA graphs) against the eager path they replace, and as explicit choices.

- Compiled stages agree with eager (slow on CPU: inductor compiles C++).
- The compiled regions trace as single graphs: no graph break, so torch.compile and CUDA graphs see whole
  steps (a break splits a region and puts Python between its kernels). Tracing only: fast on CPU.
- CUDA graphs are off unless asked for; neural-only flags are refused where they cannot apply.
The GPU checks themselves are in test_cuda.py (run where a CUDA device exists).
"""

import pytest
import torch
import torch._dynamo as dynamo

import vlaworld
from tests.support.tiny_checkpoint import libero_batch
from vlaworld.bench.inputs import host_batch, stage_inputs
from vlaworld.bench.stack import bench_config, build_stack
from vlaworld.eval.cli import main
from vlaworld.models.flow_matching import euler_times


@pytest.mark.slow
def test_compiled_world_policy_matches_eager(tiny_world):
    vlm, vj, ckpt = tiny_world
    eager = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, dtype="float32")
    compiled = vlaworld.load_policy(ckpt, vlm=vlm, world_encoder=vj, dtype="float32", compile=True)
    assert compiled.config.compile
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    for _ in range(2):  # the second call runs the already compiled graphs
        a = eager.predict_chunk(batch, noise=noise)
        b = compiled.predict_chunk(batch, noise=noise)
        assert (a - b).abs().max().item() < 1e-5


@pytest.fixture(scope="module")
def stack_inputs():
    stack = build_stack(bench_config("debug"), "cpu", torch.float32)
    return stack, stage_inputs(stack, host_batch(stack, 2))


def assert_one_graph(fn, *args) -> None:
    dynamo.reset()
    with torch.no_grad():
        explained = dynamo.explain(fn)(*args)
    reasons = [b.reason for b in explained.break_reasons]
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons


@pytest.mark.parametrize("with_memory", [False, True])
def test_denoise_step_is_one_graph(stack_inputs, with_memory: bool) -> None:
    stack, inputs = stack_inputs
    head = stack.head
    times = head.time_embeddings(euler_times(head.cfg.num_steps), 2, stack.device)
    memory = inputs.memory if with_memory else None
    assert not with_memory or memory is not None
    assert_one_graph(head.denoise_step, inputs.noise, times[0], inputs.prefix, memory)


def test_prefix_pass_and_encoder_blocks_are_one_graph_each(stack_inputs) -> None:
    stack, inputs = stack_inputs
    head = stack.head
    assert_one_graph(head.vlm_with_expert.prefill, inputs.prefix_embs, inputs.prefix_positions, inputs.prefix_mask)
    assert_one_graph(head.embed_images, inputs.vision_input)
    assert_one_graph(stack.world.encoder.encode, inputs.clips)


def test_cuda_graphs_are_opt_in_and_need_cuda(tiny_smolvla):
    vlm, ckpt = tiny_smolvla
    policy = vlaworld.load_policy(ckpt, vlm=vlm, dtype="float32")
    assert policy.config.cuda_graphs is False and policy.config.compile is False
    with pytest.raises(ValueError, match="cuda_graphs=True needs device='cuda'"):
        vlaworld.load_policy(ckpt, vlm=vlm, dtype="float32", cuda_graphs=True)


@pytest.mark.parametrize("flags", [["--cuda-graphs"], ["--compile"], ["--memory", "pred"], ["--numerics", "lerobot-0.6"],
                                   ["--world-preprocess", "legacy"]])
def test_scripted_policy_refuses_neural_flags(tmp_path, capsys, flags):
    assert main(["--policy", "scripted", "--suite", "libero_spatial", "--out", str(tmp_path / "run"), *flags]) == 2
    assert f"{flags[0]} applies to neural policies" in capsys.readouterr().err
    assert not (tmp_path / "run" / "episodes.jsonl").exists()
