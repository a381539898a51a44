"""What ``--diagnostics`` costs: evaluator env-steps/s of the demo policy in ``pred`` mode with and without it.

Runs ``python -m vlaworld.eval --ckpt demo --memory pred`` twice on the same episodes, in fresh run
directories, once with ``--diagnostics``, and reads both summaries' throughput. With diagnostics the
workers render the world camera at every step (instead of the m+T−1 steps before each boundary) and
the policy encodes one V-JEPA clip per env step on top of the T per chunk: both show up in the rate,
in ``rendered_fraction`` and in ``world_encoder_calls_per_env_step``. The demo policy is tiny, so the
V-JEPA part is cheap here; at real size a clip of ViT-g costs ≈3.7 ms batched on an H100 (README). The
two runs' episodes must end the same way (diagnostics never change outcomes): ``outcomes_identical``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = ("env_steps_per_s", "steady_env_steps_per_s", "world_encoder_calls_per_env_step", "rendered_fraction",
        "policy_s", "wall_s", "env_steps")


@dataclass(frozen=True, kw_only=True)
class DiagnosticsCostConfig:
    n_envs: int
    suite: str = "libero_spatial"
    tasks: str = "0"
    episodes: int = 4  # per task, the same for both runs
    max_steps: int = 60  # the demo policy fails its tasks: every episode runs to this limit


def eval_command(cfg: DiagnosticsCostConfig, out: Path, *, diagnostics: bool) -> list[str]:
    return [
        sys.executable, "-m", "vlaworld.eval", "--ckpt", "demo", "--memory", "pred", "--suite", cfg.suite,
        "--tasks", cfg.tasks, "--episodes", str(cfg.episodes), "--max-steps", str(cfg.max_steps),
        "--n-envs", str(cfg.n_envs), "--device", "cpu", "--out", str(out), "--no-progress",
        *(["--diagnostics"] if diagnostics else []),
    ]


def _run(cfg: DiagnosticsCostConfig, out: Path, *, diagnostics: bool) -> tuple[dict[str, Any], list[tuple]]:
    proc = subprocess.run(eval_command(cfg, out, diagnostics=diagnostics), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"vlaworld.eval exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    throughput = json.loads((out / "summary.json").read_text(encoding="utf-8"))["throughput"]
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text(encoding="utf-8").splitlines()]
    outcomes = sorted((r["task_id"], r["episode"], r["success"], r["steps"], r["error"] is None) for r in rows)
    return {k: throughput.get(k) for k in KEYS}, outcomes


def diagnostics_cost(cfg: DiagnosticsCostConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Both runs' throughput, the rate ratio (with / without) and whether the outcomes matched."""
    with tempfile.TemporaryDirectory(prefix="vlaworld-bench-diag-", dir=workdir) as tmp:
        plain, plain_outcomes = _run(cfg, Path(tmp) / "plain", diagnostics=False)
        diag, diag_outcomes = _run(cfg, Path(tmp) / "diagnostics", diagnostics=True)
    ratio = lambda key: diag[key] / plain[key] if diag.get(key) and plain.get(key) else None  # noqa: E731
    return {
        "without": plain,
        "with": diag,
        "env_steps_per_s_ratio": ratio("env_steps_per_s"),  # with / without
        "steady_env_steps_per_s_ratio": ratio("steady_env_steps_per_s"),
        "outcomes_identical": plain_outcomes == diag_outcomes,
        "workload": {"policy": "demo", "memory": "pred", "suite": cfg.suite, "tasks": cfg.tasks,
                     "episodes_per_task": cfg.episodes, "max_steps": cfg.max_steps, "n_envs": cfg.n_envs},
    }
