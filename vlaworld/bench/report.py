"""Derived sections of the benchmark JSON: FLOPs with their floors and achieved rates, world-call tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlaworld.bench.flops import count_stage_flops, floor_ms, measured_matmul_tflops, nominal_peak_tflops
from vlaworld.bench.stack import BenchConfig
from vlaworld.bench.world_calls import expected_clips_per_env_step, world_calls_table

# Which FLOP count a timed stage corresponds to.
STAGE_FLOPS = {"vision": "vision", "prefix": "prefix", "denoise": "denoise", "world_encoder": "world_encoder",
               "world_encoder_core": "world_encoder", "prophet": "prophet", "total_smolvla": "total_smolvla",
               "total": "total"}
GEMM_SIZE = {"cuda": 8192, "cpu": 2048}


def flops_part(
    cfg: BenchConfig, device: torch.device, dtype: torch.dtype, batches: Sequence[int],
    latency: dict[str, Any] | None,
) -> dict[str, Any]:
    per_batch = {str(b): count_stage_flops(cfg, b) for b in batches}
    nominal = nominal_peak_tflops(device, dtype)
    measured = measured_matmul_tflops(device, dtype, GEMM_SIZE.get(device.type, 2048))
    floors = {
        b: {stage: {"at_nominal_peak": _round(floor_ms(f, nominal)), "at_measured_gemm": _round(floor_ms(f, measured))}
            for stage, f in counts.items()}
        for b, counts in per_batch.items()
    }
    achieved: dict[str, Any] = {}
    for mode, rows in (latency or {}).items():
        achieved[mode] = {
            b: {s: round(per_batch[b][STAGE_FLOPS[s]] / (v["median"] * 1e-3) / 1e12, 4) for s, v in row.items()}
            for b, row in rows.items() if b in per_batch
        }
    return {
        "per_chunk": per_batch,
        "unit": "FLOP (2 per multiply-add), counted with torch.utils.flop_counter on the meta device",
        "peak_tflops_nominal": nominal,
        "peak_tflops_measured_gemm": round(measured, 3),
        "floor_ms": floors,
        "achieved_tflops": achieved,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def world_part(n_action_steps: Sequence[int]) -> dict[str, Any]:
    table = world_calls_table(n_action_steps)
    from vlaworld.demo import config_json

    context = int(config_json()["context_frames"])
    expected = {mode: {str(n): expected_clips_per_env_step(mode, context, n) for n in n_action_steps} for mode in table}
    return {"world_encoder_calls_per_env_step": table, "world_encoder_calls_expected": expected,
            "world_encoder_calls_note": "V-JEPA clips encoded per env step per episode (demo policy, T=%d); the "
                                        "research plugin encoded 1 per env step in every mode" % context}
