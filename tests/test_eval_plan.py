"""Plan files: validation, the evaluator command lines they make, and a resumable run + comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.standins import run_standin
from vlaworld.eval.plan import PlanError, parse_plan, read_plan, run_plan

PLAN = """
out = "results"
[defaults]
suite = "libero_spatial"
tasks = "0-1"
episodes = 4
n-envs = 2

[[run]]
name = "E0"
ckpt = "/ckpts/e0"
memory = "none"

[[run]]
name = "E2-zero"
ckpt = "/ckpts/e2"
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
    plan = read_plan(tmp_path / "plan.toml")
    assert run_plan(plan, runner=runner) == 0
    report = json.loads((tmp_path / "results" / "compare" / "compare.json").read_text())
    assert set(report["runs"]) == {"E0", "E2-zero"}
    assert report["contrasts"][0]["n_pairs"] == 8
    assert run_plan(plan, runner=runner) == 0  # resumed: every run already complete
    assert len(calls) == 4
    assert run_plan(plan, dry_run=True, runner=runner) == 0 and len(calls) == 4
