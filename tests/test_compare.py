"""The comparison report on synthetic runs with known outcomes: schema, numbers, refusals, verdicts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlaworld.eval import compare, results, stats
from vlaworld.eval.compare import CompareError
from vlaworld.eval.results import EpisodeRecord, EpisodeWriter, RunInfo

ROOT = Path(__file__).resolve().parents[1]


def make_run(run_dir, outcomes, *, memory=None, ckpt=None, errors=(), skip=(), seed_offset=0, label=None):
    """``outcomes[task]`` is a list of 0/1 per episode; init state = episode % 2 (two clusters per task)."""
    with EpisodeWriter(run_dir) as w:
        for task, row in outcomes.items():
            for ep, ok in enumerate(row):
                if (task, ep) in skip:
                    continue
                w.append(EpisodeRecord(
                    suite="libero_spatial", task_id=task, task=f"task {task}", episode=ep,
                    seed=1000 + ep + seed_offset, init_state=ep % 2, success=bool(ok), steps=50, wall_s=1.0,
                    error="worker died twice" if (task, ep) in errors else None))
    if memory is not None or label is not None:
        config = {"memory": memory} if label is None else {"memory": memory, "label": label}
        results.write_run_info(run_dir, RunInfo(config=config, checkpoint_hash=ckpt))
    return run_dir


E0 = {0: [1, 1, 0, 0], 1: [1, 0, 0, 0]}
E2 = {0: [1, 1, 1, 1], 1: [1, 1, 1, 0]}


def test_two_runs_hand_computed(tmp_path):
    a = make_run(tmp_path / "base", E0, memory="none", ckpt="h0")
    b = make_run(tmp_path / "world", E2, memory="pred", ckpt="h2")
    doc, text = compare.compare([a, b], out=tmp_path / "out", n_resamples=200)
    on_disk = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))

    # schema of SPEC §9
    assert set(on_disk) >= {"runs", "contrasts"}
    for name in ("base", "world"):
        run = on_disk["runs"][name]
        assert set(run["overall"]) >= {"n", "successes", "rate", "ci95"}
        assert set(run["per_task"]) == {"0", "1"}
        for cell in run["per_task"].values():
            assert set(cell) >= {"n", "successes", "rate", "ci95"} and len(cell["ci95"]) == 2
    (c,) = on_disk["contrasts"]
    assert set(c) >= {"a", "b", "n_pairs", "diff", "ci95", "p_mcnemar", "p_holm"}

    # numbers by hand: base 3/8 (2/4, 1/4); world 7/8 (4/4, 3/4)
    base, world = on_disk["runs"]["base"], on_disk["runs"]["world"]
    assert (base["overall"]["n"], base["overall"]["successes"], base["overall"]["rate"]) == (8, 3, 0.375)
    assert base["overall"]["ci95"] == pytest.approx(list(stats.wilson_interval(3, 8)))
    assert (base["per_task"]["1"]["successes"], world["per_task"]["0"]["rate"]) == (1, 1.0)
    assert world["overall"]["successes"] == 7 and world["per_task"]["1"]["ci95"] == pytest.approx(
        list(stats.wilson_interval(3, 4)))
    # roles from run.json: memory none -> E0, pred -> E2; contrast E2 - E0
    assert (c["a"], c["b"], c["n_pairs"]) == ("world", "base", 8)
    assert c["diff"] == 0.5  # 4 episodes won only by E2, none only by E0
    assert (c["only_a"], c["only_b"], c["both"], c["neither"]) == (4, 0, 3, 1)
    assert c["p_mcnemar"] == pytest.approx(0.125) and c["p_holm"] == pytest.approx(0.125)  # 2 * 2**-4
    assert c["ci95"] == pytest.approx(list(stats.newcombe_paired_interval(
        stats.Paired(both=3, only_a=4, only_b=0, neither=1))))
    # every init-state cluster holds one E2-only win in two episodes: every resample gives +0.5
    assert c["ci95_bootstrap"] == pytest.approx([0.5, 0.5])
    assert c["per_task"]["0"]["diff"] == 0.5 and c["per_task"]["0"]["p_mcnemar"] == pytest.approx(0.5)

    assert "Does E2 beat E0?" in text and "No significant difference detected between E2 and E0" not in text
    assert "No significant difference detected between world and base" in text  # p = 0.125
    assert "(MDE ≈ " in text and "Benjamini-Hochberg" in text
    assert (tmp_path / "out" / "compare.md").read_text() == text
    png = tmp_path / "out" / "compare.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed: the plot is optional")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mismatched_episode_sets_are_refused_unless_intersect(tmp_path, capsys):
    a = make_run(tmp_path / "E0", E0)
    b = make_run(tmp_path / "E2", E2, skip={(1, 3)})
    with pytest.raises(CompareError, match=r"cover different episodes.*--intersect"):
        compare.compare([a, b])
    assert compare.main([str(a), str(b)]) == 2
    assert "--intersect" in capsys.readouterr().err
    doc, text = compare.compare([a, b], intersect=True, out=tmp_path / "out")
    assert doc["runs"]["E0"]["overall"]["n"] == 7 and doc["runs"]["E0"]["overall"]["successes"] == 3
    assert doc["contrasts"][0]["n_pairs"] == 7
    assert any("Restricted to the 7 episodes all runs share (--intersect)" in n for n in doc["notes"])
    assert "Restricted to the 7 episodes" in (tmp_path / "out" / "compare.md").read_text()


def test_unpaired_seeds_are_refused(tmp_path):
    a = make_run(tmp_path / "E0", E0)
    b = make_run(tmp_path / "E2", E2, seed_offset=1)
    with pytest.raises(CompareError, match="not paired"):
        compare.compare([a, b])


def test_error_episodes_are_excluded_not_failures(tmp_path):
    a = make_run(tmp_path / "E0", E0)
    b = make_run(tmp_path / "E2", E2, errors={(1, 2)})
    doc, _ = compare.compare([a, b])
    e2 = doc["runs"]["E2"]["overall"]
    assert (e2["n"], e2["successes"], e2["errors"]) == (7, 6, 1)
    c = doc["contrasts"][0]
    assert (c["a"], c["b"], c["n_pairs"], c["only_a"]) == ("E2", "E0", 7, 3)


def _random_runs(tmp_path, names, effects, tasks=10, episodes=40):
    rng = np.random.default_rng(0)
    base = rng.random((tasks, episodes))
    out = {}
    for name, effect in zip(names, effects):
        rows = {t: list((base[t] + rng.normal(0, 0.15, episodes) < 0.7 + effect).astype(int)) for t in range(tasks)}
        out[name] = make_run(tmp_path / name, rows)
    return out


def test_planned_contrasts_from_directory_names_with_holm(tmp_path):
    sm_tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    sm_multi = pytest.importorskip("statsmodels.stats.multitest")
    names = ["E0", "E1", "E2", "E2-zero", "E2-random"]
    runs = _random_runs(tmp_path, names, [0.0, 0.0, 0.15, 0.0, -0.2])
    doc, text = compare.compare(list(runs.values()), n_resamples=300)
    got = [(c["a"], c["b"]) for c in doc["contrasts"]]
    assert got == [("E1", "E0"), ("E2", "E0"), ("E2", "E2-zero"), ("E2", "E2-random")]
    episodes = {n: [r.success for r in results.read_episodes(p).records] for n, p in runs.items()}
    p = []
    for c in doc["contrasts"]:
        xa, xb = np.array(episodes[c["a"]]), np.array(episodes[c["b"]])
        assert c["diff"] == pytest.approx(xa.mean() - xb.mean())
        table = [[np.sum(xa & xb), np.sum(xa & ~xb)], [np.sum(~xa & xb), np.sum(~xa & ~xb)]]
        ref = sm_tables.mcnemar(table, exact=True).pvalue
        assert c["p_mcnemar"] == pytest.approx(ref, rel=1e-9)
        p.append(ref)
    assert [c["p_holm"] for c in doc["contrasts"]] == pytest.approx(list(sm_multi.multipletests(p, method="holm")[1]))
    q = [cell["q_bh"] for c in doc["contrasts"] for cell in c["per_task"].values()]
    praw = [cell["p_mcnemar"] for c in doc["contrasts"] for cell in c["per_task"].values()]
    assert len(q) == 40 and q == pytest.approx(list(sm_multi.multipletests(praw, method="fdr_bh")[1]))
    for c in doc["contrasts"]:
        assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
        assert c["ci95_bootstrap"][0] <= c["ci95_bootstrap"][1]
    answers = doc["verdicts"]
    assert answers[0].startswith("Does E2 beat E0? E2 beats E0:")
    assert "Capacity control (E1 should match E0): No significant difference detected between E1 and E0" in answers[0]
    assert answers[1].startswith("Does memory content matter (pred vs zero vs random)? Yes")
    assert answers[2].startswith("Which tasks gain or lose?")
    assert "## Answers" in text and "| **all** |" in text


def test_no_difference_wording(tmp_path):
    a = make_run(tmp_path / "a", E0, label="E0")
    b = make_run(tmp_path / "b", E0, label="E2")
    doc, _ = compare.compare([a, b])
    v = doc["verdicts"][0]
    assert "No significant difference detected between E2 and E0" in v and "not ruled out" in v
    assert "equal" not in v
    assert doc["contrasts"][0]["p_mcnemar"] == 1.0 and doc["contrasts"][0]["diff"] == 0.0
    assert "Not answered" in doc["verdicts"][1]


def test_roles_from_run_json_same_checkpoint_ablations(tmp_path):
    runs = [make_run(tmp_path / "r1", E0, memory="none", ckpt="A"),
            make_run(tmp_path / "r2", E2, memory="pred", ckpt="B"),
            make_run(tmp_path / "r3", E0, memory="zero", ckpt="B"),
            make_run(tmp_path / "r4", E2, memory="zero", ckpt="C"),
            make_run(tmp_path / "r5", E0, memory="random", ckpt="B")]
    doc, _ = compare.compare(runs)
    assert {n: r["role"] for n, r in doc["runs"].items()} == {
        "r1": "E0", "r2": "E2", "r3": "E2-zero", "r4": "E1", "r5": "E2-random"}
    assert [(c["a"], c["b"]) for c in doc["contrasts"]] == [("r4", "r1"), ("r2", "r1"), ("r2", "r3"), ("r2", "r5")]


def test_fallback_explicit_contrasts_and_labels(tmp_path):
    runs = [make_run(tmp_path / n, rows) for n, rows in (("alpha", E0), ("beta", E2), ("gamma", E0))]
    doc, _ = compare.compare(runs)
    assert [(c["a"], c["b"]) for c in doc["contrasts"]] == [("beta", "alpha"), ("gamma", "alpha")]
    assert "against the first" in doc["contrast_source"]
    doc, _ = compare.compare(runs, contrasts=["gamma:beta", "1:3"])
    assert [(c["a"], c["b"]) for c in doc["contrasts"]] == [("gamma", "beta"), ("alpha", "gamma")]
    assert doc["contrasts"][0]["diff"] == -0.5
    doc, _ = compare.compare(runs, labels=["E0", "E2", "E2-zero"])
    assert [(c["label_a"], c["label_b"]) for c in doc["contrasts"]] == [("E2", "E0"), ("E2", "E2-zero")]
    assert list(doc["runs"]) == ["alpha", "beta", "gamma"]  # NAME stays the directory name
    with pytest.raises(CompareError, match="matches 0 runs"):
        compare.compare(runs, contrasts=["delta:alpha"])
    with pytest.raises(CompareError, match="takes A:B"):
        compare.compare(runs, contrasts=["alpha-beta"])
    with pytest.raises(CompareError, match="one per run"):
        compare.compare(runs, labels=["E0"])


def test_cli_writes_files(tmp_path):
    a = make_run(tmp_path / "E0", E0)
    b = make_run(tmp_path / "E2", E2)
    out = tmp_path / "report"
    assert compare.main([str(a), str(b), "--out", str(out), "--bootstrap", "100", "--seed", "3"]) == 0
    assert {p.name for p in out.iterdir()} >= {"compare.json", "compare.md"}
    assert "seed 3" in json.loads((out / "compare.json").read_text())["method"]["ci95_bootstrap"]


def test_compare_imports_without_torch():
    code = ("import sys; import vlaworld.eval.compare, vlaworld.eval.results, vlaworld.eval.stats; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('vlaworld.models') "
            "or m in ('scipy', 'statsmodels', 'matplotlib')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_eval_modules_import_only_numpy_and_stdlib():
    """Static half of the check above, independent of what ``vlaworld/__init__.py`` imports."""
    import ast

    allowed_third_party = {"numpy", "matplotlib"}  # matplotlib lazily, inside plot()
    for name in ("compare", "results", "stats", "summary", "report", "report_diagnostics", "diagnostics", "plots"):
        tree = ast.parse((ROOT / "vlaworld" / "eval" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for mod in mods:
                top = mod.split(".")[0]
                assert top in sys.stdlib_module_names | allowed_third_party | {"vlaworld"}, (name, mod)
                assert top != "vlaworld" or mod in ("vlaworld.eval", "vlaworld.errors") or mod.startswith(
                    "vlaworld.eval."), (name, mod)  # vlaworld.errors: an import-free leaf


def test_mixed_suites_key_tasks_by_suite(tmp_path):
    def run(name, flip):
        with EpisodeWriter(tmp_path / name) as w:
            for suite in ("libero_goal", "libero_spatial"):
                for task in (0, 10):
                    for ep in range(4):
                        ok = (ep < 2) != (flip and ep == 3)
                        w.append(EpisodeRecord(suite=suite, task_id=task, task="t", episode=ep, seed=1000 + ep,
                                               init_state=ep, success=ok, steps=1, wall_s=0.1))
        return tmp_path / name
    doc, text = compare.compare([run("x", False), run("y", True)])
    assert list(doc["runs"]["x"]["per_task"]) == [
        "libero_goal:0", "libero_goal:10", "libero_spatial:0", "libero_spatial:10"]
    c = doc["contrasts"][0]
    assert (c["a"], c["b"], c["n_pairs"], c["diff"]) == ("y", "x", 16, 0.25)
    assert "| libero_spatial:10 |" in text


def test_torn_line_of_a_killed_run_is_reported(tmp_path):
    a = make_run(tmp_path / "E0", E0)
    b = make_run(tmp_path / "E2", E2)
    with open(b / "episodes.jsonl", "a") as f:
        f.write('{"suite": "libero_spatial", "task_id": 1, "epis')
    with pytest.warns(UserWarning, match="torn"):
        doc, text = compare.compare([a, b])
    assert doc["contrasts"][0]["n_pairs"] == 8
    assert any("torn last line" in n for n in doc["notes"]) and "torn last line" in text


@pytest.mark.parametrize("label,memory,role", [
    ("E0", None, "E0"), ("E0_smolvla_baseline_seed0", None, "E0"), ("E1_world_zero_seed0", None, "E1"),
    ("E2", None, "E2"), ("E2-pred", None, "E2"), ("E2_world_pred_seed0", None, "E2"), ("E2-zero", None, "E2-zero"),
    ("e2 random scaled", None, "E2-random_scaled"), ("E2", "shuffle", "E2-shuffle"), ("baseline", "none", None),
])
def test_roles_from_labels(label, memory, role):
    assert compare._role(label, memory) == role


def test_duplicate_roles_are_refused(tmp_path):
    runs = [make_run(tmp_path / n, E0) for n in ("a", "b")]
    with pytest.raises(CompareError, match="same role"):
        compare.compare(runs, labels=["E2", "E2-pred"])
    doc, _ = compare.compare(runs, labels=["E2", "E2-pred"], contrasts=["a:b"])
    assert doc["contrasts"][0]["a"] == "a"
