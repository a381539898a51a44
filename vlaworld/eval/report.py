"""Words and tables of the comparison report (``compare.md``).

The numbers come from ``compare``; this module holds their types (``Run``, ``Contrast``) and says them: per-contrast sentences, the answers
to the three research questions and the Markdown document (the plots are in ``plots``, the world
diagnostics section in ``report_diagnostics``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlaworld.eval import stats
from vlaworld.eval.report_diagnostics import section
from vlaworld.eval.results import EpisodeKey, EpisodeRecord, RunInfo
from vlaworld.eval.summary import task_order

ALPHA = 0.05  # two-sided significance level of every test in the report


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run directory: its deduplicated episodes keyed by identity, and its provenance."""

    name: str  # directory name: the key in compare.json
    label: str  # shown in the report
    role: str | None  # E0, E1, E2, E2-zero, ... when it could be inferred
    path: Path
    records: dict[EpisodeKey, EpisodeRecord]
    info: RunInfo | None
    notes: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Contrast:
    """A − B on the episodes both ran without error."""

    a: Run
    b: Run
    table: stats.Paired
    ci95: tuple[float, float]
    ci95_bootstrap: tuple[float, float]
    p_mcnemar: float
    p_holm: float
    mde: float
    per_task: dict[str, dict[str, Any]]  # task -> n_pairs, diff, ci95, ci95_bootstrap, p_mcnemar, q_bh
    n_errors: int  # shared episodes with an error in either run: left out, or failures (errors_as_failures)

    @property
    def title(self) -> str:
        return f"{self.a.label} − {self.b.label}"

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(x: float) -> str:
    return f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def describe(c: Contrast) -> str:
    """One careful sentence: significance after Holm, effect with both intervals, and power when null."""
    t = c.table
    effect = (f"{_pp(t.diff)} pp (95 % CI {_pp(c.ci95[0])} to {_pp(c.ci95[1])}; init-state bootstrap "
              f"{_pp(c.ci95_bootstrap[0])} to {_pp(c.ci95_bootstrap[1])}), exact McNemar p = {_p(c.p_mcnemar)}, "
              f"Holm-adjusted p = {_p(c.p_holm)}, {t.n} paired episodes ({t.only_a} won only by "
              f"{c.a.label}, {t.only_b} only by {c.b.label})")
    if c.significant:
        verb = "beats" if t.diff > 0 else "is worse than"
        s = f"{c.a.label} {verb} {c.b.label}: {effect}."
        if c.ci95_bootstrap[0] <= 0 <= c.ci95_bootstrap[1]:
            s += (" The init-state bootstrap interval includes 0, so the evidence is weaker than the per-episode "
                  "test suggests.")
        return s
    return (f"No significant difference detected between {c.a.label} and {c.b.label} (MDE ≈ {100 * c.mde:.1f} pp "
            f"at this discordance rate, α = 0.05, power 0.8, so smaller effects are not ruled out): {effect}.")


def verdicts(contrasts: list[Contrast]) -> list[str]:
    """Answers to the three questions, in words."""
    if not contrasts:
        return ["Nothing to compare: give at least two runs."]
    by_roles = {(c.a.role, c.b.role): c for c in contrasts}
    out = []
    main = by_roles.get(("E2", "E0"))
    capacity = by_roles.get(("E1", "E0"))
    out.append("Does E2 beat E0? " + (describe(main) if main else
               "Not answered: no runs were identified as E2 and E0 (name them with --labels E0 E2 …, "
               "or record config.memory in run.json).")
               + (f" Capacity control (E1 should match E0): {describe(capacity)}" if capacity else ""))
    ablations = [c for (ra, rb), c in by_roles.items() if ra == "E2" and rb and rb.startswith("E2-")]
    if not ablations:
        out.append("Does memory content matter? Not answered: no E2 memory ablations (E2-zero, E2-random) found.")
    else:
        zero, rand = by_roles.get(("E2", "E2-zero")), by_roles.get(("E2", "E2-random"))
        up = lambda c: c is not None and c.significant and c.table.diff > 0  # noqa: E731
        down = lambda c: c is not None and c.significant and c.table.diff < 0  # noqa: E731
        if up(zero):
            summary = "Yes: predicted memory beats zero memory, so its content matters."
        elif any(down(c) for c in ablations):
            summary = "Predicted memory does worse than an ablation: see below."
        elif up(rand) and zero is not None:
            summary = ("Partly: predicted memory is not distinguishable from zero memory but beats random memory, "
                       "so noise hurts, with no evidence that predicted content beats zeros.")
        elif any(up(c) for c in ablations):
            summary = ("Predicted memory beats an ablation (see below), but there is no zero-memory run to "
                       "isolate its content.")
        else:
            summary = "No evidence that memory content matters at this sample size."
        out.append("Does memory content matter (pred vs zero vs random)? " + summary + " "
                   + " ".join(describe(c) for c in ablations))
    cells = [(c, task, cell) for c in contrasts for task, cell in c.per_task.items()]
    hits = [f"task {task} {_pp(cell['diff'])} pp in {c.title} (q = {_p(cell['q_bh'])})"
            for c, task, cell in cells if cell["q_bh"] < ALPHA]
    focus = main or contrasts[0]
    ranked = sorted(focus.per_task.items(), key=lambda kv: kv[1]["diff"])
    spread = (f"per-task differences in {focus.title} range from {_pp(ranked[0][1]['diff'])} pp (task {ranked[0][0]}) "
              f"to {_pp(ranked[-1][1]['diff'])} pp (task {ranked[-1][0]})") if ranked else "no per-task data"
    out.append(f"Which tasks gain or lose? Exploratory per-task exact McNemar tests, Benjamini-Hochberg FDR over "
               f"all {len(cells)} task × contrast tests: " + ("; ".join(hits[:12]) + (
                   f"; and {len(hits) - 12} more (table below)." if len(hits) > 12 else ".") if hits else
               f"no task-level difference survives FDR control at q < 0.05 ({spread}; not significant)."))
    return out


