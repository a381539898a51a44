"""``python -m vlaworld.bench``: where the time of a chunk and of an evaluation goes, as JSON (SPEC §10).

    python -m vlaworld.bench                                   # real sizes, CPU, batch 1 and 4, eager
    python -m vlaworld.bench --device cuda --dtype bfloat16 --batch 1 10 --compile
    python -m vlaworld.bench --config debug --n-envs 2         # the tiny demo sizes, a few minutes on a laptop

Parts (``--parts``): ``chunk`` per-stage chunk latency for each batch size, eager and, with
``--compile``, compiled (plus CUDA-graph replay on CUDA); ``flops`` counted FLOPs per stage and the
floor they imply at the device's peak; ``world`` world-encoder clips per env step for each memory
mode (demo policy, simulated act() loop); ``env`` evaluator env-steps/s with ``--n-envs`` workers
against one (scripted policy); ``render`` per-step simulation cost with lazy vs every-step rendering;
``served`` requests/s and latency percentiles of the policy server (demo policy) for ``--served-clients``
clients against the in-process call (needs the ``serve`` extra).
``diagnostics`` evaluator env-steps/s of the demo policy with and without ``--diagnostics``.
The JSON goes to stdout (and ``--out FILE``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlaworld.bench.names import ALL_STAGES, WORLD_STAGES
from vlaworld.errors import one_line_errors

PARTS = ("chunk", "flops", "world", "env", "render", "served", "diagnostics")
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vlaworld.bench", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--config", default="real", choices=("real", "debug"),
                    help="model sizes: real (SmolVLM2-500M SmolVLA + V-JEPA 2 ViT-g, random weights) or debug (demo)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes for chunk latency")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd stages (and CUDA graphs on CUDA)")
    ap.add_argument("--stages", nargs="+", default=list(ALL_STAGES), choices=ALL_STAGES, metavar="STAGE",
                    help=f"chunk stages to time (default all: {' '.join(ALL_STAGES)})")
    ap.add_argument("--warmup", type=int, help="untimed calls before timing (default 2 on CUDA, 1 on CPU)")
    ap.add_argument("--repeats", type=int, help="timed calls per stage; the median is reported (default 10 CUDA, 3 CPU)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for --config debug, whose tiny ops only "
                    "pay thread barriers, else torch's default)")
    ap.add_argument("--omp-wait-policy", default="passive", choices=("passive", "active", "inherit"),
                    help="OpenMP waiting threads sleep (passive, default) or spin (active). On a machine shared with "
                    "env workers, spinning threads wait for descheduled ones and small ops slow down 10x or more; "
                    "set before torch loads (inherit: leave OMP_WAIT_POLICY as it is)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure (default all)")
    ap.add_argument("--n-envs", type=int, default=2, help="env workers for the env-steps/s part (0 skips it)")
    ap.add_argument("--env-episodes", type=int, default=16, help="episodes per run in the env part")
    ap.add_argument("--env-max-steps", type=int, default=None,
                    help="step limit per episode in the env part (default: the suite's; the expert ends on success)")
    ap.add_argument("--n-action-steps", type=int, nargs="+", default=[5, 10], help="for the world-calls part")
    ap.add_argument("--render-steps", type=int, default=30, help="env steps timed per schedule in the render part")
    ap.add_argument("--served-clients", type=int, nargs="+", default=[1, 4, 16],
                    help="concurrent clients for the served part (default 1 4 16)")
    ap.add_argument("--served-requests", type=int, default=20, help="timed requests per client in the served part")
    ap.add_argument("--diag-episodes", type=int, default=4, help="episodes per run in the diagnostics part")
    ap.add_argument("--diag-max-steps", type=int, default=60, help="steps per episode in the diagnostics part")
    ap.add_argument("--out", help="also write the JSON to this file")
    return ap


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def device_info(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
                            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark's parts; torch's thread count is set for them and given back afterwards."""
    import torch

    previous = torch.get_num_threads()
    threads = args.threads if args.threads is not None else (1 if args.config == "debug" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_parts(args)
    finally:
        torch.set_num_threads(previous)


def _run_parts(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vlaworld.bench.stack import bench_config

    device = torch.device(args.device)
    dtype = getattr(torch, DTYPES[args.dtype])
    cfg = bench_config(args.config)
    cuda = device.type == "cuda"
    warmup = args.warmup or (2 if cuda else 1)
    repeats = args.repeats or (10 if cuda else 3)
    parts = set(args.parts)
    result: dict[str, Any] = {
        "config": cfg.name, "device": device_info(device), "dtype": args.dtype, "batches": list(args.batch),
        "warmup": warmup, "repeats": repeats, "statistic": "median of repeats (ms); first_call_ms includes compilation",
        "chunk_latency_ms": None, "compile": {"requested": args.compile}, "flops": None,
        "world_encoder_calls_per_env_step": None, "env_steps_per_s": None, "env_steps_per_s_single": None,
        "diagnostics_cost": None,
    }
    if "chunk" in parts:
        result |= _chunk_part(args, cfg, device, dtype, warmup, repeats)
    if "flops" in parts:
        from vlaworld.bench.report import flops_part

        log("counting FLOPs (meta device)")
        result["flops"] = flops_part(cfg, device, dtype, args.batch, result.get("chunk_latency_ms"))
    if "world" in parts:
        from vlaworld.bench.report import world_part

        log("world-encoder clips per env step (demo policy)")
        result |= world_part(args.n_action_steps)
    if "env" in parts and args.n_envs > 0:
        from vlaworld.bench.env_rate import EnvRateConfig, env_rates

        log(f"evaluator env-steps/s, 1 and {args.n_envs} workers (scripted policy)")
        env = env_rates(EnvRateConfig(n_envs=args.n_envs, episodes=args.env_episodes, max_steps=args.env_max_steps))
        result["env_steps_per_s"] = env.pop("env_steps_per_s")
        result["env_steps_per_s_single"] = env.pop("env_steps_per_s_single")
        result["env"] = env
    if "served" in parts:
        from vlaworld.bench.served import ServedBenchConfig, served_part

        threads = torch.get_num_threads()
        log(f"policy server vs in-process call (demo policy, {threads} torch threads)")
        result["served"] = served_part(ServedBenchConfig(clients=tuple(args.served_clients),
                                                         requests=args.served_requests, threads=threads), log)
    if "diagnostics" in parts and args.n_envs > 0:
        from vlaworld.bench.diagnostics_cost import DiagnosticsCostConfig, diagnostics_cost

        log(f"evaluator env-steps/s with and without --diagnostics ({args.n_envs} workers, demo policy, pred)")
        result["diagnostics_cost"] = diagnostics_cost(DiagnosticsCostConfig(
            n_envs=args.n_envs, episodes=args.diag_episodes, max_steps=args.diag_max_steps))
    if "render" in parts:
        from vlaworld.bench.lazy_render import LazyRenderConfig, lazy_render_table

        log("lazy vs every-step rendering (one LIBERO env)")
        result["lazy_render"] = lazy_render_table(LazyRenderConfig(steps=args.render_steps))
    return result


def _chunk_part(args: argparse.Namespace, cfg, device, dtype, warmup: int, repeats: int) -> dict[str, Any]:
    from vlaworld.bench.chunk import ChunkBenchConfig, batch_list, modes_for, run_chunk_bench, speedups
    from vlaworld.bench.stack import build_stack, param_count

    stages = tuple(args.stages)
    needs_world = bool(set(stages) & {*WORLD_STAGES, "total"})
    log(f"building the {cfg.name} model on {device} ({'with' if needs_world else 'without'} the world encoder)")
    t0 = time.perf_counter()
    stack = build_stack(cfg, device, dtype, world_encoder=needs_world)
    log(f"built in {time.perf_counter() - t0:.1f} s")
    latency = run_chunk_bench(stack, ChunkBenchConfig(batches=batch_list(args.batch), stages=stages,
                                                      compile=args.compile, warmup=warmup, repeats=repeats), log)
    w = cfg.policy.world
    return {
        "chunk_latency_ms": latency,
        "compile": {"requested": args.compile, "modes": modes_for(device, args.compile), "speedup_vs_eager": speedups(latency)},
        "model": {
            "params_policy": param_count(stack.model),
            "params_world_encoder": param_count(stack.world.encoder) if stack.world is not None else None,
            "cameras": len(cfg.policy.image_features), "camera_size": cfg.camera_size,
            "vlm_image_size": list(cfg.policy.resize_imgs_with_padding), "language_tokens": cfg.language_tokens,
            "chunk_size": cfg.policy.chunk_size, "num_steps": cfg.policy.num_steps,
            "world": {"m": w.temporal_window, "T": w.context_frames, "K": w.future_offset, "D": w.world_latent_dim},
        },
    }


@one_line_errors("vlaworld.bench")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "served" in args.parts:  # fail now, not after the other parts
        try:
            import msgpack  # noqa: F401
            import websockets  # noqa: F401
        except ImportError as exc:
            print(f"vlaworld.bench: the served part needs the 'serve' extra ({exc.name} is missing): "
                  "pip install 'vlaworld[serve]', or leave 'served' out of --parts", file=sys.stderr)
            return 2
    if args.omp_wait_policy != "inherit" and "torch" not in sys.modules:  # libgomp reads it when torch loads
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0
