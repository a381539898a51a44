"""World diagnostics across runs for the comparison report (numbers only; ``report_diagnostics`` says them).

Reads each episode's ``diagnostics`` object (written by ``--diagnostics``, README "Results") and gives,
per run and per task, means over episodes with 95 % init-state cluster-bootstrap intervals (the report's
resampling: init states drawn within each task), the Prophet cosine per horizon, and the exploratory
link to success: success by Prophet-cosine quartile, and the paired differences of each contrast by the
quartile of its first run. Quartiles are formed within each task (rank order, ties by episode index) so
that task difficulty does not pass for prediction quality. Episodes with errors carry no diagnostics and
are left out. Runs without diagnostics get ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlaworld.eval import stats
from vlaworld.eval.results import EpisodeKey, EpisodeRecord
from vlaworld.eval.summary import task_label, task_order

SCALARS = ("attn_entropy_ratio", "prophet_cosine", "memory_norm", "gate")  # one number per episode
QUARTILES = 4


def _diag(record: EpisodeRecord) -> Mapping[str, Any] | None:
    d = record.extra.get("diagnostics")
    return d if record.error is None and isinstance(d, Mapping) else None


def _mean_ci(values: list[float], tasks: list[str], clusters: list[Any], n_resamples: int, seed: int) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "ci95": None}
    lo, hi = stats.cluster_bootstrap_mean(values, strata=tasks, clusters=clusters, n_resamples=n_resamples, seed=seed)
    return {"n": len(values), "mean": float(np.mean(values)), "ci95": [lo, hi]}


def _metric(rows: list[tuple[str, Any, Mapping[str, Any]]], name: str, n_resamples: int, seed: int,
            index: int | None = None) -> dict[str, Any]:
    """Mean of ``name`` (or its ``index``-th entry) over the episodes that have it."""
    picked = []
    for task, cluster, d in rows:
        value = d.get(name)
        if index is not None:
            value = value[index] if isinstance(value, list) and index < len(value) else None
        if value is not None:
            picked.append((task, cluster, float(value)))
    return _mean_ci([v for *_, v in picked], [t for t, *_ in picked], [c for _, c, _ in picked], n_resamples, seed)


def _vector_length(rows: list[tuple[str, Any, Mapping[str, Any]]], name: str) -> int:
    return max((len(d[name]) for *_, d in rows if isinstance(d.get(name), list)), default=0)


def run_diagnostics(records: Sequence[EpisodeRecord], *, multi_suite: bool, n_resamples: int = 2000,
                    seed: int = 0) -> dict[str, Any] | None:
    """One run's diagnostics summary, or None when none of its episodes has diagnostics."""
    rows = [(task_label(r, multi_suite=multi_suite), r.init_state, d) for r in records if (d := _diag(r)) is not None]
    if not rows:
        return None
    tasks = sorted({t for t, *_ in rows}, key=task_order)
    out: dict[str, Any] = {
        "episodes": len(rows),
        "episodes_without": sum(r.error is None for r in records) - len(rows),
        "world_path_episodes": sum(bool(d.get("world_path")) for *_, d in rows),
        "overall": {m: _metric(rows, m, n_resamples, seed) for m in SCALARS},
        "per_task": {t: {m: _metric([row for row in rows if row[0] == t], m, n_resamples, seed) for m in SCALARS}
                     for t in tasks},
        "attn_per_k": [_metric(rows, "attn_per_k", n_resamples, seed, index=k)
                       for k in range(_vector_length(rows, "attn_per_k"))],
        "prophet_cosine_per_k": [_metric(rows, "prophet_cosine_per_k", n_resamples, seed, index=k)
                                 for k in range(_vector_length(rows, "prophet_cosine_per_k"))],
    }
    quartiles = prophet_quartiles(records, multi_suite=multi_suite)
    out["success_by_prophet_quartile"] = None if quartiles is None else _quartile_table(records, quartiles, multi_suite)
    return out


def prophet_quartiles(records: Sequence[EpisodeRecord], *, multi_suite: bool) -> dict[EpisodeKey, int] | None:
    """Each episode's Prophet-cosine quartile (0 = lowest) within its task; None without Prophet cosines."""
    by_task: dict[str, list[tuple[float, int, EpisodeKey]]] = {}
    for r in records:
        d = _diag(r)
        if d is not None and d.get("prophet_cosine") is not None:
            by_task.setdefault(task_label(r, multi_suite=multi_suite), []).append(
                (float(d["prophet_cosine"]), r.episode, r.key))
    if not by_task:
        return None
    out = {}
    for episodes in by_task.values():
        episodes.sort()
        for rank, (*_, key) in enumerate(episodes):
            out[key] = QUARTILES * rank // len(episodes)
    return out


