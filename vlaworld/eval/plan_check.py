"""Checks of a resolved plan before anything runs: an unattended matrix must not fail in its fourth hour.

Each run's command line is parsed by the evaluator's own argument parser (flag names, choices, types),
paths named by flags must exist (``demo`` and placeholders excepted: those are reported apart), the
``shuffle`` memory mode needs two rows per policy call, and the comparison's contrasts must name runs.
Nothing here loads a model or starts a simulator.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from vlaworld.eval.cli import build_parser

PATH_FLAGS = ("ckpt", "vlm", "world_encoder", "stats")  # evaluator flags naming files or folders


class _ParseError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = build_parser()

    def error(message: str) -> None:  # argparse would print and exit; a check collects instead
        raise _ParseError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


def check_run(name: str, argv: Sequence[str], *, placeholder: Callable[[str], bool]) -> list[str]:
    """Problems with one run's evaluator command line ([] when it would start)."""
    try:
        args = _parser().parse_args(list(argv))
    except _ParseError as exc:
        return [f"run {name}: {exc}"]
    problems = []
    for dest in PATH_FLAGS:
        value = getattr(args, dest)
        if value is None or placeholder(value) or (dest == "ckpt" and value == "demo"):
            continue
        if not Path(value).exists():
            problems.append(f"run {name}: --{dest.replace('_', '-')} {value} does not exist")
    if args.memory == "shuffle" and (args.n_envs == 1 or args.max_batch == 1):
        problems.append(f"run {name}: memory 'shuffle' swaps memories between the episodes of a batch: it needs "
                        "n_envs >= 2 and max_batch >= 2")
    return problems


def check_contrasts(contrasts: Sequence[str], names: Sequence[str]) -> list[str]:
    """Each contrast is ``A:B`` with A and B run names (or 1-based run indices)."""
    problems = []
    for c in contrasts:
        sides = str(c).split(":")
        if len(sides) != 2:
            problems.append(f"[compare] contrast {c!r} must be A:B (two run names)")
            continue
        for side in sides:
            if side not in names and not (side.isdigit() and 1 <= int(side) <= len(names)):
                problems.append(f"[compare] contrast {c!r}: {side!r} is not a run of this plan ({', '.join(names)})")
    return problems
