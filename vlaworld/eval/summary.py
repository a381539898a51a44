"""Success rates of a run, and ``summary.json`` / ``summary.md`` (SPEC §8).

Rates count only episodes that ran without ``error`` (an infrastructure fault is not a policy
failure), and say how many had one (``n_errors``, beside k/n); each rate comes with its Wilson 95 %
interval. ``errors_as_failures`` counts them as failures instead, as some other tools do (vla-eval),
for numbers comparable with theirs. Split from ``results`` (the durable store).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlaworld.eval.results import (
    INFRASTRUCTURE_ERROR,
    POLICY_ERROR,
    SUMMARY_JSON,
    SUMMARY_MD,
    EpisodeRecord,
    _write_atomic,
)
from vlaworld.eval.stats import wilson_interval


@dataclass(frozen=True, kw_only=True)
class Rate:
    """Success count over the episodes that ran without error, with its Wilson 95 % interval."""

    n: int  # episodes in the rate
    successes: int
    errors: int = 0  # episodes with an error: outside n, or inside it as failures (errors_as_failures)
    policy_errors: int = 0  # of which: the policy produced non-finite actions (results.POLICY_ERROR)

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "successes": self.successes, "rate": self.rate,
                "ci95": list(self.ci95), "errors": self.errors, "n_errors": self.errors,
                "policy_errors": self.policy_errors}


def rate_of(records: Iterable[EpisodeRecord], *, errors_as_failures: bool = False) -> Rate:
    """Errors are counted apart, never as failures (unless ``errors_as_failures``, for other tools' convention)."""
    n = successes = errors = policy_errors = 0
    for r in records:
        if r.error is not None:
            errors += 1
            policy_errors += r.extra.get("error_kind") == POLICY_ERROR
            n += errors_as_failures
        else:
            n += 1
            successes += bool(r.success)
    return Rate(n=n, successes=successes, errors=errors, policy_errors=policy_errors)


def task_order(task: str) -> tuple[str, int]:
    """Sort key of per-task labels: ``"3"`` or ``"suite:3"`` by suite, then numerically."""
    suite, _, tid = task.rpartition(":")
    return (suite, int(tid)) if tid.lstrip("-").isdigit() else (task, 0)


def task_label(record: EpisodeRecord, *, multi_suite: bool) -> str:
    """The per-task key of reports: ``"3"``, or ``"libero_goal:3"`` when suites are mixed."""
    return f"{record.suite}:{record.task_id}" if multi_suite else str(record.task_id)


def summarize(records: Iterable[EpisodeRecord]) -> dict[str, Any]:
    """Overall and per-task rates (tasks in numeric order) as a JSON-ready dict."""
    records = list(records)
    multi = len({r.suite for r in records}) > 1
    by_task: dict[str, list[EpisodeRecord]] = {}
    for r in sorted(records, key=lambda r: (r.suite, r.task_id, r.episode)):
        by_task.setdefault(task_label(r, multi_suite=multi), []).append(r)
    return {
        "suites": sorted({r.suite for r in records}),
        "overall": rate_of(records).to_json(),
        "per_task": {k: {"task": rs[0].task, **rate_of(rs).to_json()} for k, rs in by_task.items()},
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def write_summary(
    run_dir: str | os.PathLike,
    records: Iterable[EpisodeRecord],
    *,
    throughput: Mapping[str, float] | None = None,
    notes: Iterable[str] = (),
) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.md``; ``throughput`` (e.g. env_steps_per_s) is copied in."""
    run_dir = Path(run_dir)
    records = list(records)
    doc = summarize(records)
    doc["errors"] = [{"suite": r.suite, "task_id": r.task_id, "episode": r.episode, "error": r.error,
                      "kind": r.extra.get("error_kind", INFRASTRUCTURE_ERROR)} for r in records if r.error is not None]
    doc["throughput"] = dict(throughput or {})
    doc["notes"] = list(notes) + [
        "Rates exclude episodes with errors (counted under 'n_errors', and of them under 'policy_errors' those "
        "stopped because the policy produced non-finite actions). Wilson 95 % intervals cover "
        "episode sampling only, not training-seed variance."
    ]
    json_path, md_path = run_dir / SUMMARY_JSON, run_dir / SUMMARY_MD
    _write_atomic(json_path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    rows = ["| task | successes / n | with errors (policy) | rate % | 95 % CI | instruction |", "|---|---|---|---|---|---|"]
    for key, t in doc["per_task"].items():
        rows.append(f"| {key} | {t['successes']}/{t['n']} | {t['n_errors']} ({t['policy_errors']}) | {_pct(t['rate'])} | "
                    f"{_pct(t['ci95'][0])}–{_pct(t['ci95'][1])} | {t['task']} |")
    o = doc["overall"]
    rows.append(f"| **all** | **{o['successes']}/{o['n']}** | {o['n_errors']} ({o['policy_errors']}) | **{_pct(o['rate'])}** | "
                f"{_pct(o['ci95'][0])}–{_pct(o['ci95'][1])} | |")
    lines = [f"# Run summary: {run_dir.name}", "", f"Suites: {', '.join(doc['suites'])}", "", *rows, ""]
    if doc["throughput"]:
        lines += ["## Throughput", ""] + [
            f"- {k}: {'n/a' if v is None else format(v, 'g')}" for k, v in doc["throughput"].items()] + [""]
    if doc["errors"]:
        lines += ["## Errors (not counted as failures)", ""] + [
            f"- task {e['task_id']} episode {e['episode']} ({e['kind']}): {e['error']}" for e in doc["errors"][:50]] + [""]
    lines += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    _write_atomic(md_path, "\n".join(lines))
    return json_path, md_path