def _rate_cell(successes: int, n: int, cosines: list[float]) -> dict[str, Any]:
    return {"n": n, "successes": successes, "rate": successes / n if n else None,
            "ci95": list(stats.wilson_interval(successes, n)),
            "prophet_cosine_range": [min(cosines), max(cosines)] if cosines else None}


def _quartile_table(records: Sequence[EpisodeRecord], quartiles: Mapping[EpisodeKey, int],
                    multi_suite: bool) -> dict[str, Any]:
    """Success per quartile: per task, and pooled over tasks (each episode in its task's quartile)."""
    cells: dict[str, list[list[tuple[bool, float]]]] = {}
    for r in records:
        if r.key in quartiles:
            task = task_label(r, multi_suite=multi_suite)
            cells.setdefault(task, [[] for _ in range(QUARTILES)])[quartiles[r.key]].append(
                (bool(r.success), float(r.extra["diagnostics"]["prophet_cosine"])))
    per_task = {t: [_rate_cell(sum(s for s, _ in c), len(c), [v for _, v in c]) for c in cells[t]]
                for t in sorted(cells, key=task_order)}
    pooled = [[x for t in cells for x in cells[t][q]] for q in range(QUARTILES)]
    pooled_cells = [_rate_cell(sum(s for s, _ in c), len(c), [v for _, v in c]) for c in pooled]
    top, bottom = pooled_cells[-1], pooled_cells[0]
    diff = (top["rate"] - bottom["rate"]) if top["n"] and bottom["n"] else None
    return {"per_task": per_task, "pooled": pooled_cells,
            "q4_minus_q1": {"diff": diff, "ci95": list(stats.newcombe_unpaired_interval(
                top["successes"], top["n"], bottom["successes"], bottom["n"]))}}


def paired_by_quartile(a: Mapping[EpisodeKey, EpisodeRecord], b: Mapping[EpisodeKey, EpisodeRecord],
                       keys: Sequence[EpisodeKey], quartiles: Mapping[EpisodeKey, int], *,
                       errors_as_failures: bool) -> list[dict[str, Any]]:
    """A − B on the shared episodes in each of A's Prophet-cosine quartiles (Newcombe paired intervals)."""
    out = []
    for q in range(QUARTILES):
        ks = [k for k in keys if quartiles.get(k) == q and (errors_as_failures or b[k].error is None)]
        xa = np.array([a[k].success for k in ks], dtype=bool)
        xb = np.array([b[k].error is None and b[k].success for k in ks], dtype=bool)
        t = stats.paired_counts(xa, xb)
        out.append({"quartile": q + 1, "n_pairs": t.n, "diff": t.diff, "ci95": list(stats.newcombe_paired_interval(t)),
                    "only_a": t.only_a, "only_b": t.only_b})
    return out


def diagnostics_section(runs: Mapping[str, Mapping[EpisodeKey, EpisodeRecord]], keys: Sequence[EpisodeKey],
                        contrasts: Sequence[tuple[str, str]], *, errors_as_failures: bool = False,
                        n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """compare.json's ``diagnostics``: per run (None without diagnostics), and paired differences by quartile."""
    multi = len({k[0] for k in keys}) > 1
    per_run = {name: run_diagnostics([recs[k] for k in keys], multi_suite=multi, n_resamples=n_resamples, seed=seed)
               for name, recs in runs.items()}
    paired = []
    for a, b in contrasts:
        quartiles = prophet_quartiles([runs[a][k] for k in keys], multi_suite=multi)
        if quartiles is not None:
            paired.append({"a": a, "b": b, "quartiles": paired_by_quartile(
                runs[a], runs[b], keys, quartiles, errors_as_failures=errors_as_failures)})
    return {
        "runs": per_run,
        "paired_by_prophet_quartile": paired,
        "method": {
            "means": f"mean over episodes with the field; 95 % init-state cluster bootstrap within tasks, "
                     f"{n_resamples} resamples, seed {seed}",
            "quartiles": "within each task, by the run's own per-episode Prophet cosine (rank order, ties by "
                         "episode index); pooled rows add the tasks' quartiles; Q4 − Q1: Newcombe unpaired interval",
            "paired_by_prophet_quartile": "A − B on the shared episodes in each of A's quartiles, Newcombe paired "
                                          "interval; exploratory, no multiplicity correction",
        },
    }
