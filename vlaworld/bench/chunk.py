"""Per-stage chunk latency at each batch size, eager and compiled (and CUDA graphs on CUDA).

Modes, timed in this order on one model (compilation is in place, so eager comes first):
``eager``; ``cuda_graphs_eager`` (CUDA: the Euler loop replayed from one graph, stages not compiled);
``compiled`` (``compile_stages`` + V-JEPA ``compile_blocks``, as ``load_policy(compile=True)``);
``cuda_graphs`` (CUDA: compiled stages + graph replay, as ``load_policy(compile=True, cuda_graphs=True)``).
Graph modes only change the denoising loop, so only ``denoise`` and the totals are re-timed there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlaworld.bench.inputs import host_batch, stage_inputs
from vlaworld.bench.stack import Stack
from vlaworld.bench.stages import stage_callables
from vlaworld.bench.timing import measure
from vlaworld.models.cuda_graph import CudaGraphSampler

GRAPH_STAGES = ("denoise", "total_smolvla", "total")


@dataclass(frozen=True, kw_only=True)
class ChunkBenchConfig:
    batches: tuple[int, ...]
    stages: tuple[str, ...]
    compile: bool
    warmup: int
    repeats: int


def modes_for(device: torch.device, compile: bool) -> list[str]:
    modes = ["eager"]
    if device.type == "cuda":
        modes.append("cuda_graphs_eager")
    if compile:
        modes.append("compiled")
        if device.type == "cuda":
            modes.append("cuda_graphs")
    return modes


def run_chunk_bench(
    stack: Stack, cfg: ChunkBenchConfig, log: Callable[[str], None] = lambda _: None
) -> dict[str, dict[str, dict[str, Any]]]:
    """{mode: {batch: {stage: stats dict (ms)}}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    reference: dict[int, dict[str, torch.Tensor]] = {}  # eager outputs of the end-to-end stages
    head = stack.head
    for mode in modes_for(stack.device, cfg.compile):
        if mode == "compiled":
            head.compile_stages()
            if stack.world is not None:
                stack.world.encoder.compile_blocks()
        graphs = mode.startswith("cuda_graphs")
        sampler = CudaGraphSampler(head) if graphs else head.sample_actions
        stages = tuple(s for s in cfg.stages if s in GRAPH_STAGES) if graphs else cfg.stages
        results[mode] = {}
        for bsz in cfg.batches:
            batch = host_batch(stack, bsz)
            inputs = stage_inputs(stack, batch)
            calls = stage_callables(stack, batch, inputs, sampler, stages)
            row: dict[str, Any] = {}
            for name, fn in calls.items():
                m = measure(fn, stack.device, warmup=cfg.warmup, repeats=cfg.repeats)
                row[name] = m.as_dict()
                log(f"{mode:18s} B={bsz:<3d} {name:18s} {m.stats.median:10.2f} ms (first {m.first_call_ms:.0f} ms)")
            diffs = _check_outputs(calls, reference.setdefault(bsz, {}), mode == "eager")
            if diffs:
                row["max_abs_diff_vs_eager"] = diffs
                log(f"{mode:18s} B={bsz:<3d} max |actions - eager|: {diffs}")
            results[mode][str(bsz)] = row
            del inputs, batch, calls
            if stack.device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def _check_outputs(calls: dict[str, Callable[[], Any]], reference: dict[str, torch.Tensor], eager: bool) -> dict[str, float]:
    """Eager mode records the end-to-end actions; other modes report their max-abs difference to them
    (same inputs and noise: the difference is the fast path's numerical error, or a miscompile)."""
    out = {}
    for name in ("total_smolvla", "total"):
        if name not in calls:
            continue
        actions = calls[name]().float()
        if eager:
            reference[name] = actions
        elif name in reference:
            out[name] = float((actions - reference[name]).abs().max())
    return out


def speedups(latency: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Eager median / mode median for every stage timed in both: {mode: {batch: {stage: ratio}}}."""
    eager = latency.get("eager", {})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode, per_batch in latency.items():
        if mode == "eager":
            continue
        out[mode] = {
            b: {s: round(eager[b][s]["median"] / v["median"], 3) for s, v in row.items()
                if s in eager.get(b, {}) and "median" in v}
            for b, row in per_batch.items()
        }
    return out


def batch_list(values: Sequence[int]) -> tuple[int, ...]:
    if not values or any(v < 1 for v in values):
        raise ValueError(f"batch sizes must be >= 1, got {list(values)}")
    return tuple(dict.fromkeys(int(v) for v in values))
