"""Sharding one evaluation across ranks (SPEC §11) on stand-ins: each rank runs its share into its
own directory, the last one merges, and the merged results equal a one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.standins import outcomes, raw_keys, run_standin
from vlaworld.eval.results import ConfigChanged, read_episodes
from vlaworld.eval.shards import ShardInfo, from_env

ROOT = Path(__file__).resolve().parents[1]
TASKS = (0, 1)
EPISODES = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    records, _ = run_standin(tmp_path_factory.mktemp("ref"), n_envs=1, tasks=TASKS, episodes=EPISODES)
    return outcomes(records)


def test_ranks_merge_into_one_run(tmp_path: Path, reference: dict) -> None:
    out = tmp_path / "run"
    r0, _ = run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES, shard_info=ShardInfo(rank=0, world_size=2))
    assert not (out / "episodes.jsonl").exists(), "merged before every shard finished"
    r1, _ = run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES, shard_info=ShardInfo(rank=1, world_size=2),
                        device="cuda:1")  # each rank records its own GPU
    assert {r.key for r in r0}.isdisjoint({r.key for r in r1}) and len(r0) + len(r1) == len(reference)
    assert raw_keys(out) == {k: 1 for k in reference}
    assert outcomes(read_episodes(out).records) == reference
    run = json.loads((out / "run.json").read_text())
    assert "shard" not in run["config"] and run["merged_from_shards"] == 2
    assert json.loads((out / "summary.json").read_text())["overall"]["n"] == len(reference)
    # Resume is per rank; a different world size is refused by the rank's own run.json.
    _, again = run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES, shard_info=ShardInfo(rank=0, world_size=2))
    assert again.episodes == 0 and outcomes(read_episodes(out).records) == reference
    with pytest.raises(ConfigChanged, match="world_size"):
        run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES, shard_info=ShardInfo(rank=0, world_size=3))


def test_concurrent_ranks_from_torchrun_environment(tmp_path: Path, reference: dict) -> None:
    out = tmp_path / "run"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        cmd = [sys.executable, "-m", "tests.support.standins", str(out), "--n-envs", "1", "--tasks", str(len(TASKS)),
               "--episodes", str(EPISODES)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    assert outcomes(read_episodes(out).records) == reference


def test_shard_environment_parsing() -> None:
    assert not from_env({}).active
    info = from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert info.active and info.device("cuda") == "cuda:1" and info.device("cpu") == "cpu"
    assert info.run_dir("/r") == Path("/r/shards/rank003")
    with pytest.raises(ValueError, match="RANK"):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
