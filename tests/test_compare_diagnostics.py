"""The comparison report's world-diagnostics section, forest plot and error accounting, on episodes.jsonl
files written directly with known numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlaworld.eval import compare, results, stats, summary
from vlaworld.eval.results import EpisodeRecord, EpisodeWriter, RunInfo

PNG = b"\x89PNG\r\n\x1a\n"
K = 3
# One task, 8 episodes; init state = episode % 4. E2's Prophet cosine rises with the episode index, so its
# within-task quartiles are episodes {0,1}, {2,3}, {4,5}, {6,7}.
E2_WINS = [0, 0, 1, 0, 1, 1, 1, 1]
E0_WINS = [0, 1, 0, 0, 1, 0, 1, 1]
ZERO_WINS = [1, 0, 0, 0, 1, 1, 0, 1]
COSINE = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def diagnostics(ep: int, *, prophet: bool, world: bool = True) -> dict:
    reached = min(K, 1 + ep % 4)  # episodes reach 1..3 horizons
    return {
        "gate": 0.0153, "world_path": world, "chunks": 5, "attn_chunks": 5 if world else 0,
        "attn_entropy": 0.9 * np.log(K), "attn_entropy_ratio": 0.8 + 0.01 * ep if world else None,
        "attn_per_k": [0.5, 0.3, 0.2] if world else None, "memory_norm": 10.0 + ep if world else None,
        "prophet_cosine": COSINE[ep] if prophet else None,
        "prophet_cosine_per_k": [COSINE[ep] + 0.1 * k if k < reached else None for k in range(K)] if prophet else None,
        "prophet_pairs_per_k": [1 if k < reached else 0 for k in range(K)] if prophet else None,
    }


def make_run(run_dir, wins, *, memory, ckpt, diag=None, errors=()):
    with EpisodeWriter(run_dir) as w:
        for ep, ok in enumerate(wins):
            extra = {} if diag is None or ep in errors else {"diagnostics": diag(ep)}
            w.append(EpisodeRecord(suite="libero_spatial", task_id=0, task="task 0", episode=ep, seed=1000 + ep,
                                   init_state=ep % 4, success=bool(ok) and ep not in errors, steps=50, wall_s=1.0,
                                   error="worker died twice" if ep in errors else None, extra=extra))
    results.write_run_info(run_dir, RunInfo(config={"memory": memory}, checkpoint_hash=ckpt))
    return run_dir


@pytest.fixture
def runs(tmp_path):
    return [make_run(tmp_path / "E0", E0_WINS, memory="none", ckpt="h0"),  # no diagnostics recorded
            make_run(tmp_path / "E2", E2_WINS, memory="pred", ckpt="h2", diag=lambda e: diagnostics(e, prophet=True)),
            make_run(tmp_path / "E2-zero", ZERO_WINS, memory="zero", ckpt="h2",
                     diag=lambda e: diagnostics(e, prophet=False))]


def test_diagnostics_section_numbers(runs, tmp_path):
    doc, text = compare.compare(runs, out=tmp_path / "out", n_resamples=200)
    d = doc["diagnostics"]
    assert d["runs"]["E0"] is None
    e2, zero = d["runs"]["E2"], d["runs"]["E2-zero"]
    assert e2["episodes"] == 8 and e2["world_path_episodes"] == 8 and e2["episodes_without"] == 0
    cos = e2["overall"]["prophet_cosine"]
    assert cos["n"] == 8 and cos["mean"] == pytest.approx(np.mean(COSINE))
    assert cos["ci95"][0] <= cos["mean"] <= cos["ci95"][1]
    assert e2["per_task"]["0"]["attn_entropy_ratio"]["mean"] == pytest.approx(0.8 + 0.01 * 3.5)
    assert e2["overall"]["memory_norm"]["mean"] == pytest.approx(13.5)
    assert e2["overall"]["gate"]["mean"] == pytest.approx(0.0153) and e2["overall"]["gate"]["ci95"] == pytest.approx(
        [0.0153, 0.0153])
    assert [m["mean"] for m in e2["attn_per_k"]] == pytest.approx([0.5, 0.3, 0.2])
    # horizon k is averaged over the episodes that reached it: k=1 all 8, k=2 six, k=3 four
    per_k = e2["prophet_cosine_per_k"]
    assert [m["n"] for m in per_k] == [8, 6, 4]
    reach = [[e for e in range(8) if 1 + e % 4 > k] for k in range(K)]
    assert [m["mean"] for m in per_k] == pytest.approx([np.mean([COSINE[e] + 0.1 * k for e in reach[k]]) for k in range(K)])
    assert zero["overall"]["prophet_cosine"] == {"n": 0, "mean": None, "ci95": None} and zero["prophet_cosine_per_k"] == []
    assert zero["success_by_prophet_quartile"] is None

    # success by quartile: two episodes each, lowest cosine first
    q = e2["success_by_prophet_quartile"]
    assert [(c["successes"], c["n"]) for c in q["per_task"]["0"]] == [(0, 2), (1, 2), (2, 2), (2, 2)]
    assert q["pooled"] == q["per_task"]["0"]
    assert q["per_task"]["0"][0]["prophet_cosine_range"] == pytest.approx([0.1, 0.2])
    assert q["q4_minus_q1"]["diff"] == 1.0
    assert q["q4_minus_q1"]["ci95"] == pytest.approx(list(stats.newcombe_unpaired_interval(2, 2, 0, 2)))

    # paired differences by E2's quartile, for both contrasts whose first run has Prophet cosines
    paired = {(p["a"], p["b"]): p["quartiles"] for p in d["paired_by_prophet_quartile"]}
    assert set(paired) == {("E2", "E0"), ("E2", "E2-zero")}
    want = [np.mean(np.subtract(E2_WINS, E0_WINS)[2 * q : 2 * q + 2]) for q in range(4)]
    assert [c["diff"] for c in paired[("E2", "E0")]] == pytest.approx(want)
    assert [c["n_pairs"] for c in paired[("E2", "E0")]] == [2, 2, 2, 2]

    # the words and the pictures
    assert "## World diagnostics (exploratory)" in text and "| E0 | none recorded |" in text
    assert "### Prophet cosine per horizon k" in text and "### Success by Prophet-cosine quartile" in text
    assert "not evidence that better predictions cause success" in text
    assert "### Paired differences by the Prophet-cosine quartile of the first run" in text
    assert "| E2 − E0 | Q4 | 2 |" in text
    on_disk = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    pytest.importorskip("matplotlib")
    for name in ("compare.png", "compare_forest.png", "compare_prophet.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG
        assert f"![{name}]({name})" in (tmp_path / "out" / "compare.md").read_text()


def test_forest_plot_has_per_task_bootstrap_intervals(runs, tmp_path):
    doc, _ = compare.compare(runs, n_resamples=300)
    for c in doc["contrasts"]:
        cell = c["per_task"]["0"]
        assert cell["ci95_bootstrap"][0] <= cell["diff"] <= cell["ci95_bootstrap"][1]
        # one task: the per-task bootstrap resamples the same clusters as the overall one
        assert cell["ci95_bootstrap"] == pytest.approx(c["ci95_bootstrap"])


def test_runs_without_diagnostics_still_compare(tmp_path):
    a = make_run(tmp_path / "E0", E0_WINS, memory="none", ckpt="h0")
    b = make_run(tmp_path / "E2", E2_WINS, memory="pred", ckpt="h2")
    doc, text = compare.compare([a, b], out=tmp_path / "out", n_resamples=100)
    assert doc["diagnostics"]["runs"] == {"E0": None, "E2": None} and doc["diagnostics"]["paired_by_prophet_quartile"] == []
    assert "World diagnostics" not in text and "diagnostics." not in text
    assert doc["contrasts"][0]["n_pairs"] == 8
    pytest.importorskip("matplotlib")
    assert (tmp_path / "out" / "compare_forest.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "out" / "compare_prophet.png").exists()


def test_errors_are_shown_beside_the_rates_and_can_count_as_failures(tmp_path):
    a = make_run(tmp_path / "E0", E0_WINS, memory="none", ckpt="h0")
    b = make_run(tmp_path / "E2", E2_WINS, memory="pred", ckpt="h2", errors=(2, 7),
                 diag=lambda e: diagnostics(e, prophet=True))
    doc, text = compare.compare([a, b], n_resamples=100)
    e2 = doc["runs"]["E2"]["overall"]
    assert (e2["n"], e2["successes"], e2["n_errors"], e2["errors"]) == (6, 3, 2, 2)  # E2 wins 2 and 7 were errors
    assert doc["runs"]["E0"]["overall"]["n_errors"] == 0 and doc["runs"]["E2"]["per_task"]["0"]["n_errors"] == 2
    c = doc["contrasts"][0]
    assert (c["n_pairs"], c["n_errors"]) == (6, 2) and doc["errors_as_failures"] is False
    assert "| **all** | 4/8 · 0 err 50.0" in text and "3/6 · 2 err 50.0" in text
    assert doc["diagnostics"]["runs"]["E2"]["episodes"] == 6  # error episodes carry no diagnostics

    doc, text = compare.compare([a, b], n_resamples=100, errors_as_failures=True)
    e2 = doc["runs"]["E2"]["overall"]
    assert (e2["n"], e2["successes"], e2["n_errors"]) == (8, 3, 2)
    c = doc["contrasts"][0]
    assert (c["n_pairs"], c["n_errors"], c["diff"]) == (8, 2, -0.125) and doc["errors_as_failures"] is True
    assert "counted as failures (--errors-as-failures)" in text
    assert any("--errors-as-failures" in n for n in doc["notes"])
    assert compare.main([str(a), str(b), "--errors-as-failures", "--bootstrap", "50"]) == 0


def test_summary_reports_n_errors_and_the_failure_convention(tmp_path):
    run = make_run(tmp_path / "E2", E2_WINS, memory="pred", ckpt="h2", errors=(2,))
    records = results.read_episodes(run).records
    s = summary.summarize(records)
    assert (s["overall"]["n"], s["overall"]["n_errors"], s["per_task"]["0"]["n_errors"]) == (7, 1, 1)
    as_failures = summary.rate_of(records, errors_as_failures=True)
    assert (as_failures.n, as_failures.successes, as_failures.errors) == (8, 4, 1)
