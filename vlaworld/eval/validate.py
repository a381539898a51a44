"""One validation pass over the evaluator's flags, before anything is loaded or written.

A value that cannot work used to surface late: ``--max-steps 0`` wrote run.json and then failed in every
worker (and the corrected command was refused for that directory), ``--n-envs 0`` silently meant the
default, ``--device cuda`` on a CPU build ended in an AssertionError. Each is now one line naming the
flag and what to pass.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from vlaworld.envs.constants import ROBOSUITE_HORIZON, SETTLE_STEPS
from vlaworld.errors import UsageError

MAX_POLICY_STEPS = ROBOSUITE_HORIZON - SETTLE_STEPS  # robosuite refuses steps past its horizon


def check_args(args: argparse.Namespace) -> None:
    """Raise UsageError for the first flag value that cannot work."""
    for flag, value in (("--episodes", args.episodes), ("--n-envs", args.n_envs), ("--max-steps", args.max_steps),
                        ("--max-batch", args.max_batch), ("--n-action-steps", args.n_action_steps)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.max_steps is not None and args.max_steps > MAX_POLICY_STEPS:
        raise UsageError(f"--max-steps must be <= {MAX_POLICY_STEPS} (robosuite's horizon {ROBOSUITE_HORIZON} minus "
                         f"{SETTLE_STEPS} settle steps), got {args.max_steps}")
    if not (args.worker_timeout > 0 and math.isfinite(args.worker_timeout)):
        raise UsageError(f"--worker-timeout must be a positive number of seconds, got {args.worker_timeout:g}")
    if args.videos < 0:
        raise UsageError(f"--videos must be >= 0 (episodes recorded per task), got {args.videos}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a directory (a new one, or a run to resume)")
    if args.label is not None and not args.label.strip():
        raise UsageError("--label must not be empty")
    if args.policy is None and args.device not in ("auto", "cpu") and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
            raise UsageError(f"--device {args.device}: this torch ({torch.__version__}) is {build}; pass --device cpu "
                             "or run where a GPU is visible")
