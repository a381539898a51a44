"""Paired comparison report of evaluation runs (SPEC §9): ``python -m vlaworld.eval.compare RUN_DIR...``.

Needs only each run's ``episodes.jsonl`` (``run.json`` when present adds labels, memory modes and
consistency checks), and only numpy: runs merged from shards or written by other tools compare too.
Runs must cover the same episodes (suite, task_id, episode) with the same seeds and init states;
otherwise it refuses, unless ``--intersect`` restricts every run to the shared episodes and the
report says so. Planned contrasts (E1−E0, E2−E0, E2 pred−zero, E2 pred−random, …) are inferred from
labels (``--labels``, ``run.json`` ``config.label``, or directory names such as ``E2-zero``) and from
``run.json`` (``config.memory``, ``checkpoint_hash``); failing that, every run against the first.
Each contrast gets the paired difference with Newcombe's interval, exact McNemar with Holm across
contrasts, and an init-state cluster bootstrap; per-task tests are exploratory, with BH-FDR.
Episodes with errors are left out of rates and pairs and counted beside them (``n_errors``), or
counted as failures with ``--errors-as-failures`` (as vla-eval does). Runs recorded with
``--diagnostics`` get a world-diagnostics section (``eval.diagnostics``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaworld.errors import VlaworldError, one_line_errors
from vlaworld.eval import stats
from vlaworld.eval.diagnostics import diagnostics_section
from vlaworld.eval.plots import forest_plot, prophet_plot, rates_plot
from vlaworld.eval.report import Contrast, Run, to_markdown, verdicts
from vlaworld.eval.results import EpisodeKey, EpisodeRecord, read_episodes, read_run_info
from vlaworld.eval.summary import rate_of, task_label, task_order

PLANNED = (("E1", "E0"), ("E2", "E0"), ("E2", "E2-zero"), ("E2", "E2-random"))
MEMORY_MODES = ("random_scaled", "signflip", "shuffle", "random", "zero", "pred", "none")  # SPEC §6, longest first


class CompareError(VlaworldError, ValueError):
    """The runs cannot be compared as asked; the message says what to change."""


def _role(label: str, memory: str | None) -> str | None:
    """``E2-zero``, ``e2 random scaled``, ``E2_world_pred_seed0`` -> E2-zero, E2-random_scaled, E2.

    The memory mode is a known mode word after the experiment number, else run.json's, else pred.
    """
    m = re.fullmatch(r"e(\d+)(\W.*|_.*)?", label.strip(), flags=re.IGNORECASE)
    if m is None:
        return None
    words = "_" + re.sub(r"[\W_]+", "_", (m.group(2) or "").lower()) + "_"
    mode = next((k for k in MEMORY_MODES if f"_{k}_" in words), memory or "pred")
    return f"E2-{mode}" if m.group(1) == "2" and mode != "pred" else f"E{m.group(1)}"


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Run]:
    if labels is not None and len(labels) != len(paths):
        raise CompareError(f"--labels got {len(labels)} labels for {len(paths)} runs; give one per run")
    runs = []
    for i, p in enumerate(paths):
        log = read_episodes(Path(p).resolve())
        run_dir = log.path.parent
        info = read_run_info(run_dir)
        config = dict(info.config) if info else {}
        label = labels[i] if labels else str(config.get("label") or run_dir.name)
        memory = config.get("memory")
        runs.append(Run(name=run_dir.name, label=label, role=_role(label, memory), path=run_dir,
                        records={r.key: r for r in log.records}, info=info, notes=tuple(log.notes())))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise CompareError(f"run directory names must be distinct (they key compare.json): {names}")
    _infer_roles_from_run_json(runs)
    return runs


def _infer_roles_from_run_json(runs: list[Run]) -> None:
    """Fill missing roles from memory modes: none → E0, pred → E2, same checkpoint → E2-mode, zero → E1."""
    if any(r.role for r in runs):
        return
    mode = {r.name: (r.info.config.get("memory") if r.info else None) for r in runs}
    by_mode = lambda m: [r for r in runs if mode[r.name] == m]  # noqa: E731
    roles: dict[str, str] = {}
    if len(by_mode("none")) == 1:
        roles[by_mode("none")[0].name] = "E0"
    if len(by_mode("pred")) == 1:
        e2 = by_mode("pred")[0]
        roles[e2.name] = "E2"
        same_ckpt = [r for r in runs if r.info and e2.info and e2.info.checkpoint_hash
                     and r.info.checkpoint_hash == e2.info.checkpoint_hash and r is not e2]
        for r in same_ckpt:
            if isinstance(mode[r.name], str):
                roles[r.name] = f"E2-{mode[r.name]}"
        other_zero = [r for r in by_mode("zero") if r.name not in roles]
        if len(other_zero) == 1:
            roles[other_zero[0].name] = "E1"
    if len(set(roles.values())) != len(roles):
        return  # ambiguous: leave it to labels
    for i, r in enumerate(runs):
        if r.name in roles:
            runs[i] = dataclasses.replace(r, role=roles[r.name])


def align_episodes(runs: list[Run], *, intersect: bool) -> tuple[list[EpisodeKey], list[str]]:
    """The episode identities every run covers; refuses differing sets unless ``intersect``."""
    sets = [set(r.records) for r in runs]
    shared = set.intersection(*sets)
    notes = []
    if any(s != shared for s in sets):
        extra = {r.name: len(s - shared) for r, s in zip(runs, sets) if s != shared}
        if not intersect:
            example = next(iter(sorted(set.union(*sets) - shared)))
            raise CompareError(
                f"the runs cover different episodes ({len(shared)} shared; not shared per run: {extra}; "
                f"e.g. {example}). Finish or resume the runs, or pass --intersect to compare only the "
                "shared episodes (the report will say so)."
            )
        if not shared:
            raise CompareError("the runs share no episode at all; check that they are the same suite and tasks")
        notes.append(f"Restricted to the {len(shared)} episodes all runs share (--intersect); "
                     f"dropped per run: {extra}.")
    for key in sorted(shared):
        ref = runs[0].records[key]
        for r in runs[1:]:
            rec = r.records[key]
            if (rec.seed, rec.init_state) != (ref.seed, ref.init_state):
                raise CompareError(
                    f"episode {key} has seed/init_state {(ref.seed, ref.init_state)} in {runs[0].name} but "
                    f"{(rec.seed, rec.init_state)} in {r.name}: the runs are not paired (different init "
                    "protocol?). Re-run them with the same protocol.")
    stacks = {json.dumps(dict(r.info.sim_stack), sort_keys=True) for r in runs if r.info and r.info.sim_stack}
    if len(stacks) > 1:
        notes.append(f"Warning: the runs used different simulator stacks ({sorted(stacks)}); "
                     "differences may come from the simulator, not the policy.")
    return sorted(shared), notes


def consistency_notes(runs: list[Run]) -> list[str]:
    """Warnings where labels and run.json disagree: an ablation on another checkpoint, or another memory mode."""
    notes = []
    e2 = next((r for r in runs if r.role == "E2"), None)
    for r in runs:
        if not (r.role and r.info):
            continue
        mode, want = r.info.config.get("memory"), {"E0": "none", "E1": "zero", "E2": "pred"}.get(r.role, r.role[3:])
        if mode is not None and mode != want:
            notes.append(f"Warning: {r.name} is labelled {r.role} but its run.json says memory={mode!r}.")
        if (r.role.startswith("E2-") and e2 and e2.info and e2.info.checkpoint_hash and r.info.checkpoint_hash
                and r.info.checkpoint_hash != e2.info.checkpoint_hash):
            notes.append(f"Warning: ablation {r.name} used another checkpoint than {e2.name}; "
                         "memory ablations are meant to reuse the E2 checkpoint.")
    return notes


def plan_contrasts(runs: list[Run], explicit: Sequence[str] = ()) -> tuple[list[tuple[Run, Run]], str]:
    """Pairs (A, B) to test as A − B, and a sentence saying where they came from."""
    if explicit:
        return [(_find(runs, s.split(":", 1)[0]), _find(runs, s.split(":", 1)[1])) for s in _checked(explicit)], \
            "given with --contrast"
    by_role = {r.role: r for r in runs if r.role}
    if len(by_role) != sum(1 for r in runs if r.role):
        roles = [f"{r.name}={r.role}" for r in runs if r.role]
        raise CompareError(f"two runs have the same role ({', '.join(roles)}); give distinct --labels, "
                           "or name the contrasts with --contrast A:B")
    planned = list(PLANNED) + sorted(("E2", k) for k in by_role if k.startswith("E2-") and ("E2", k) not in PLANNED)
    pairs = [(by_role[a], by_role[b]) for a, b in planned if a in by_role and b in by_role]
    if pairs:
        return pairs, "planned contrasts inferred from run labels / run.json memory modes"
    return [(r, runs[0]) for r in runs[1:]], f"no E0/E1/E2 roles found: every run against the first ({runs[0].label})"


def _checked(explicit: Sequence[str]) -> Sequence[str]:
    bad = [s for s in explicit if s.count(":") != 1]
    if bad:
        raise CompareError(f"--contrast takes A:B (run name, label, role or 1-based index), got {bad}")
    return explicit


def _find(runs: list[Run], ref: str) -> Run:
    if ref.isdigit() and 1 <= int(ref) <= len(runs):
        return runs[int(ref) - 1]
    hits = [r for r in runs if ref in (r.name, r.label, r.role)]
    if len(hits) != 1:
        known = ", ".join(f"{r.name} ({r.label})" for r in runs)
        raise CompareError(f"--contrast side {ref!r} matches {len(hits)} runs; use one of: {known}")
    return hits[0]


def _paired(a: Run, b: Run, keys: list[EpisodeKey], *,
            errors_as_failures: bool = False) -> tuple[np.ndarray, np.ndarray, list[EpisodeKey]]:
    """Aligned outcomes of A and B: episodes with an error in either run left out, or counted as failures."""
    ok = [k for k in keys if errors_as_failures or (a.records[k].error is None and b.records[k].error is None)]
    won = lambda r: r.error is None and bool(r.success)  # noqa: E731
    return (np.array([won(a.records[k]) for k in ok], dtype=bool),
            np.array([won(b.records[k]) for k in ok], dtype=bool), ok)


def run_contrasts(pairs: list[tuple[Run, Run]], keys: list[EpisodeKey], *, n_resamples: int = 2000, seed: int = 0,
                  errors_as_failures: bool = False) -> list[Contrast]:
    multi = len({k[0] for k in keys}) > 1
    raw = []
    for a, b in pairs:
        xa, xb, ok = _paired(a, b, keys, errors_as_failures=errors_as_failures)
        t = stats.paired_counts(xa, xb)
        tasks = [task_label(a.records[k], multi_suite=multi) for k in ok]
        clusters = [a.records[k].init_state for k in ok]
        boot = stats.cluster_bootstrap_diff(xa, xb, strata=tasks, clusters=clusters, n_resamples=n_resamples, seed=seed)
        per_task = {}
        for task in sorted(set(tasks), key=task_order):
            sel = np.array([x == task for x in tasks])
            tt = stats.paired_counts(xa[sel], xb[sel])
            tboot = stats.cluster_bootstrap_diff(xa[sel], xb[sel], strata=[task] * tt.n,
                                                 clusters=[c for c, s in zip(clusters, sel) if s],
                                                 n_resamples=n_resamples, seed=seed)
            per_task[task] = {"n_pairs": tt.n, "diff": tt.diff, "ci95": list(stats.newcombe_paired_interval(tt)),
                              "ci95_bootstrap": list(tboot), "only_a": tt.only_a, "only_b": tt.only_b,
                              "p_mcnemar": stats.mcnemar_exact(tt.only_a, tt.only_b)}
        n_errors = sum(a.records[k].error is not None or b.records[k].error is not None for k in keys)
        raw.append((a, b, t, boot, per_task, n_errors))
    p = [stats.mcnemar_exact(t.only_a, t.only_b) for _, _, t, *_ in raw]
    p_holm = stats.holm(p)
    cells = [cell for *_, per_task, _ in raw for cell in per_task.values()]
    for cell, q in zip(cells, stats.benjamini_hochberg([c["p_mcnemar"] for c in cells])):
        cell["q_bh"] = q
    return [Contrast(a=a, b=b, table=t, ci95=stats.newcombe_paired_interval(t), ci95_bootstrap=boot,
                     p_mcnemar=pi, p_holm=ph, mde=stats.paired_mde(t), per_task=per_task, n_errors=n_errors)
            for (a, b, t, boot, per_task, n_errors), pi, ph in zip(raw, p, p_holm)]


def run_tables(runs: list[Run], keys: list[EpisodeKey], *, errors_as_failures: bool = False) -> dict[str, dict[str, Any]]:
    """compare.json's ``runs`` part: overall and per-task rates on the compared episodes."""
    multi = len({k[0] for k in keys}) > 1
    out = {}
    for r in runs:
        recs = [r.records[k] for k in keys]
        tasks: dict[str, list[EpisodeRecord]] = {}
        for rec in recs:
            tasks.setdefault(task_label(rec, multi_suite=multi), []).append(rec)
        rate = lambda rs: rate_of(rs, errors_as_failures=errors_as_failures).to_json()  # noqa: E731
        out[r.name] = {"label": r.label, "role": r.role, "overall": rate(recs),
                       "per_task": {t: rate(tasks[t]) for t in sorted(tasks, key=task_order)}}
    return out


