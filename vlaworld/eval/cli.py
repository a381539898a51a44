"""``python -m vlaworld.eval``: evaluate a policy on LIBERO into a durable, resumable run directory.

    python -m vlaworld.eval --ckpt DIR|demo [--memory MODE] --suite libero_spatial --tasks 0-9 \\
        --episodes 200 --n-envs 8 --out runs/E2
    python -m vlaworld.eval --policy scripted --suite libero_spatial --tasks 0-1 --episodes 2 --out runs/s
    python -m vlaworld.eval --policy-server ws://gpu-host:8000 --tasks 0-9 --episodes 200 --out runs/E2

Writes RUN_DIR/run.json (resolved config, checkpoint hash, versions, simulator stack), one flushed
line of RUN_DIR/episodes.jsonl per finished episode, then summary.json/summary.md. Re-running the
same command resumes (finished episodes are kept); a changed configuration is refused, naming the
fields. This module is the command line only: ``vlaworld.eval.run.run_eval`` is the evaluator as a
function (plans and tests call it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlaworld.config.numerics import DEFAULT_PROFILE, PROFILES
from vlaworld.config.world import MEMORY_MODES, WORLD_PREPROCESS_MODES
from vlaworld.envs.constants import DEFAULT_INIT_PROTOCOL, INIT_PROTOCOLS
from vlaworld.errors import UsageError, one_line_errors
from vlaworld.eval.episode import NOISE_DERIVATION, episode_list, parse_tasks
from vlaworld.eval.results import POLICY_ERROR
from vlaworld.eval.run import cpu_shared_with_workers, run_eval
from vlaworld.eval.scheduler import WORKER_TIMEOUT_S, ChunkPolicy, SchedulerConfig
from vlaworld.eval.shards import from_env
from vlaworld.eval.validate import check_args

DTYPES = ("float32", "bfloat16", "float16")
# Default worker count: LeRobot's auto batch size, floor(0.7 x cores) (reference/users_and_perf.md §1d).
DEFAULT_ENV_FRACTION = 0.7


def default_n_envs() -> int:
    return max(1, int(DEFAULT_ENV_FRACTION * (os.cpu_count() or 1)))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vlaworld.eval", description=__doc__.split("\n")[0])
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--ckpt", help="LeRobot pretrained_model/ directory, or 'demo' (built-in tiny random "
                     "smolvla_world policy, no download; the default when --policy is not given)")
    who.add_argument("--policy", choices=("scripted",), help="privileged-state scripted expert (libero_spatial)")
    who.add_argument("--policy-server", metavar="ws://HOST:PORT", help="the policy behind a server "
                     "(python -m vlaworld.serve) on this or another host; the env workers run here")
    ap.add_argument("--memory", choices=MEMORY_MODES, help="world memory rollout mode (default: the checkpoint's)")
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--tasks", default="all", help="task ids: 'all', '0-9', '0,3,5-7' (default all)")
    ap.add_argument("--episodes", type=int, default=50, help="episodes per task; episode e uses init state e %% 50")
    ap.add_argument("--n-envs", type=int, help="env worker processes (default 0.7 x cores, split between the "
                    "ranks of a node under torchrun)")
    ap.add_argument("--out", required=True, help="run directory (re-run the same command to resume)")
    ap.add_argument("--device", default="auto", help="torch device for the policy: auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--numerics", choices=PROFILES, help="the LeRobot generation whose actions to reproduce: "
                    "lerobot-0.4 (LeRobot 0.4.x, transformers 4.57; the default) or lerobot-0.6 (LeRobot >= 0.5, "
                    "transformers 5); they differ when the vision tower runs in float32")
    ap.add_argument("--dtype", choices=DTYPES, help="cast the whole policy (default: each part in the dtype "
                    "LeRobot runs it in)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the hot steps")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="replay the denoising loop from one CUDA graph (CUDA only; opt-in, see README, Speed)")
    ap.add_argument("--n-action-steps", type=int, help="actions executed per chunk (default: the checkpoint's)")
    ap.add_argument("--max-steps", type=int, help="policy steps per episode (default: the suite's limit)")
    ap.add_argument("--max-batch", type=int, help="rows per policy call (default: all waiting workers); 1 makes "
                    "each episode's float math independent of its batch neighbours, at a cost in speed")
    ap.add_argument("--worker-timeout", type=float, default=WORKER_TIMEOUT_S, metavar="S",
                    help="seconds a worker may take to answer (build+reset, or one chunk) before it is "
                    "killed as hung and its episode retried (default %(default)g)")
    ap.add_argument("--videos", type=int, default=0, metavar="K", help="mp4 of the first K episodes of each task")
    ap.add_argument("--seed", type=int, default=0, help="mixed into every episode's noise generator")
    ap.add_argument("--vlm", help="local SmolVLM directory (config + tokenizer), else the offline HF cache")
    ap.add_argument("--world-encoder", help="local V-JEPA 2 directory, else the offline HF cache")
    ap.add_argument("--world-preprocess", choices=WORLD_PREPROCESS_MODES, help="V-JEPA input: 'default' (as the "
                    "training latents were made) or 'legacy' (the research plugin's rollout: through SmolVLA's "
                    "resize, encoder in float16)")
    ap.add_argument("--stats", help="normalisation stats file replacing the checkpoint's")
    ap.add_argument("--init-protocol", default=DEFAULT_INIT_PROTOCOL, choices=INIT_PROTOCOLS,
                    help="episode recipe: LeRobot >= 0.4.4 (default), lerobot-0.4.2 (init state discarded, to "
                         "compare with old numbers), fresh-env (the plain recipe without LeRobot's warm-up reset), "
                         "lerobot-0.6.1 (LeRobot 0.6.1's env: 360x360 cameras)")
    ap.add_argument("--diagnostics", action="store_true",
                    help="record world diagnostics per episode (attention entropy ratio and per-K mass, Prophet "
                    "cosine per horizon, memory norm, gate; README, Results). Costs one extra V-JEPA clip and one "
                    "world-camera render per env step in pred mode; outcomes are unchanged")
    ap.add_argument("--label", help="display name in reports (default: the run directory's name)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: only on a terminal)")
    return ap


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_policy(args: argparse.Namespace) -> tuple[ChunkPolicy, dict[str, Any], str | None]:
    """(scheduler policy, config fields it contributes to run.json, checkpoint hash or None)."""
    if args.policy == "scripted":
        from vlaworld.eval.policies import ScriptedChunkPolicy

        if args.suite != "libero_spatial":
            raise UsageError("--policy scripted solves libero_spatial tasks only; pass --suite libero_spatial")
        for flag, value in (("--memory", args.memory), ("--n-action-steps", args.n_action_steps),
                            ("--dtype", args.dtype), ("--vlm", args.vlm), ("--stats", args.stats),
                            ("--world-encoder", args.world_encoder), ("--compile", args.compile or None),
                            ("--numerics", args.numerics), ("--world-preprocess", args.world_preprocess),
                            ("--cuda-graphs", args.cuda_graphs or None),
                            ("--diagnostics", args.diagnostics or None)):
            if value is not None:
                raise UsageError(f"{flag} applies to neural policies; drop it with --policy scripted")
        return ScriptedChunkPolicy(), {"policy": "scripted", "n_action_steps": 1, "memory": None}, None

    if args.policy_server:
        return _remote_policy(args)
    from vlaworld.load import load_policy
    from vlaworld.checkpoint import checkpoint_hash
    from vlaworld.eval.policies import NeuralChunkPolicy

    ckpt, vlm, world = args.ckpt or "demo", args.vlm, args.world_encoder
    kind = "demo" if ckpt == "demo" else "checkpoint"
    if kind == "demo":
        from vlaworld.demo import ensure_demo

        paths = ensure_demo()
        ckpt, vlm, world = str(paths.ckpt), vlm or str(paths.vlm), world or str(paths.world_encoder)
    device = _device(args.device)
    policy = load_policy(ckpt, device=device, dtype=args.dtype, memory=args.memory,
                                  n_action_steps=args.n_action_steps, compile=args.compile, vlm=vlm,
                                  world_encoder=world, stats=args.stats, cuda_graphs=args.cuda_graphs,
                                  numerics=args.numerics or DEFAULT_PROFILE,
                                  world_preprocess=args.world_preprocess or "default")
    cfg = policy.config
    fields = {
        "policy": kind, "ckpt": str(Path(ckpt).resolve()), "memory": cfg.memory,
        "n_action_steps": int(cfg.n_action_steps), "device": device, "dtype": args.dtype,
        "numerics": cfg.numerics, "compile": args.compile,
        "policy_config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
    }
    if args.diagnostics:  # only when on, so run.json files written before the flag existed still resume
        fields["diagnostics"] = True
    chunk_policy = NeuralChunkPolicy(policy, seed=args.seed, diagnostics=args.diagnostics)
    return chunk_policy, fields, checkpoint_hash(ckpt)


# Flags that configure the policy itself: with --policy-server they belong on the server's command line.
SERVER_SIDE_FLAGS = ("memory", "dtype", "compile", "cuda_graphs", "vlm", "world_encoder", "stats", "numerics",
                     "world_preprocess")


def _remote_policy(args: argparse.Namespace) -> tuple[ChunkPolicy, dict[str, Any], str | None]:
    from vlaworld.eval.remote import RemoteChunkPolicy

    given = [f"--{f.replace('_', '-')}" for f in SERVER_SIDE_FLAGS if getattr(args, f) not in (None, False)]
    given += ["--device"] if args.device != "auto" else []
    if given:
        raise UsageError(f"{' '.join(given)} configure the policy, which runs on the server: pass them to "
                         "`python -m vlaworld.serve` there (its metadata is recorded in run.json)")
    policy = RemoteChunkPolicy(args.policy_server, seed=args.seed, n_action_steps=args.n_action_steps)
    return policy, policy.run_fields(), policy.metadata.get("checkpoint_sha256")


@one_line_errors("vlaworld.eval")  # bad input or environment (disk full, read-only...): one line, exit 2
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import vlaworld.envs as envs

    try:
        check_args(args)
        shard_info = from_env()
        n_envs = args.n_envs if args.n_envs is not None else max(1, default_n_envs() // shard_info.local_world_size)
        if shard_info.active and args.device in ("auto", "cuda"):
            args.device = shard_info.device(_device(args.device))  # one GPU per rank
        tasks = parse_tasks(args.tasks, envs.num_tasks(args.suite))
        episodes = episode_list(args.suite, tasks, args.episodes)
        policy, fields, ckpt_hash = build_policy(args)
        if fields.get("memory") == "shuffle" and (n_envs < 2 or args.max_batch == 1):
            raise UsageError("--memory shuffle gives each episode the memory of another episode in its batch: "
                             "it needs --n-envs >= 2 and --max-batch >= 2")
        max_steps = args.max_steps if args.max_steps is not None else envs.MAX_STEPS[args.suite]
        config = {
            "label": args.label or Path(args.out).resolve().name,
            "suite": args.suite, "tasks": list(tasks), "episodes": args.episodes, "seed": args.seed,
            "max_steps": max_steps, "init_protocol": args.init_protocol,
            "vlm": args.vlm, "world_encoder": args.world_encoder, "stats": args.stats, "noise": NOISE_DERIVATION,
            **fields,
        }
        scheduler = SchedulerConfig(
            n_envs=n_envs, env_factory=envs.make, max_steps=max_steps, init_protocol=args.init_protocol,
            video_dir=str(Path(args.out) / "videos") if args.videos else None, videos_per_task=args.videos,
            max_batch=args.max_batch, worker_timeout_s=args.worker_timeout,
        )
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        policy_device = "remote" if args.policy_server else fields.get("device", "none")
        with cpu_shared_with_workers(policy_device, n_envs) as torch_threads:
            records, stats = run_eval(
                out=args.out, config=config, episodes=episodes, policy=policy, scheduler=scheduler,
                checkpoint_hash=ckpt_hash, sim_stack=envs.simulator_stack(args.init_protocol),
                progress=args.progress, shard_info=shard_info,
                extra={"n_envs": n_envs, "max_batch": args.max_batch, "videos": args.videos,
                       "torch_threads": torch_threads, "argv": list(sys.argv), "started_utc": started,
                       "policy_server": args.policy_server},
            )
    except KeyboardInterrupt:
        print(f"vlaworld.eval: interrupted; finished episodes are in {args.out}. Re-run the same command to "
              "resume.", file=sys.stderr)
        return 130
    policy.close()  # a served policy's connections
    ok = [r for r in records if r.error is None]
    wins = sum(r.success for r in ok)
    policy_errors = sum(r.extra.get("error_kind") == POLICY_ERROR for r in records if r.error is not None)
    t = stats.throughput(n_envs)
    where = shard_info.run_dir(args.out)
    print(f"{where}: {wins}/{len(ok)} successes, {len(records) - len(ok) - policy_errors} infrastructure errors, "
          f"{policy_errors} policy errors (non-finite actions); this run "
          f"{stats.episodes} episodes in {stats.wall_s:.1f} s ({t['env_steps_per_s']:.1f} env steps/s). "
          f"See {where / 'summary.md'}")
    return 0
