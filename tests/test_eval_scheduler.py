"""Scheduling and bookkeeping on stand-ins (no MuJoCo): every episode once, outcomes independent of
the worker count, slot refill, resume, refusal of a changed configuration, worker faults, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.standins import Fault, StandinFactory, StandinPolicy, outcomes, raw_keys, run_standin
from vlaworld.eval.results import ConfigChanged, read_episodes
from vlaworld.eval.scheduler import WorkersBroken

ROOT = Path(__file__).resolve().parents[1]
TASKS = (0, 1)
EPISODES = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """One uninterrupted run with a single worker: the results every other schedule must reproduce."""
    out = tmp_path_factory.mktemp("ref")
    records, stats = run_standin(out, n_envs=1, tasks=TASKS, episodes=EPISODES)
    assert stats.episodes == len(TASKS) * EPISODES
    return outcomes(records)


def test_each_episode_once_and_same_results_with_three_workers(tmp_path: Path, reference: dict) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    records, stats = run_standin(tmp_path / "run", n_envs=3, tasks=TASKS, episodes=EPISODES,
                                 factory=StandinFactory(marker_dir=str(marker)))
    assert raw_keys(tmp_path / "run") == Counter({k: 1 for k in reference})
    assert outcomes(records) == reference
    assert 0 < sum(s for s, *_ in reference.values()) < len(reference), "stand-in should mix success and failure"
    # Rendering: only boundary observations and the world window (n_action_steps 4, W 2): t % 4 in {0, 3}.
    for (success, steps, *_, rendered) in reference.values():
        assert rendered == 1 + sum(1 for t in range(1, steps + 1) if t % 4 in (0, 3))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["overall"]["n"] == len(reference)
    assert summary["throughput"]["env_steps"] == sum(steps for _, steps, *_ in reference.values())
    assert (tmp_path / "run" / "summary.md").is_file() and (tmp_path / "run" / "run.json").is_file()


def test_slot_refill_no_batch_barrier(tmp_path: Path) -> None:
    """A worker that finishes starts its next episode while the others are still mid-episode."""
    marker = tmp_path / "m"
    marker.mkdir()
    run_standin(tmp_path / "run", n_envs=3, tasks=TASKS, episodes=EPISODES,
                factory=StandinFactory(marker_dir=str(marker), step_sleep=0.004))
    events = [line.split() for line in (marker / "timeline.txt").read_text().splitlines()]
    spans: dict[tuple[str, str], dict[str, float]] = {}
    for pid, what, task, episode, t in events:
        spans.setdefault((task, episode), {"pid": pid})[what] = float(t)
    order = sorted(spans.values(), key=lambda s: s["start"])
    late_starts = order[3:]  # after the first wave
    refills = [s for s in late_starts
               if any(o["pid"] != s["pid"] and o["start"] < s["start"] < o["end"] for o in order)]
    assert refills, "every later episode waited for all running ones: slots are not refilled"
    assert len({s["pid"] for s in order}) == 3


def test_policy_calls_batch_all_waiting_workers_across_tasks(tmp_path: Path, reference: dict) -> None:
    policy = StandinPolicy(predict_sleep=0.03)
    records, stats = run_standin(tmp_path / "run", n_envs=3, tasks=TASKS, episodes=EPISODES, policy=policy)
    assert outcomes(records) == reference  # batching changes nothing
    # Greedy batching: whoever waits goes now; the rest step meanwhile and form the next batch.
    assert max(len(b) for b in policy.batches) >= 2
    assert any(len({e.task_id for e in b}) > 1 for b in policy.batches), "no mixed-task batch"
    assert stats.policy_calls == len(policy.batches) and stats.policy_rows == sum(map(len, policy.batches))
    assert len(stats.setup_s) == 3 and all(0 < s < stats.wall_s for s in stats.setup_s)  # one per worker
    # steady rate: the episodes after each worker's first, at 3 workers busy
    assert 0 < stats.later_steps < stats.env_steps and 0 < stats.later_wall_s < 3 * stats.wall_s
    assert stats.steady_rate(3) == pytest.approx(3 * stats.later_steps / stats.later_wall_s)
    single = StandinPolicy(predict_sleep=0.01)
    records, _ = run_standin(tmp_path / "single", n_envs=3, tasks=TASKS, episodes=EPISODES, policy=single,
                             max_batch=1)
    assert outcomes(records) == reference and {len(b) for b in single.batches} == {1}


def test_min_batch_waits_for_a_second_row(tmp_path: Path, reference: dict) -> None:
    """A policy that needs two rows (memory 'shuffle') gets them unless a single episode is left."""
    policy = StandinPolicy(predict_sleep=0.005)
    policy.min_batch = 2
    records, _ = run_standin(tmp_path / "run", n_envs=3, tasks=TASKS, episodes=EPISODES, policy=policy)
    assert outcomes(records) == reference
    sizes = [len(b) for b in policy.batches]
    first_single = next((i for i, n in enumerate(sizes) if n < 2), len(sizes))
    assert all(n < 2 for n in sizes[first_single:]), f"a lone row went ahead while others ran: {sizes}"
    assert len({e for b in policy.batches[first_single:] for e in b}) <= 1  # only the run's last episode


def test_resume_keeps_finished_and_refuses_changed_config(tmp_path: Path, reference: dict) -> None:
    out = tmp_path / "run"
    run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES)
    lines = (out / "episodes.jsonl").read_text().splitlines(keepends=True)
    (out / "episodes.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # 4 kept, a torn 5th line
    with pytest.warns(UserWarning, match="torn"):  # the worker count may change on resume
        records, stats = run_standin(out, n_envs=3, tasks=TASKS, episodes=EPISODES)
    assert stats.episodes == len(reference) - 4
    assert raw_keys(out) == Counter({k: 1 for k in reference})
    assert outcomes(records) == reference
    _, again = run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES)  # all done: nothing runs
    assert again.episodes == 0
    with pytest.raises(ConfigChanged, match="seed"):
        run_standin(out, n_envs=2, tasks=TASKS, episodes=EPISODES, seed=1)


def test_worker_faults_are_retried_once_then_recorded(tmp_path: Path, reference: dict) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    faults = (
        Fault(task_id=0, episode=1, mode="raise", times=1),  # fails once: the retry must equal a clean run
        Fault(task_id=1, episode=2, mode="exit", times=1),  # the process dies once
        Fault(task_id=1, episode=3, mode="raise", times=5),  # fails twice: recorded as an error
    )
    records, stats = run_standin(tmp_path / "run", n_envs=2, tasks=TASKS, episodes=EPISODES,
                                 factory=StandinFactory(faults=faults, marker_dir=str(marker)))
    got = outcomes(records)
    assert raw_keys(tmp_path / "run") == Counter({k: 1 for k in reference})
    for key in reference:
        if key == ("standin", 1, 3):
            continue
        assert got[key] == reference[key], key
    by_key = {r.key: r for r in records}
    assert by_key[("standin", 0, 1)].extra["attempts"] == 2
    assert by_key[("standin", 1, 2)].extra["attempts"] == 2
    failed = by_key[("standin", 1, 3)]
    assert failed.error is not None and "RuntimeError: standin fault" in failed.error and not failed.success
    assert failed.extra["attempts"] == 2 and failed.task == "standin task 1"
    assert stats.worker_restarts == 4 and stats.errors == 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["overall"]["n"] == len(reference) - 1 and summary["overall"]["errors"] == 1

    # Re-running the command retries only the error episode; its complete record then stands.
    records, _ = run_standin(tmp_path / "run", n_envs=2, tasks=TASKS, episodes=EPISODES, factory=StandinFactory())
    assert raw_keys(tmp_path / "run")[("standin", 1, 3)] == 2
    assert outcomes(records) == reference


def test_hung_worker_is_killed_and_its_episode_retried(tmp_path: Path, reference: dict) -> None:
    marker = tmp_path / "m"
    marker.mkdir()
    faults = (Fault(task_id=0, episode=2, mode="hang", times=1),)
    t0 = time.monotonic()
    records, stats = run_standin(tmp_path / "run", n_envs=2, tasks=TASKS, episodes=EPISODES, worker_timeout_s=1.5,
                                 factory=StandinFactory(faults=faults, marker_dir=str(marker)))
    assert outcomes(records) == reference and stats.worker_restarts == 1
    assert {r.key: r for r in records}[("standin", 0, 2)].extra["attempts"] == 2
    assert time.monotonic() - t0 < 30


def test_broken_workers_abort_without_recording(tmp_path: Path) -> None:
    """When nothing can finish (say, no GL), the run stops with the error instead of filling the
    results with error records that a re-run after the fix would keep."""
    marker = tmp_path / "m"
    marker.mkdir()
    faults = tuple(Fault(task_id=t, episode=e, mode="raise", times=9, at_step=1)
                   for t in TASKS for e in range(EPISODES))
    with pytest.raises(WorkersBroken, match="RuntimeError: standin fault"):
        run_standin(tmp_path / "run", n_envs=2, tasks=TASKS, episodes=EPISODES,
                    factory=StandinFactory(faults=faults, marker_dir=str(marker)))
    assert (tmp_path / "run" / "episodes.jsonl").read_text() == ""


def test_sigkill_then_rerun_gives_each_episode_once(tmp_path: Path, reference: dict) -> None:
    out = tmp_path / "run"
    marker = tmp_path / "m"
    marker.mkdir()
    cmd = [sys.executable, "-m", "tests.support.standins", str(out), "--n-envs", "2", "--tasks", str(len(TASKS)),
           "--episodes", str(EPISODES), "--step-sleep", "0.01", "--marker-dir", str(marker)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    episodes_file = out / "episodes.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if episodes_file.exists() and len(episodes_file.read_bytes().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    workers = {int(line.split()[0]) for line in (marker / "timeline.txt").read_text().splitlines()}
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "env workers outlived the killed evaluator"
    done_before = len(read_episodes(out).records)
    assert 3 <= done_before < len(reference), "kill came too late to test anything"
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert raw_keys(out) == Counter({k: 1 for k in reference})
    assert outcomes(read_episodes(out).records) == reference


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())