def to_json(runs: list[Run], tables: dict[str, dict[str, Any]], contrasts: list[Contrast],
            notes: list[str], source: str, n_resamples: int, seed: int, *,
            diagnostics: dict[str, Any] | None = None, errors_as_failures: bool = False) -> dict[str, Any]:
    """compare.json in SPEC §9's schema, plus labels, roles, table counts, per-task tests and diagnostics."""
    return {
        "runs": tables,
        "contrasts": [{
            "a": c.a.name, "b": c.b.name, "label_a": c.a.label, "label_b": c.b.label,
            "n_pairs": c.table.n, "diff": c.table.diff, "ci95": list(c.ci95),
            "p_mcnemar": c.p_mcnemar, "p_holm": c.p_holm, "ci95_bootstrap": list(c.ci95_bootstrap),
            "both": c.table.both, "only_a": c.table.only_a, "only_b": c.table.only_b, "neither": c.table.neither,
            "mde": c.mde, "per_task": c.per_task, "n_errors": c.n_errors,
        } for c in contrasts],
        "contrast_source": source,
        "notes": notes,
        "verdicts": verdicts(contrasts),
        "errors_as_failures": errors_as_failures,
        "diagnostics": diagnostics if diagnostics is not None else {"runs": {}, "paired_by_prophet_quartile": []},
        "method": {
            "ci95": "Newcombe (1998) method 10 paired interval",
            "ci95_bootstrap": f"cluster bootstrap over init states within tasks, {n_resamples} resamples, seed {seed}",
            "p_mcnemar": "exact two-sided McNemar (binomial on discordant pairs, no mid-p)",
            "p_holm": "Holm-Bonferroni across the contrasts",
            "per_task.q_bh": "Benjamini-Hochberg FDR across all per-task tests",
            "rates": ("Wilson 95 %; episodes with errors counted as failures (--errors-as-failures), also counted "
                      "under 'n_errors'" if errors_as_failures else
                      "Wilson 95 %; episodes with errors excluded and counted under 'n_errors'"),
            "per_task.ci95_bootstrap": "cluster bootstrap over the task's init states, same resamples and seed",
        },
    }



