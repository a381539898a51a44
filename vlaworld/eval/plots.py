"""The comparison report's figures, drawn from compare.json's numbers (matplotlib, imported lazily).

- ``compare.png``: per-task success rates with Wilson intervals, one marker series per run.
- ``compare_forest.png``: the paired differences of every contrast, per task and overall, with both
  intervals (Newcombe, thick; init-state bootstrap, thin): the picture behind the three answers.
- ``compare_prophet.png``: the Prophet cosine per horizon k of every run that recorded it.

Each returns False (and says why once) when matplotlib is missing: the report works without it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlaworld.eval.summary import task_order

_warned = False


def _figure_class() -> Any:
    global _warned
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    except ImportError:
        if not _warned:
            print("compare: matplotlib is not installed, so no plots were written; "
                  "pip install 'vlaworld[report]' (or matplotlib) to get them", file=sys.stderr)
            _warned = True
        return None
    return Figure


def rates_plot(doc: Mapping[str, Any], labels: Mapping[str, str], path: Path) -> bool:
    """Per-task success rates with Wilson intervals, one marker series per run."""
    figure = _figure_class()
    if figure is None:
        return False
    runs = doc["runs"]
    tasks = sorted({t for run in runs.values() for t in run["per_task"]}, key=task_order) + ["all"]
    fig = figure(figsize=(max(6.0, 0.8 * len(tasks) + 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(runs))
    for i, (name, run) in enumerate(runs.items()):
        rows = [run["overall"] if t == "all" else run["per_task"].get(t, {"n": 0}) for t in tasks]
        xs = [j - 0.4 + width * (i + 0.5) for j, row in enumerate(rows) if row["n"]]
        ys = [100 * row["rate"] for row in rows if row["n"]]
        err = [[100 * (row["rate"] - row["ci95"][0]) for row in rows if row["n"]],
               [100 * (row["ci95"][1] - row["rate"]) for row in rows if row["n"]]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=2, label=labels[name])
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_xlabel("task")
    ax.set_ylabel("success % (Wilson 95 % CI)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def forest_plot(doc: Mapping[str, Any], path: Path) -> bool:
    """One panel per contrast: the difference A − B per task and overall with both 95 % intervals."""
    figure = _figure_class()
    contrasts = doc["contrasts"]
    if figure is None or not contrasts:
        return False
    tasks = sorted({t for c in contrasts for t in c["per_task"]}, key=task_order)
    rows = tasks + ["all"]
    ends = [abs(v) for c in contrasts for cell in (c, *c["per_task"].values())
            for key in ("ci95", "ci95_bootstrap") if cell.get(key) is not None for v in cell[key]]
    span = min(100.0, max(10.0, 110 * max(ends, default=0.1)))  # one scale for every panel
    fig = figure(figsize=(3.2 * len(contrasts) + 1, 0.35 * len(rows) + 1.6))
    axes = fig.subplots(1, len(contrasts), sharey=True, squeeze=False)[0]
    for ax, c in zip(axes, contrasts):
        for y, task in enumerate(reversed(rows)):
            cell = c if task == "all" else c["per_task"].get(task)
            if cell is None:
                continue
            x = 100 * cell["diff"]
            color = "black" if task == "all" else "tab:blue"
            lo, hi = (100 * v for v in cell["ci95"])
            ax.plot([lo, hi], [y + 0.12, y + 0.12], color=color, lw=3, solid_capstyle="butt")
            if cell.get("ci95_bootstrap") is not None:
                blo, bhi = (100 * v for v in cell["ci95_bootstrap"])
                ax.plot([blo, bhi], [y - 0.12, y - 0.12], color="tab:orange", lw=1.2)
            ax.plot([x], [y], "D" if task == "all" else "o", color=color, ms=5)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{c['label_a']} − {c['label_b']}", fontsize="medium")
        ax.set_xlabel("difference, pp")
        ax.set_xlim(-span, span)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [("task " + t if t != "all" else "overall") for t in reversed(rows)])
    fig.suptitle("Paired differences: Newcombe 95 % CI (thick), init-state bootstrap 95 % CI (thin, orange)",
                 fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def prophet_plot(diagnostics: Mapping[str, Any], labels: Mapping[str, str], path: Path) -> bool:
    """Prophet cosine per horizon k (mean over episodes reaching t+k, bootstrap 95 % CI), one line per run."""
    shown = {n: d["prophet_cosine_per_k"] for n, d in diagnostics.get("runs", {}).items()
             if d and any(m["n"] for m in d["prophet_cosine_per_k"])}
    figure = _figure_class() if shown else None
    if figure is None:
        return False
    fig = figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    for name, per_k in shown.items():
        pts = [(k + 1, m) for k, m in enumerate(per_k) if m["n"]]
        ks, means = [k for k, _ in pts], [m["mean"] for _, m in pts]
        err = [[m["mean"] - m["ci95"][0] for _, m in pts], [m["ci95"][1] - m["mean"] for _, m in pts]]
        ax.errorbar(ks, means, yerr=err, fmt="o-", capsize=2, ms=3, label=labels[name])
    ax.set_xlabel("horizon k (env steps ahead)")
    ax.set_ylabel("cos(predicted, observed change)")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True
