"""``python -m vlaworld.eval.plan PLAN.toml``: run an experiment matrix unattended, then compare it.

A plan (TOML, or JSON with the same structure) names the results folder, flags shared by every run,
and the runs; each run goes to ``OUT/<name>`` through exactly the evaluator's command line, so
re-running the plan resumes every run where it stopped (finished runs only rewrite their summary)
and a run whose settings changed is refused. The comparison report is written to ``OUT/compare``.
Every run is checked before the first starts (``plan_check``); ``--check`` only checks. The team's
matrix is ready in ``plans/libero_spatial_matrix.toml``.

    out = "results/spatial"
    [vars]                         # optional: values used as {name} in any string below; --set name=VALUE
    e2_ckpt = "<path to E2's pretrained_model>"   # a value in <...> is a placeholder: it must be filled
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
    ckpt = "{e2_ckpt}"
    memory = "zero"
    overrides = { seed = 0 }       # optional: flags for this run only

    [compare]                      # optional
    contrasts = ["E2:E0", "E2:E2-zero"]   # run names; default: inferred from the names (E0, E2, E2-zero, ...)
    intersect = false

    python -m vlaworld.eval.plan PLAN.toml --check                     # validate; list what is left to fill
    python -m vlaworld.eval.plan PLAN.toml --set e2_ckpt=/ckpts/e2     # run it
    python -m vlaworld.eval.plan PLAN.toml --set e2_ckpt=demo --override episodes=2 --out /tmp/smoke
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

from vlaworld.errors import VlaworldError, one_line_errors
from vlaworld.eval.cli import build_parser
from vlaworld.eval.cli import main as eval_main
from vlaworld.eval.plan_check import check_contrasts, check_run

PLAN_KEYS = frozenset({"out", "vars", "defaults", "run", "compare"})
RUN_KEYS = frozenset({"name", "overrides"})  # every other key of a run is an evaluator flag
COMPARE_KEYS = frozenset({"contrasts", "intersect", "bootstrap", "seed", "errors_as_failures"})
RESERVED_FLAGS = frozenset({"out", "label"})  # set by the plan from `out` and the run's name
COMPARE_DIR = "compare"  # OUT/compare: the comparison report (no run may take the name)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VAR_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR = re.compile(r"\{(" + _VAR_NAME + r")\}")  # {name} in a string value
_PLACEHOLDER = re.compile(r"^<[^<>]*>$")  # a value still to be filled in


def is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and bool(_PLACEHOLDER.match(value))


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

    @property
    def placeholders(self) -> list[str]:
        """``<...> (run.flag, ...)`` for every value still to fill in (a plan with any is refused to run)."""
        where: dict[str, list[str]] = {}
        for r in self.runs:
            for dest, value in r.flags.items():
                if is_placeholder(value):
                    where.setdefault(value, []).append(f"{r.name}.{dest}")
        return [f"{value} ({', '.join(uses)})" for value, uses in where.items()]

    def problems(self) -> list[str]:
        """Everything that would stop a run or the comparison (placeholders aside)."""
        problems = [p for r in self.runs for p in check_run(r.name, r.argv(self.out), placeholder=is_placeholder)]
        return problems + check_contrasts(self.compare.get("contrasts", ()), [r.name for r in self.runs])


def _flag_names() -> dict[str, str]:
    """Evaluator option dest names (with dash spellings mapped to them)."""
    names: dict[str, str] = {}
    for action in build_parser()._actions:
        if action.option_strings and action.dest != "help":
            names[action.dest] = action.dest
            names[action.dest.replace("_", "-")] = action.dest
    return names


def _substitute(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    """``{name}`` in a string value replaced by the plan variable (a whole-value reference keeps its type)."""
    if not isinstance(value, str):
        return value
    missing = [n for n in _VAR.findall(value) if n not in variables]
    if missing:
        raise PlanError(f"{where}: {value!r} uses undefined variable(s) {missing}; define them in [vars] "
                        f"(known: {sorted(variables)})")
    whole = _VAR.fullmatch(value)
    if whole:
        return variables[whole.group(1)]
    return _VAR.sub(lambda m: str(variables[m.group(1)]), value)


def _flags(table: Mapping[str, Any], where: str, known: dict[str, str],
           variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        value = _substitute(value, variables or {}, f"{where} {key}")
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


def _variables(doc: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, Any]:
    declared = dict(doc.get("vars", {}))
    for name, value in declared.items():
        if not re.fullmatch(_VAR_NAME, name) or isinstance(value, (dict, list)):
            raise PlanError(f"[vars]: {name!r} must be a name (letters, digits, _) with a single value")
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise PlanError(f"--set {unknown}: the plan has no such variable; its [vars] are {sorted(declared)}")
    return {**declared, **given}


def parse_plan(doc: Mapping[str, Any], base: Path, *, variables: Mapping[str, str] | None = None,
               overrides: Mapping[str, Any] | None = None, out: str | Path | None = None) -> Plan:
    """Validate a decoded plan; relative ``out`` is taken from the plan file's folder.

    ``variables`` (``--set``) fill [vars]; ``overrides`` (``--override``) replace a flag in every run,
    over the plan's own values (a smoke test of a plan); ``out`` replaces the results folder.
    """
    unknown = set(doc) - PLAN_KEYS
    if unknown:
        raise PlanError(f"unknown top-level key(s) {sorted(unknown)}; a plan has {sorted(PLAN_KEYS)}")
    if "out" not in doc or "run" not in doc:
        raise PlanError("a plan needs `out` (results folder) and at least one [[run]]")
    known = _flag_names()
    values = _variables(doc, variables or {})
    defaults = _flags(doc.get("defaults", {}), "[defaults]", known, values)
    forced = _flags(overrides or {}, "--override", known)
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
        own = _flags({k: v for k, v in raw.items() if k not in RUN_KEYS}, f"{where} ({name})", known, values)
        own_overrides = _flags(raw.get("overrides", {}), f"{where} ({name}).overrides", known, values)
        runs.append(PlannedRun(name=name, flags={**defaults, **own, **own_overrides, **forced}))
    compare = dict(doc.get("compare", {}))
    bad = set(compare) - COMPARE_KEYS
    if bad:
        raise PlanError(f"[compare]: unknown key(s) {sorted(bad)}; allowed {sorted(COMPARE_KEYS)}")
    folder = Path(out) if out is not None else Path(doc["out"])
    folder = folder if folder.is_absolute() else ((Path.cwd() if out is not None else base) / folder).resolve()
    return Plan(out=folder, runs=tuple(runs), compare=compare)


def read_plan(path: str | Path, *, variables: Mapping[str, str] | None = None,
              overrides: Mapping[str, Any] | None = None, out: str | Path | None = None) -> Plan:
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
    return parse_plan(doc, path.resolve().parent, variables=variables, overrides=overrides, out=out)


def run_plan(plan: Plan, *, dry_run: bool = False, runner: Callable[[list[str]], int] = eval_main) -> int:
    """Check every run, then run them in order and the comparison; stops at the first failing run.

    ``runner`` is the evaluator's ``main`` (tests pass one that runs on stand-in envs).
    """
    problems = plan.problems() + [f"placeholder left: {p} (fill it in the plan or with --set)" for p in plan.placeholders]
    if problems and not dry_run:
        print("[plan] not started:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
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
                      n_resamples=int(c.get("bootstrap", 2000)), seed=int(c.get("seed", 0)),
                      errors_as_failures=bool(c.get("errors_as_failures", False)))
    print(text)
    print(f"[plan] report: {plan.out / 'compare' / 'compare.md'}")
    return 0


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise PlanError(f"{flag} takes NAME=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


def check(plan: Plan) -> int:
    """Print every run's command line, what is left to fill and what is wrong; 0 when nothing is wrong."""
    for run in plan.runs:
        print(f"[plan] {run.name}: python -m vlaworld.eval {' '.join(run.argv(plan.out))}")
    problems = plan.problems()
    for p in plan.placeholders:
        print(f"[plan] to fill in before running: {p} (in the plan, or with --set)")
    for p in problems:
        print(f"[plan] error: {p}", file=sys.stderr)
    state = "invalid" if problems else ("valid; fill the placeholders to run it" if plan.placeholders else "valid")
    print(f"[plan] {len(plan.runs)} runs into {plan.out}, then {plan.out / 'compare'}: {state}")
    return 2 if problems else 0


@one_line_errors("vlaworld.eval.plan")
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlaworld.eval.plan", description=__doc__.split("\n")[0])
    ap.add_argument("plan", help="plan file (.toml, or .json with the same structure)")
    ap.add_argument("--check", action="store_true", help="validate the plan (flags, paths, contrasts) and list the "
                    "placeholders left to fill; run nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the evaluator commands, run nothing")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a value for a [vars] entry")
    ap.add_argument("--override", action="append", default=[], metavar="FLAG=VALUE",
                    help="an evaluator flag for every run, over the plan's values (e.g. episodes=2 for a smoke test)")
    ap.add_argument("--out", help="results folder instead of the plan's `out`")
    args = ap.parse_args(argv)
    plan = read_plan(args.plan, variables=_pairs(args.set, "--set"), overrides=_pairs(args.override, "--override"),
                     out=args.out)
    if args.check:
        return check(plan)
    return run_plan(plan, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
