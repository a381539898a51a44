"""``python -m vlaworld.eval.plan PLAN.toml``: run an experiment matrix unattended, then compare it.

A plan (TOML, or JSON with the same structure) names the results folder, flags shared by every run,
and the runs; each run goes to ``OUT/<name>`` through exactly the evaluator's command line, so
re-running the plan resumes every run where it stopped (finished runs only rewrite their summary)
and a run whose settings changed is refused. The comparison report is written to ``OUT/compare``.

    out = "results/spatial"
    [defaults]                     # any evaluator flag, without the dashes (n_envs or n-envs)
    suite = "libero_spatial"
    tasks = "0-9"
    episodes = 200
    n_envs = 14
    n_action_steps = 10

    [[run]]
    name = "E0"
    ckpt = "/ckpts/smolvla_libero/pretrained_model"
    memory = "none"

    [[run]]
    name = "E2-zero"
    ckpt = "/ckpts/e2/pretrained_model"
    memory = "zero"
    overrides = { seed = 0 }       # optional: flags for this run only

    [compare]                      # optional
    contrasts = ["E2:E0", "E2:E2-zero"]
    intersect = false
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlaworld.errors import VlaworldError
from vlaworld.eval.cli import build_parser
from vlaworld.eval.cli import main as eval_main

PLAN_KEYS = frozenset({"out", "defaults", "run", "compare"})
RUN_KEYS = frozenset({"name", "overrides"})  # every other key of a run is an evaluator flag
COMPARE_KEYS = frozenset({"contrasts", "intersect", "bootstrap", "seed"})
RESERVED_FLAGS = frozenset({"out", "label"})  # set by the plan from `out` and the run's name
COMPARE_DIR = "compare"  # OUT/compare: the comparison report (no run may take the name)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PlanError(VlaworldError, ValueError):
    """The plan file is malformed; the message says where and what to fix."""


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    name: str
    flags: Mapping[str, Any]  # evaluator flags (dest names) for this run, defaults merged in

    def argv(self, out: Path) -> list[str]:
        """The evaluator command line of this run."""
        args = ["--out", str(out / self.name), "--label", self.name]
        for dest, value in self.flags.items():
            flag = "--" + dest.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is False:
                if dest == "progress":  # the one on/off flag; other booleans are off when absent
                    args.append("--no-progress")
            elif value is not None:
                args += [flag, str(value)]
        return args


@dataclass(frozen=True, kw_only=True)
class Plan:
    out: Path
    runs: tuple[PlannedRun, ...]
    compare: Mapping[str, Any] = field(default_factory=dict)


def _flag_names() -> dict[str, str]:
    """Evaluator option dest names (with dash spellings mapped to them)."""
    names: dict[str, str] = {}
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            names[action.dest] = action.dest
            names[action.dest.replace("_", "-")] = action.dest
    return names


def _flags(table: Mapping[str, Any], where: str, known: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dest = known.get(key)
        if dest is None or dest in RESERVED_FLAGS:
            close = difflib.get_close_matches(key, [k for k in known if k not in RESERVED_FLAGS], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            why = "is set by the plan (out, run name)" if dest in RESERVED_FLAGS else "is not an evaluator flag"
            raise PlanError(f"{where}: {key!r} {why}.{hint}")
        if isinstance(value, (dict, list)):
            raise PlanError(f"{where}: {key!r} must be a single value, got {type(value).__name__}")
        out[dest] = value
    return out


def parse_plan(doc: Mapping[str, Any], base: Path) -> Plan:
    """Validate a decoded plan; relative ``out`` is taken from the plan file's folder."""
    unknown = set(doc) - PLAN_KEYS
    if unknown:
        raise PlanError(f"unknown top-level key(s) {sorted(unknown)}; a plan has {sorted(PLAN_KEYS)}")
    if "out" not in doc or "run" not in doc:
        raise PlanError("a plan needs `out` (results folder) and at least one [[run]]")
    known = _flag_names()
    defaults = _flags(doc.get("defaults", {}), "[defaults]", known)
    runs, seen = [], set()
    for i, raw in enumerate(doc["run"], start=1):
        where = f"[[run]] #{i}"
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PlanError(f"{where}: `name` must be a folder-safe name like 'E2-zero', got {name!r}")
        if name in seen:
            raise PlanError(f"{where}: duplicate run name {name!r} (names are the run folders)")
        if name == COMPARE_DIR:
            raise PlanError(f"{where}: a run may not be named {COMPARE_DIR!r}: OUT/{COMPARE_DIR} holds the report")
        seen.add(name)
        own = _flags({k: v for k, v in raw.items() if k not in RUN_KEYS}, f"{where} ({name})", known)
        overrides = _flags(raw.get("overrides", {}), f"{where} ({name}).overrides", known)
        runs.append(PlannedRun(name=name, flags={**defaults, **own, **overrides}))
    compare = dict(doc.get("compare", {}))
    bad = set(compare) - COMPARE_KEYS
    if bad:
        raise PlanError(f"[compare]: unknown key(s) {sorted(bad)}; allowed {sorted(COMPARE_KEYS)}")
    out = Path(doc["out"])
    return Plan(out=out if out.is_absolute() else base / out, runs=tuple(runs), compare=compare)


def read_plan(path: str | Path) -> Plan:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path}: {exc}") from exc
    else:
        try:
            import tomllib  # Python >= 3.11
        except ModuleNotFoundError as exc:
            raise PlanError(f"{path}: TOML plans need Python >= 3.11; write the plan as JSON instead") from exc
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"{path}: {exc}") from exc
    return parse_plan(doc, path.resolve().parent)


def run_plan(plan: Plan, *, dry_run: bool = False, runner: Callable[[list[str]], int] = eval_main) -> int:
    """Run every configuration in order, then the comparison; stops at the first failing run.

    ``runner`` is the evaluator's ``main`` (tests pass one that runs on stand-in envs).
    """
    for run in plan.runs:
        argv = run.argv(plan.out)
        print(f"[plan] {run.name}: python -m vlaworld.eval {' '.join(argv)}", flush=True)
        if dry_run:
            continue
        code = runner(argv)
        if code != 0:
            print(f"[plan] {run.name} failed (exit {code}); fix it and re-run the plan to resume.", file=sys.stderr)
            return code
    if dry_run:
        return 0
    from vlaworld.eval.compare import compare

    c = plan.compare
    _, text = compare([plan.out / r.name for r in plan.runs], out=plan.out / COMPARE_DIR,
                      intersect=bool(c.get("intersect", False)), contrasts=list(c.get("contrasts", ())),
                      n_resamples=int(c.get("bootstrap", 2000)), seed=int(c.get("seed", 0)))
    print(text)
    print(f"[plan] report: {plan.out / 'compare' / 'compare.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlaworld.eval.plan", description=__doc__.split("\n")[0])
    ap.add_argument("plan", help="plan file (.toml, or .json with the same structure)")
    ap.add_argument("--dry-run", action="store_true", help="print the evaluator commands, run nothing")
    args = ap.parse_args(argv)
    try:
        plan = read_plan(args.plan)
    except (PlanError, FileNotFoundError) as exc:
        print(f"vlaworld.eval.plan: error: {exc}", file=sys.stderr)
        return 2
    return run_plan(plan, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