def _cell(r: dict[str, Any], *, always_errors: bool = False) -> str:
    """``k/n rate (CI)``, and the episodes with errors beside it (always in the overall row)."""
    errors = r.get("n_errors", r.get("errors", 0))
    note = f" · {errors} err" if errors or always_errors else ""
    if not r["n"]:
        return "–" + note
    lo, hi = r["ci95"]
    return f"{r['successes']}/{r['n']}{note} {100 * r['rate']:.1f} ({100 * lo:.1f}–{100 * hi:.1f})"


def to_markdown(runs: list[Run], doc: dict[str, Any], contrasts: list[Contrast]) -> str:
    as_failures = bool(doc.get("errors_as_failures"))
    lines = ["# Policy comparison", "", "| run | label | role | memory | checkpoint | episodes | with errors |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        t, cfg = doc["runs"][r.name]["overall"], (r.info.config if r.info else {})
        ckpt = (r.info.checkpoint_hash or "")[:12] if r.info else ""
        lines.append(f"| {r.name} | {r.label} | {r.role or ''} | {cfg.get('memory', '')} | {ckpt} | "
                     f"{t['n'] + (0 if as_failures else t['n_errors'])} | {t['n_errors']} |")
    lines += [""] + [f"> {n}" for n in doc["notes"]] + ([""] if doc["notes"] else [])
    lines += ["## Answers", ""] + [f"{i}. {v}" for i, v in enumerate(doc["verdicts"], 1)] + [""]
    tasks = sorted({t for run in doc["runs"].values() for t in run["per_task"]}, key=task_order)
    handling = "counted as failures (--errors-as-failures)" if as_failures else "left out of k/n"
    lines += ["## Success rates", "", f"successes/n · episodes with errors ({handling}), rate % (Wilson 95 % CI).", "",
              "| task | " + " | ".join(r.label for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for t in tasks + ["all"]:
        cells = [_cell(doc["runs"][r.name]["overall"], always_errors=True) if t == "all" else
                 _cell(doc["runs"][r.name]["per_task"].get(t, {"n": 0})) for r in runs]
        lines.append(f"| {'**all**' if t == 'all' else t} | " + " | ".join(cells) + " |")
    lines += ["", f"## Contrasts ({doc['contrast_source']}; Holm over {len(contrasts)})", "",
              f"Episodes with an error in either run: {handling} (errors column).", "",
              "| contrast | pairs | errors | diff pp | 95 % CI (Newcombe) | 95 % CI (init-state bootstrap) | "
              "only A / only B | McNemar p | Holm p | MDE pp |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in contrasts:
        lines.append(f"| {c.title} | {c.table.n} | {c.n_errors} | {_pp(c.table.diff)} | {_pp(c.ci95[0])} to "
                     f"{_pp(c.ci95[1])} | {_pp(c.ci95_bootstrap[0])} to {_pp(c.ci95_bootstrap[1])} | "
                     f"{c.table.only_a} / {c.table.only_b} | {_p(c.p_mcnemar)} | {_p(c.p_holm)} | ±{100 * c.mde:.1f} |")
    lines += ["", "## Per-task differences (exploratory)", "",
              "diff pp (BH-FDR q across all task × contrast tests); **bold** when q < 0.05. With both intervals: "
              "`compare_forest.png`.", "",
              "| task | " + " | ".join(c.title for c in contrasts) + " |", "|---" * (len(contrasts) + 1) + "|"]
    for t in tasks:
        cells = []
        for c in contrasts:
            cell = c.per_task.get(t)
            text = f"{_pp(cell['diff'])} (q {_p(cell['q_bh'])})" if cell else "–"
            cells.append(f"**{text}**" if cell and cell["q_bh"] < ALPHA else text)
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += [""] + section(doc.get("diagnostics"), {r.name: r.label for r in runs})
    lines += ["## Method", ""] + [f"- {k}: {v}" for k, v in doc["method"].items()] + [
        f"- diagnostics.{k}: {v}" for k, v in (doc.get("diagnostics") or {}).get("method", {}).items()
        if any((doc.get("diagnostics") or {}).get("runs", {}).values())] + [
        "- Intervals cover episode sampling only, not training-seed variance.",
        "- Non-significant means no difference was detected at this sample size, not that the runs are equal.", ""]
    return "\n".join(lines)
