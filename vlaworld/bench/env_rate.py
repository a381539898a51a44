"""Evaluator env-steps/s with N workers against N × the single-worker rate (the evaluator, as a user runs it).

Runs ``python -m vlaworld.eval --policy scripted`` twice on the same episodes, with ``--n-envs 1``
and ``--n-envs N``, in fresh run directories, and reads ``summary.json``'s throughput. The scripted
expert needs no cameras and almost no policy time, so the rate is the simulation and scheduling
side alone: what N worker processes deliver against N independent single-env loops. The wall time
includes worker start-up, env construction and the hard resets between episodes, as in real runs.

Each worker pays a set-up once per task (process start, env build, first reset: ~6 s here, against
~3 s per scripted episode), which N workers pay N times in parallel, and the last episodes leave
workers idle: a short run understates what N workers deliver over the 200 episodes of a task.
``scaling_steady`` compares the runs' steady rates instead (the evaluator's
``steady_env_steps_per_s``: N × steps / wall time over the episodes that were not a worker's first,
i.e. N set-up workers kept busy; contention between them lengthens those episodes and shows there).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class EnvRateConfig:
    n_envs: int
    suite: str = "libero_spatial"
    tasks: str = "0"
    episodes: int = 16  # per task, the same for both runs
    max_steps: int | None = None  # None: the suite's limit (the scripted expert ends on success)


def eval_command(cfg: EnvRateConfig, n_envs: int, out: Path) -> list[str]:
    limit = [] if cfg.max_steps is None else ["--max-steps", str(cfg.max_steps)]
    return [
        sys.executable, "-m", "vlaworld.eval", "--policy", "scripted", "--suite", cfg.suite, "--tasks", cfg.tasks,
        "--episodes", str(cfg.episodes), *limit, "--n-envs", str(n_envs), "--out", str(out), "--no-progress",
    ]


def run_evaluator(cfg: EnvRateConfig, n_envs: int, out: Path) -> dict[str, Any]:
    """One evaluator run; returns its summary's throughput section. Raises if the evaluator fails."""
    proc = subprocess.run(eval_command(cfg, n_envs, out), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vlaworld.eval exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))["throughput"]


def env_rates(cfg: EnvRateConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Single-worker and N-worker throughput, and their ratio (ideal: N)."""
    with tempfile.TemporaryDirectory(prefix="vlaworld-bench-", dir=workdir) as tmp:
        single = run_evaluator(cfg, 1, Path(tmp) / "single")
        multi = single if cfg.n_envs == 1 else run_evaluator(cfg, cfg.n_envs, Path(tmp) / f"n{cfg.n_envs}")
    rate1, rate_n = single["env_steps_per_s"], multi["env_steps_per_s"]
    steady1, steady_n = single.get("steady_env_steps_per_s"), multi.get("steady_env_steps_per_s")
    return {
        "env_steps_per_s": rate_n,
        "env_steps_per_s_single": rate1,
        "n_envs": cfg.n_envs,
        "scaling": rate_n / rate1 if rate1 else None,  # ideal: n_envs
        "efficiency": rate_n / (cfg.n_envs * rate1) if rate1 else None,  # ideal: 1.0
        "scaling_steady": steady_n / steady1 if steady1 and steady_n else None,  # module docstring
        "workload": {"policy": "scripted", "suite": cfg.suite, "tasks": cfg.tasks, "episodes_per_task": cfg.episodes,
                     "max_steps": cfg.max_steps},
        "single_run": single,
        "multi_run": multi,
    }
