"""The compiled regions trace as single graphs: no graph break, so torch.compile and CUDA graphs see
whole steps (a break splits a region and puts Python between its kernels). Tracing only: fast on CPU."""

import pytest
import torch
import torch._dynamo as dynamo

from vlaworld.bench.inputs import host_batch, stage_inputs
from vlaworld.bench.stack import bench_config, build_stack
from vlaworld.models.flow_matching import euler_times


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
