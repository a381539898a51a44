"""Plan files: validation, the evaluator command lines they make, and a resumable run + comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.standins import StandinFactory, run_standin
from vlaworld.eval.plan import PlanError, main, parse_plan, read_plan, run_plan

PLAN = """
out = "results"
[vars]
root = "/ckpts"

[defaults]
suite = "libero_spatial"
tasks = "0-1"
episodes = 4
n-envs = 2

[[run]]
name = "E0"
ckpt = "{root}/e0"
memory = "none"

[[run]]
name = "E2-zero"
ckpt = "{root}/e2"
memory = "zero"
compile = true
overrides = { episodes = 4, seed = 3 }

[compare]
contrasts = ["E2-zero:E0"]
bootstrap = 200
"""


def test_plan_to_command_lines(tmp_path: Path) -> None:
    (tmp_path / "plan.toml").write_text(PLAN)
    plan = read_plan(tmp_path / "plan.toml")
    assert plan.out == tmp_path / "results"
    e0, e2 = (r.argv(plan.out) for r in plan.runs)
    assert e0 == ["--out", str(tmp_path / "results" / "E0"), "--label", "E0", "--suite", "libero_spatial",
                  "--tasks", "0-1", "--episodes", "4", "--n-envs", "2", "--ckpt", "/ckpts/e0", "--memory", "none"]
    assert "--compile" in e2 and e2[e2.index("--seed") + 1] == "3"
    # JSON with the same structure is accepted.
    doc = {"out": "/abs", "run": [{"name": "a", "policy": "scripted"}]}
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    assert read_plan(tmp_path / "plan.json").runs[0].argv(Path("/abs"))[-2:] == ["--policy", "scripted"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"out": "x", "run": [{"name": "a", "episods": 3}]}, "Did you mean 'episodes'"),
        ({"out": "x", "run": [{"name": "a", "out": "y"}]}, "set by the plan"),
        ({"out": "x", "run": [{"name": "a"}, {"name": "a"}]}, "duplicate run name"),
        ({"out": "x", "run": [{"name": "compare"}]}, "holds the report"),
        ({"out": "x", "run": [{"name": "a/b"}]}, "folder-safe"),
        ({"run": [{"name": "a"}]}, "needs `out`"),
        ({"out": "x", "run": [], "extra": 1}, "unknown top-level"),
        ({"out": "x", "run": [{"name": "a"}], "compare": {"alpha": 1}}, r"\[compare\]"),
    ],
)
def test_plan_errors_say_what_to_fix(doc: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(doc, Path("/tmp"))


def test_plan_runs_in_sequence_resumes_and_compares(tmp_path: Path) -> None:
    """Each configuration runs into OUT/<name> (here on stand-ins); a re-run resumes; compare at the end."""
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        calls.append(argv)
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
        run_standin(argv[argv.index("--out") + 1], n_envs=2, tasks=(0, 1), episodes=4, seed=seed)
        return 0

    (tmp_path / "plan.toml").write_text(PLAN)
    for name in ("e0", "e2"):
        (tmp_path / "ckpts" / name).mkdir(parents=True)
    assert run_plan(read_plan(tmp_path / "plan.toml"), runner=runner) == 2 and not calls  # /ckpts/e0: checked first
    plan = read_plan(tmp_path / "plan.toml", variables={"root": str(tmp_path / "ckpts")})
    assert run_plan(plan, runner=runner) == 0
    report = json.loads((tmp_path / "results" / "compare" / "compare.json").read_text())
    assert set(report["runs"]) == {"E0", "E2-zero"}
    assert report["contrasts"][0]["n_pairs"] == 8
    assert run_plan(plan, runner=runner) == 0  # resumed: every run already complete
    assert len(calls) == 4
    assert run_plan(plan, dry_run=True, runner=runner) == 0 and len(calls) == 4


MATRIX = Path(__file__).resolve().parents[1] / "plans" / "libero_spatial_matrix.toml"
MATRIX_RUNS = ["E0", "E1", "E2", "E2-zero", "E2-random", "E2-none", "E2-shuffle"]
DEMO_SET = ["--set", "e0_ckpt=demo", "--set", "e1_ckpt=demo", "--set", "e2_ckpt=demo"]
TINY = ["--override", "tasks=0", "--override", "episodes=2", "--override", "n_envs=2", "--override", "device=cpu"]


def test_the_team_matrix_validates_and_lists_its_placeholders(capsys) -> None:
    plan = read_plan(MATRIX)
    assert [r.name for r in plan.runs] == MATRIX_RUNS
    assert {r.name: r.flags["memory"] for r in plan.runs} == {
        "E0": "none", "E1": "zero", "E2": "pred", "E2-zero": "zero", "E2-random": "random", "E2-none": "none",
        "E2-shuffle": "shuffle"}
    assert all(r.flags["diagnostics"] is True and r.flags["episodes"] == 200 for r in plan.runs)
    assert {r.flags["ckpt"] for r in plan.runs if r.name.startswith("E2")} == {plan.runs[2].flags["ckpt"]}
    assert plan.problems() == [] and len(plan.placeholders) == 3
    assert main([str(MATRIX), "--check"]) == 0
    out = capsys.readouterr().out
    assert "valid; fill the placeholders to run it" in out and out.count("to fill in before running") == 3
    assert main([str(MATRIX)]) == 2  # refused before anything runs
    assert "placeholder left" in capsys.readouterr().err
    assert main([str(MATRIX), "--check", *DEMO_SET]) == 0 and "runs into" in capsys.readouterr().out


def test_plan_check_catches_what_would_fail_later(tmp_path: Path, capsys) -> None:
    assert main([str(MATRIX), "--check", *DEMO_SET, "--set", "e0_ckpt=/no/such/ckpt", "--override", "n_envs=1"]) == 2
    err = capsys.readouterr().err
    assert "--ckpt /no/such/ckpt does not exist" in err and "memory 'shuffle'" in err
    assert main([str(MATRIX), "--check", *DEMO_SET, "--override", "memory=zeros"]) == 2
    assert "invalid choice: 'zeros'" in capsys.readouterr().err
    assert main([str(MATRIX), "--check", "--set", "e3_ckpt=x"]) == 2
    assert "no such variable" in capsys.readouterr().err
    (tmp_path / "plan.toml").write_text(PLAN.replace('"E2-zero:E0"', '"E2:E0"'))
    assert main([str(tmp_path / "plan.toml"), "--check", "--set", f"root={tmp_path}"]) == 2
    assert "'E2' is not a run of this plan" in capsys.readouterr().err


def _check_matrix_results(out: Path) -> None:
    report = json.loads((out / "compare" / "compare.json").read_text())
    assert list(report["runs"]) == MATRIX_RUNS
    assert [(c["a"], c["b"]) for c in report["contrasts"]] == [
        ("E1", "E0"), ("E2", "E0"), ("E2", "E2-zero"), ("E2", "E2-random"), ("E2", "E2-none"), ("E2", "E2-shuffle")]
    diag = report["diagnostics"]["runs"]
    assert all(diag[name]["episodes"] == 2 for name in MATRIX_RUNS)
    assert diag["E2"]["overall"]["prophet_cosine"]["n"] == 2 and diag["E2-zero"]["overall"]["prophet_cosine"]["n"] == 0
    assert diag["E2-none"]["world_path_episodes"] == 0 and diag["E2-shuffle"]["world_path_episodes"] == 2
    text = (out / "compare" / "compare.md").read_text()
    assert "## World diagnostics (exploratory)" in text and "### Prophet cosine per horizon k" in text
    for name in MATRIX_RUNS:
        run = json.loads((out / name / "run.json").read_text())["config"]
        assert run["diagnostics"] is True and run["episodes"] == 2


def test_the_team_matrix_runs_end_to_end_on_the_demo_policy(tmp_path: Path, monkeypatch) -> None:
    """The shipped plan through the real evaluator (demo checkpoint, stand-in simulator), then the report."""
    import vlaworld.envs

    monkeypatch.setattr(vlaworld.envs, "make", StandinFactory(textured=True))
    out = tmp_path / "matrix"
    assert main([str(MATRIX), *DEMO_SET, *TINY, "--override", "max_steps=6", "--out", str(out)]) == 0
    _check_matrix_results(out)


@pytest.mark.slow
@pytest.mark.libero
def test_the_team_matrix_runs_end_to_end_on_libero(tmp_path: Path) -> None:
    """The same on the LIBERO simulator itself (minutes: seven runs with their worker set-ups)."""
    out = tmp_path / "matrix"
    assert main([str(MATRIX), *DEMO_SET, *TINY, "--override", "max_steps=12", "--out", str(out)]) == 0
    _check_matrix_results(out)
