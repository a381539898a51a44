"""The policy server on the built-in demo policy, driven by the real openpi-client 0.1.2 from PyPI.

What another stack sees: the metadata first, then a chunk per observation equal to the in-process
policy's for the same inputs and session seed, sessions that reset, and bad requests answered with an
error while the connection and the server keep serving.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import torch

import vlaworld
from tests.support.serve_support import CAMERAS, Reference, load_demo, observation, require_openpi_client
from vlaworld.serve import PolicyServer, ServeConfig

client_module = require_openpi_client()


@pytest.fixture(scope="module")
def server():
    with PolicyServer(load_demo(), ServeConfig(host="127.0.0.1", port=0), policy_kind="demo") as srv:
        yield srv


@pytest.fixture(scope="module")
def reference_policy():
    return load_demo()


def connect(server) -> "client_module.WebsocketClientPolicy":
    return client_module.WebsocketClientPolicy(host="127.0.0.1", port=server.port)


def test_metadata_comes_first_and_describes_the_policy(server):
    meta = connect(server).get_server_metadata()
    assert meta["server"] == "vlaworld"
    assert (meta["action_dim"], meta["chunk_size"], meta["n_action_steps"], meta["max_action_dim"]) == (7, 50, 10, 10)
    assert meta["features"]["images"] == list(CAMERAS)
    assert meta["features"]["state"] == "observation.state" and meta["features"]["state_dim"] == 8
    assert meta["features"]["world_frames_needed"] == 4  # m 2 + T 3 - 1
    assert meta["features"]["world_camera"] == CAMERAS[0]
    assert meta["policy"]["policy"] == "demo" and meta["policy"]["memory"] == "pred"
    assert meta["config"]["chunk_size"] == 50 and meta["config"]["type"] == "smolvla_world"
    assert len(meta["checkpoint_sha256"]) == 64


def test_actions_equal_the_in_process_policy_for_the_same_inputs_and_seed(server, reference_policy):
    client = connect(server)
    ref = Reference(reference_policy, seed=1234)
    first = client.infer({**observation(0), "reset": True, "session_id": 1234})
    assert first["actions"].shape == (50, 7) and first["actions"].dtype == np.float32
    assert first["session"] == {"id": 1234, "seed": 1234, "chunks": 1}
    assert set(first["server_timing"]) >= {"infer_ms", "queue_ms", "batch_size"}
    assert first["memory"]["memory"] and first["memory"]["memory_finite"]
    np.testing.assert_array_equal(first["actions"], ref.chunk(observation(0)))
    # Later requests: the session's generator goes on and its frame history slides (openpi's "prompt" = task).
    for step in (1, 2):
        obs = observation(step)
        sent = {**{k: v for k, v in obs.items() if k != "task"}, "prompt": obs["task"]}
        np.testing.assert_array_equal(client.infer(sent)["actions"], ref.chunk(obs))


def test_explicit_world_frames_replace_the_session_history(server, reference_policy):
    client = connect(server)
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    reply = client.infer({**observation(3), "observation.world_frames": frames, "reset": True, "session_id": 9})
    batch = {k: np.asarray(v)[None] for k, v in observation(3).items() if k != "task"}
    batch |= {"task": [observation(3)["task"]], "observation.world_frames": frames[None]}
    noise = torch.randn((50, 10), generator=torch.Generator().manual_seed(9))[None]  # chunk, max_action_dim
    np.testing.assert_array_equal(reply["actions"], reference_policy.predict_chunk(batch, noise=noise)[0].numpy())


def test_reset_starts_the_episode_again(server):
    client = connect(server)
    ack = client.infer({"reset": True, "session_id": "libero_spatial:0:3"})
    assert ack["reset"] and ack["session"]["chunks"] == 0 and ack["session"]["id"] == "libero_spatial:0:3"
    a = [client.infer(observation(i))["actions"] for i in range(2)]
    client.infer({"reset": True, "session_id": "libero_spatial:0:3"})
    b = [client.infer(observation(i))["actions"] for i in range(2)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))  # same id: same noise and history again
    other = client.infer({**observation(0), "reset": True, "session_id": "libero_spatial:0:4"})["actions"]
    assert np.abs(other - a[0]).max() > 1e-3  # another id: other noise
    # Without an id the server picks one and says which, so the rollout can be replayed.
    fresh = connect(server)
    picked = fresh.infer(observation(0))
    replay = fresh.infer({**observation(0), "reset": True, "session_id": picked["session"]["id"]})
    np.testing.assert_array_equal(picked["actions"], replay["actions"])


BAD_REQUESTS = [
    (lambda o: {k: v for k, v in o.items() if k != "observation.state"}, "missing observation.state"),
    (lambda o: {**o, "observation.state": np.zeros(7, np.float32)}, "must have shape [8]"),
    (lambda o: {**o, "observation.state": np.zeros((1, 8), np.float32)}, "one sample, not a batch"),
    (lambda o: {**o, CAMERAS[0]: o[CAMERAS[0]].astype(np.float32) / 255}, "has dtype float32; send uint8"),
    (lambda o: {**o, CAMERAS[1]: o[CAMERAS[1]][:, :, :2]}, "must be uint8 [H, W, 3]"),
    (lambda o: {k: v for k, v in o.items() if k != CAMERAS[1]}, "missing cameras"),
    (lambda o: {k: v for k, v in o.items() if k != "task"}, "missing the task text"),
    (lambda o: {**o, "observation.images.wrist": o[CAMERAS[0]]}, "unknown observation names"),
    (lambda o: {**o, "observation.state": np.full(8, np.nan, np.float32)}, "non-finite"),
    (lambda o: {**o, "session_id": 99}, "send it with 'reset': true"),
    (lambda o: {**o, "observation.world_frames": np.zeros((3, 32, 32, 3), np.uint8)}, "last 4 frames"),
]


@pytest.mark.parametrize("corrupt,message", BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_bad_request_is_answered_and_the_connection_keeps_serving(server, reference_policy, corrupt, message):
    client = connect(server)
    client.infer({"reset": True, "session_id": 77})
    with pytest.raises(RuntimeError, match="Error in inference server") as err:
        client.infer(corrupt(observation(0)))
    assert message in str(err.value)
    # Same connection, same session: the refused request changed nothing.
    np.testing.assert_array_equal(client.infer(observation(0))["actions"], Reference(reference_policy, 77).chunk(observation(0)))


def test_garbage_frames_are_refused_and_the_server_keeps_serving(server):
    from websockets.sync.client import connect as ws_connect

    with ws_connect(server.url, compression=None) as ws:
        ws.recv()  # metadata
        for junk in (b"\xc1\xc1", "a text frame", b"\x92\x01"):
            ws.send(junk)
            reply = ws.recv()
            assert isinstance(reply, str) and "bad request" in reply
    assert connect(server).infer(observation(1))["actions"].shape == (50, 7)


def test_health_route(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
        assert response.status == 200 and response.read() == b"OK\n"


def test_vlaworld_serve_is_the_serve_function():
    import vlaworld.serve as package
    from vlaworld.serve import serve

    assert vlaworld.serve is package and callable(vlaworld.serve)
    assert type(vlaworld.serve).__call__ is serve
    with pytest.raises(ValueError, match="shuffle"):
        vlaworld.serve(load_demo(memory="shuffle"), port=0)


def test_the_command_serves_until_interrupted(tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vlaworld.serve", "--ckpt", "demo", "--host", "127.0.0.1",
                             "--port", "0", "--threads", "1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline, lines = time.monotonic() + 300, []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if match := re.search(r"on ws://127\.0\.0\.1:(\d+)", line):
                break
            assert line or proc.poll() is None, "".join(lines)
        else:
            pytest.fail("the server did not report its address:\n" + "".join(lines))
        client = client_module.WebsocketClientPolicy(host="127.0.0.1", port=int(match.group(1)))
        assert client.get_server_metadata()["policy"]["policy"] == "demo"
        assert client.infer(observation(0))["actions"].shape == (50, 7)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_the_command_explains_a_bad_checkpoint(tmp_path, capsys):
    from vlaworld.serve.cli import main

    assert main(["--ckpt", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "vlaworld.serve: error:" in capsys.readouterr().err