def compare(paths: Sequence[str | Path], *, out: str | Path | None = None, intersect: bool = False,
            contrasts: Sequence[str] = (), labels: Sequence[str] | None = None,
            n_resamples: int = 2000, seed: int = 0, errors_as_failures: bool = False) -> tuple[dict[str, Any], str]:
    """Build the report; with ``out`` write compare.json, compare.md and the plots there."""
    if len(paths) < 1:
        raise CompareError("give at least one run directory")
    runs = load_runs(paths, labels)
    keys, notes = align_episodes(runs, intersect=intersect)
    notes += consistency_notes(runs) + [n for r in runs for n in r.notes]
    if errors_as_failures:
        notes.append("Episodes with errors count as failures (--errors-as-failures), as tools such as vla-eval "
                     "count them; n_errors says how many.")
    pairs, source = plan_contrasts(runs, contrasts)
    results = run_contrasts(pairs, keys, n_resamples=n_resamples, seed=seed, errors_as_failures=errors_as_failures)
    diagnostics = diagnostics_section({r.name: r.records for r in runs}, keys, [(a.name, b.name) for a, b in pairs],
                                      errors_as_failures=errors_as_failures, n_resamples=n_resamples, seed=seed)
    doc = to_json(runs, run_tables(runs, keys, errors_as_failures=errors_as_failures), results, notes, source,
                  n_resamples, seed, diagnostics=diagnostics, errors_as_failures=errors_as_failures)
    text = to_markdown(runs, doc, results)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        names = {r.name: r.label for r in runs}
        drawn = [name for name, ok in (
            ("compare.png", rates_plot(doc, names, out / "compare.png")),
            ("compare_forest.png", forest_plot(doc, out / "compare_forest.png")),
            ("compare_prophet.png", prophet_plot(diagnostics, names, out / "compare_prophet.png")),
        ) if ok]
        if drawn:
            text += "\n## Plots\n\n" + "".join(f"![{name}]({name})\n\n" for name in drawn)
        (out / "compare.md").write_text(text, encoding="utf-8")
    return doc, text


@one_line_errors("vlaworld.eval.compare")
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vlaworld.eval.compare", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories holding episodes.jsonl")
    ap.add_argument("--out", help="write compare.json, compare.md and the plots (compare.png, compare_forest.png, "
                    "compare_prophet.png) here")
    ap.add_argument("--intersect", action="store_true", help="compare only the episodes all runs share")
    ap.add_argument("--contrast", nargs="+", action="extend", default=[], metavar="A:B",
                    help="test A − B (run name, label, role such as E2-zero, or 1-based index)")
    ap.add_argument("--labels", nargs="+", help="one display label per run, e.g. E0 E1 E2 E2-zero E2-random")
    ap.add_argument("--bootstrap", type=int, default=2000, help="cluster-bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--errors-as-failures", action="store_true",
                    help="count episodes with errors as failures (as vla-eval does) instead of leaving them out; "
                    "either way n_errors is reported beside the rates")
    args = ap.parse_args(argv)
    _, text = compare(args.runs, out=args.out, intersect=args.intersect, contrasts=args.contrast,
                      labels=args.labels, n_resamples=args.bootstrap, seed=args.seed,
                      errors_as_failures=args.errors_as_failures)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
