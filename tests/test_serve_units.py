"""The server's pure parts: the wire format against openpi-client's own codec, session seeds and frame
history, request checks, and which modules may import the server."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from tests.support.serve_support import require_openpi_client
from vlaworld.eval.episode import EpisodeId, episode_generator, noise_seed
from vlaworld.serve.observation import ObservationError, ObservationSpec, parse_request
from vlaworld.serve.session import Session, session_seed
from vlaworld.serve.wire import WireError, packb, unpackb



@pytest.fixture(scope="module")
def openpi_codec():
    """openpi-client's own codec (openpi_client.msgpack_numpy)."""
    require_openpi_client()
    from openpi_client import msgpack_numpy

    return msgpack_numpy

SAMPLE = {
    "observation.images.image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    "observation.state": np.linspace(-1, 1, 8, dtype=np.float32),
    "f64": np.ones((2, 2)), "i64": np.arange(3), "bool": np.array([True, False]), "scalar": np.float32(1.5),
    "nested": {"list": [1, "two", 3.0], "empty": np.zeros((0, 7), np.float32)}, "task": "put the bowl",
}


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (np.ndarray, np.generic)):
        assert type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b


def test_the_wire_format_is_openpi_clients(openpi_codec):
    assert_same(openpi_codec.unpackb(packb(SAMPLE)), SAMPLE)  # we write, openpi-client reads
    assert_same(unpackb(openpi_codec.packb(SAMPLE)), SAMPLE)  # openpi-client writes, we read
    assert packb(SAMPLE) == openpi_codec.packb(SAMPLE)  # byte for byte


def test_unportable_or_malformed_payloads_are_wire_errors():
    with pytest.raises(WireError, match="object"):
        packb({"x": np.array([object()])})
    with pytest.raises(WireError, match="not a msgpack"):
        unpackb(b"\xc1")
    with pytest.raises(WireError, match="malformed numpy array"):  # 3 bytes cannot hold 4 float32
        unpackb(packb({b"__ndarray__": True, b"data": b"abc", b"dtype": "<f4", b"shape": [4]}))
    with pytest.raises(WireError, match="refused"):
        unpackb(packb({b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}))


def test_integer_session_ids_are_the_episode_generator_seed():
    episode = EpisodeId(suite="libero_spatial", task_id=3, episode=17)
    seed = noise_seed(episode, 0)
    import torch

    served = Session(id=seed, frames_needed=0).generator
    local = episode_generator(episode, 0)
    assert torch.equal(torch.randn(5, generator=served), torch.randn(5, generator=local))
    assert session_seed(42) == 42
    assert session_seed("42") != 42 and session_seed("42") == session_seed("42")
    assert session_seed(-1) == session_seed("-1") and 0 <= session_seed(2**70) < 2**63
    assert session_seed(True) == session_seed("True")  # a bool is not an id number


def test_the_session_window_is_act_s_frame_history():
    s = Session(id=0, frames_needed=3)
    frame = lambda v: np.full((2, 2, 3), v, np.uint8)  # noqa: E731
    assert s.window_with(frame(1))[:, 0, 0, 0].tolist() == [1, 1, 1]  # repeat-padded at the start
    s.commit(frame(1))
    s.commit(frame(2))
    assert s.window_with(frame(3))[:, 0, 0, 0].tolist() == [1, 2, 3]
    s.commit(frame(3))
    assert s.window_with(frame(4))[:, 0, 0, 0].tolist() == [2, 3, 4] and s.chunks == 3


SPEC = ObservationSpec(cameras=("observation.images.image", "observation.images.image2"), empty_cameras=1,
                       state_dim=8, world_frames=2, world_camera="observation.images.image",
                       rename={"observation.images.top": "observation.images.image"})


def obs(**changes):
    base = {"observation.images.top": np.zeros((4, 4, 3), np.uint8),
            "observation.images.image2": np.zeros((4, 4, 3), np.uint8), "observation.state": [0.0] * 8,
            "prompt": "go", "extra_info": 1}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def test_requests_use_the_rename_map_prompt_and_optional_cameras():
    request = parse_request(obs(), SPEC)
    assert set(request.observation) == {"observation.images.image", "observation.images.image2", "observation.state",
                                        "task"}
    assert request.observation["task"] == "go" and request.observation["observation.state"].dtype == np.float32
    assert parse_request(obs(**{"observation.images.image2": None}), SPEC).observation  # one empty camera allowed
    bare = parse_request({"reset": True, "session_id": np.int64(5)}, SPEC)
    assert bare.reset and bare.session_id == 5 and bare.observation is None


@pytest.mark.parametrize("changes,message", [
    ({"observation.images.top": None}, "reads camera 'observation.images.image'"),
    ({"observation.images.top": None, "observation.images.image2": None}, "missing cameras"),
    ({"observation.state": ["a"] * 8}, "must be 8 numbers"),
    ({"observation.state": np.zeros(8, np.complex64)}, "float array"),
    ({"task": "other"}, "disagree"),
    ({"prompt": 3}, "must be text"),
    ({"reset": "yes"}, "'reset' must be true or false"),
    ({"session_id": 1.5}, "'session_id' must be an integer or a string"),
])
def test_bad_requests_name_the_problem(changes, message):
    with pytest.raises(ObservationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_request(obs(**changes), SPEC)
    with pytest.raises(ObservationError, match="a request is a map"):
        parse_request([1, 2], SPEC)
    with pytest.raises(ObservationError, match="keys must be text"):
        parse_request({b"observation.state": [0.0] * 8}, SPEC)


PACKAGE = Path(__file__).resolve().parents[1] / "vlaworld"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_the_server_sits_above_the_policy_and_beside_eval_and_bench():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        found = imports(path)
        if rel.startswith("serve/"):
            assert not {m for m in found if m.startswith(("vlaworld.eval", "vlaworld.bench"))}, rel
        elif not rel.startswith(("eval/", "bench/")) and rel != "__init__.py":
            assert not {m for m in found if m.startswith("vlaworld.serve")}, f"{rel} imports the server"
