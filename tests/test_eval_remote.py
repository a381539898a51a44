"""Remote evaluation (``--policy-server``): the same scheduler and results store with the demo policy
behind the server. Episodes equal the local evaluator's: outcomes, memory statistics and the digest of
every action sent to the env, bit for bit when each policy call is one row (local and server
``--max-batch 1``); with batching on both sides, outcomes equal and actions up to batched kernels' last bits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.serve_support import load_demo
from tests.support.standins import StandinFactory
from vlaworld.eval import cli
from vlaworld.eval.run import cpu_shared_with_workers, run_eval
from vlaworld.eval.episode import episode_list
from vlaworld.eval.policies import NeuralChunkPolicy
from vlaworld.eval.remote import RemoteChunkPolicy
from vlaworld.eval.scheduler import SchedulerConfig
from vlaworld.serve import PolicyServer, ServeConfig

TASKS = (0, 1)
EPISODES = 2
MAX_STEPS = 8
COMPARED = ("success", "steps", "seed", "init_state", "error")
COMPARED_EXTRA = ("chunks", "memory_nonfinite_chunks", "memory_norm_mean", "actions_sha256")


def evaluate(out: Path, policy, *, max_batch: int | None):
    config = {"suite": "standin", "tasks": list(TASKS), "episodes": EPISODES}
    scheduler = SchedulerConfig(n_envs=2, env_factory=StandinFactory(), max_steps=MAX_STEPS, max_batch=max_batch)
    with cpu_shared_with_workers("cpu", 2):  # as the CLI does: no oversubscribed cores
        records, stats = run_eval(out=out, config=config, episodes=episode_list("standin", TASKS, EPISODES),
                                      policy=policy, scheduler=scheduler, progress=False)
    return {r.key: r for r in records}, stats


def served(out: Path, *, server_batch: int, n_action_steps: int = 4):
    with PolicyServer(load_demo(), ServeConfig(host="127.0.0.1", port=0, max_batch=server_batch)) as srv:
        remote = RemoteChunkPolicy(srv.url, seed=0, n_action_steps=n_action_steps)
        try:
            records, stats = evaluate(out, remote, max_batch=None)
        finally:
            remote.close()
        return records, stats, srv.engine.stats


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    policy = NeuralChunkPolicy(load_demo(n_action_steps=4), seed=0)
    return evaluate(tmp_path_factory.mktemp("local"), policy, max_batch=1)[0]


def test_served_episodes_are_the_local_episodes_bit_for_bit(tmp_path, local):
    remote, stats, engine = served(tmp_path, server_batch=1)
    assert set(remote) == set(local) and len(local) == len(TASKS) * EPISODES
    for key, rec in local.items():
        assert rec.error is None and rec.extra["chunks"] == 2
        assert [getattr(remote[key], f) for f in COMPARED] == [getattr(rec, f) for f in COMPARED], key
        assert [remote[key].extra.get(f) for f in COMPARED_EXTRA] == [rec.extra.get(f) for f in COMPARED_EXTRA], key
    assert engine.rows == stats.policy_rows == 8 and engine.policy_calls == 8
    # The digests are of the actions themselves: another --seed gives other episodes.
    assert len({r.extra["actions_sha256"] for r in local.values()}) == len(local)


def test_batched_serving_keeps_the_outcomes(tmp_path, local):
    remote, stats, engine = served(tmp_path, server_batch=8)
    for key, rec in local.items():
        assert [getattr(remote[key], f) for f in COMPARED] == [getattr(rec, f) for f in COMPARED], key
        assert remote[key].extra["memory_norm_mean"] == pytest.approx(rec.extra["memory_norm_mean"], abs=1e-4)
    assert engine.rows == stats.policy_rows == 8
    print(f"server: {engine.policy_calls} policy calls for {engine.rows} requests")


def test_policy_flags_belong_to_the_server(tmp_path, capsys):
    with PolicyServer(load_demo(), ServeConfig(host="127.0.0.1", port=0)) as srv:
        code = cli.main(["--policy-server", srv.url, "--memory", "zero", "--dtype", "float32", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--memory --dtype configure the policy" in err and "python -m vlaworld.serve" in err
    with pytest.raises(SystemExit):  # --ckpt and --policy-server name two policies
        cli.build_parser().parse_args(["--ckpt", "demo", "--policy-server", srv.url, "--out", str(tmp_path)])


def test_an_unreachable_server_is_a_clear_error(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = cli.main(["--policy-server", f"ws://127.0.0.1:{port}", "--tasks", "0", "--episodes", "1",
                     "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot reach a policy server at ws://127.0.0.1:{port}" in err and "python -m vlaworld.serve" in err


@pytest.mark.slow
@pytest.mark.libero
def test_remote_cli_on_libero_equals_the_local_cli(tmp_path):
    """The whole command on LIBERO: 2 tasks x 2 episodes, demo policy, served vs in-process."""
    common = ["--suite", "libero_spatial", "--tasks", "0-1", "--episodes", "2", "--max-steps", "20", "--n-envs", "2",
              "--max-batch", "1", "--no-progress"]
    assert cli.main([*common, "--ckpt", "demo", "--out", str(tmp_path / "local")]) == 0
    from vlaworld.demo import ensure_demo

    paths = ensure_demo()
    import vlaworld

    policy = vlaworld.load_policy(paths.ckpt, vlm=paths.vlm, world_encoder=paths.world_encoder)
    with PolicyServer(policy, ServeConfig(host="127.0.0.1", port=0, max_batch=1), policy_kind="demo") as srv:
        assert cli.main([*common, "--policy-server", srv.url, "--out", str(tmp_path / "remote")]) == 0
        # The served run records the local run's configuration: either can resume the other.
        assert cli.main([*common, "--policy-server", srv.url, "--out", str(tmp_path / "local")]) == 0

    def episodes(run: str) -> dict:
        lines = (tmp_path / run / "episodes.jsonl").read_text().splitlines()
        return {(r["task_id"], r["episode"]): r for r in map(json.loads, lines)}

    local, remote = episodes("local"), episodes("remote")
    assert set(local) == set(remote) and len(local) == 4
    for key, rec in local.items():
        for field in (*COMPARED, *COMPARED_EXTRA, "task", "rendered_steps"):
            assert remote[key][field] == rec[field], (key, field)
    run = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in ("local", "remote")}
    strip = lambda c: {k: v for k, v in c.items() if k != "label"}  # noqa: E731
    assert strip(run["remote"]["config"]) == strip(run["local"]["config"])
    assert run["remote"]["checkpoint_hash"] == run["local"]["checkpoint_hash"]
    assert run["remote"]["policy_server"] == srv.url and run["local"]["policy_server"] is None
