"""The world-diagnostics section of ``compare.md``: the numbers of ``eval.diagnostics`` in tables and words.

Everything here is worded as exploratory: the diagnostics describe how the world path behaved in each
rollout, and their link to success is an association within the run, not an effect of the memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlaworld.eval.summary import task_order

METRIC_NAMES = {
    "attn_entropy_ratio": "attention entropy ratio",
    "prophet_cosine": "Prophet cosine",
    "memory_norm": "memory norm",
}
CAVEAT = (
    "Exploratory. Quartiles are formed within each task from the run's own rollouts, so the Prophet cosine is "
    "measured on what happened in the episode: an episode that succeeds early is shorter and reaches fewer "
    "horizons, and a policy that moves differently shows the Prophet other frames. A link between cosine and "
    "success is an association, not evidence that better predictions cause success; no multiplicity correction."
)


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mean_ci(m: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not m or not m.get("n"):
        return "–"
    lo, hi = m["ci95"]
    return f"{_num(m['mean'], digits)} ({_num(lo, digits)}–{_num(hi, digits)})"


def _pp(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def _rate(cell: Mapping[str, Any]) -> str:
    if not cell["n"]:
        return "–"
    return f"{cell['successes']}/{cell['n']} {100 * cell['rate']:.0f} %"


def section(diagnostics: Mapping[str, Any] | None, labels: Mapping[str, str]) -> list[str]:
    """Markdown lines of the section ([] when no run has diagnostics). ``labels``: run name -> label."""
    if not diagnostics or not any(diagnostics["runs"].values()):
        return []
    runs: dict[str, Any] = diagnostics["runs"]
    have = [n for n, d in runs.items() if d]
    lines = ["## World diagnostics (exploratory)", "",
             "Recorded per episode with `--diagnostics` (field definitions: README, Results). Means over episodes "
             "with 95 % init-state cluster-bootstrap intervals; episodes with errors carry none.", "",
             "| run | episodes with diagnostics | world path ran | gate | attention entropy ratio | memory norm | "
             "Prophet cosine |", "|---|---|---|---|---|---|---|"]
    for name, d in runs.items():
        if not d:
            lines.append(f"| {labels[name]} | none recorded | | | | | |")
            continue
        o = d["overall"]
        lines.append(f"| {labels[name]} | {d['episodes']} | {d['world_path_episodes']} | {_num(o['gate']['mean'], 4)} | "
                     f"{_mean_ci(o['attn_entropy_ratio'])} | {_mean_ci(o['memory_norm'], 2)} | "
                     f"{_mean_ci(o['prophet_cosine'])} |")
    lines += [""] + _per_task(runs, have, labels) + _per_k(runs, have, labels)
    lines += _quartiles(runs, have, labels) + _paired(diagnostics["paired_by_prophet_quartile"], labels)
    return lines


def _per_task(runs: Mapping[str, Any], have: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    tasks = sorted({t for n in have for t in runs[n]["per_task"]}, key=task_order)
    lines = []
    for metric, title in METRIC_NAMES.items():
        shown = [n for n in have if runs[n]["overall"][metric]["n"]]
        if not shown:
            continue
        digits = 2 if metric == "memory_norm" else 3
        lines += [f"### Per task: {title}", "", "| task | " + " | ".join(labels[n] for n in shown) + " |",
                  "|---" * (len(shown) + 1) + "|"]
        for t in tasks:
            lines.append(f"| {t} | " + " | ".join(_mean_ci(runs[n]["per_task"].get(t, {}).get(metric), digits)
                                                 for n in shown) + " |")
        lines.append("")
    return lines


def _per_k(runs: Mapping[str, Any], have: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    lines = []
    for key, title, note in (
        ("prophet_cosine_per_k", "Prophet cosine per horizon k",
         "cos(predicted change, observed change z_{t+k} − z_t), mean over the episodes that reached t+k "
         "(plot: `compare_prophet.png`)."),
        ("attn_per_k", "Attention mass per future slot k", "mean over episodes; a uniform spread is 1/K per slot."),
    ):
        shown = [n for n in have if runs[n][key]]
        if not shown:
            continue
        width = max(len(runs[n][key]) for n in shown)
        lines += [f"### {title}", "", note, "", "| run | " + " | ".join(f"k={k + 1}" for k in range(width)) + " |",
                  "|---" * (width + 1) + "|"]
        for n in shown:
            cells = [_mean_ci(m) for m in runs[n][key]] + [""] * (width - len(runs[n][key]))
            lines.append(f"| {labels[n]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _quartiles(runs: Mapping[str, Any], have: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    shown = [n for n in have if runs[n]["success_by_prophet_quartile"]]
    if not shown:
        return []
    lines = ["### Success by Prophet-cosine quartile", "", CAVEAT, ""]
    for n in shown:
        q = runs[n]["success_by_prophet_quartile"]
        d = q["q4_minus_q1"]
        lines += [f"{labels[n]} (Q1: lowest cosine; successes/n, rate):", "",
                  "| task | Q1 | Q2 | Q3 | Q4 |", "|---|---|---|---|---|"]
        for t, cells in q["per_task"].items():
            lines.append(f"| {t} | " + " | ".join(_rate(c) for c in cells) + " |")
        lines.append("| **pooled** | " + " | ".join(_rate(c) for c in q["pooled"]) + " |")
        lines += ["", f"Pooled Q4 − Q1: {_pp(d['diff'])} pp (95 % CI {_pp(d['ci95'][0])} to {_pp(d['ci95'][1])}).", ""]
    return lines


def _paired(paired: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    if not paired:
        return []
    lines = ["### Paired differences by the Prophet-cosine quartile of the first run", "",
             "Does a contrast's gain sit where its first run's predictions were good? Same caveat as above.", "",
             "| contrast | quartile | pairs | diff pp | 95 % CI (Newcombe) | only A / only B |",
             "|---|---|---|---|---|---|"]
    for c in paired:
        title = f"{labels[c['a']]} − {labels[c['b']]}"
        for q in c["quartiles"]:
            lo, hi = q["ci95"]
            lines.append(f"| {title} | Q{q['quartile']} | {q['n_pairs']} | {_pp(q['diff'])} | {_pp(lo)} to {_pp(hi)} | "
                         f"{q['only_a']} / {q['only_b']} |")
    return lines + [""]
