"""vlaworld against the real LeRobot 0.4.4 (transformers 4.57.6), called live in its side environment.

Checkpoints here are written by LeRobot itself (``SmolVLAPolicy(config).save_pretrained`` and its
processors); LeRobot's ``predict_action_chunk`` and ``select_action`` make the references, and
``vlaworld.load_policy(..., numerics="lerobot-0.4")`` must reproduce them (cases: tests/oracle/cases.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlaworld
from tests.oracle import Request, python_044, run
from tests.oracle import cases as C
from vlaworld.envs.observation import quat2axisangle
from vlaworld.models.siglip import transformers_457_position_ids

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def tiny_044(oracle_hf_home, tmp_path_factory):
    return C.references(python_044(), C.TINY_CASES, "tiny", oracle_hf_home, tmp_path_factory.mktemp("tiny044"))


@pytest.fixture(scope="module")
def real_044(oracle_hf_home, tmp_path_factory):
    return C.references(python_044(), C.REAL_CASES, "real", oracle_hf_home, tmp_path_factory.mktemp("real044"))


@pytest.mark.parametrize("case", list(C.TINY_CASES))
def test_tiny_chunk_and_queue_equal_lerobot_044(tiny_044, oracle_hf_home, monkeypatch, case):
    monkeypatch.setenv("HF_HOME", str(oracle_hf_home))
    C.check_against(tiny_044, case, "lerobot-0.4", atol=1e-5)  # observed: 0.0


@pytest.mark.slow
@pytest.mark.parametrize("case", list(C.REAL_CASES))
def test_real_size_chunk_and_queue_equal_lerobot_044(real_044, oracle_hf_home, monkeypatch, case):
    monkeypatch.setenv("HF_HOME", str(oracle_hf_home))
    C.check_against(real_044, case, "lerobot-0.4", atol=1e-3)


def test_fp32_vision_differs_between_profiles(tiny_044, oracle_hf_home, monkeypatch):
    """The lerobot-0.6 profile (transformers 5 ids) does not reproduce LeRobot 0.4.4 on an fp32 vision tower:
    the ids matter, so the tests above fail if they regress."""
    monkeypatch.setenv("HF_HOME", str(oracle_hf_home))
    ref = tiny_044["fp32"]
    policy = vlaworld.load_policy(ref["dir"], numerics="lerobot-0.6")
    chunk = policy.predict_chunk(tiny_044["batch"], noise=tiny_044["noise"]["chunk"])
    assert (chunk - ref["out"]["chunk"]).abs().max() > 1e-3


def test_position_ids_equal_transformers_457():
    sides, dtypes = [2, 3, 4, 5, 7, 16, 32], ["float32", "bfloat16", "float16"]
    [(ids, _)] = run(python_044(), [Request("position_ids", {"sides": sides, "dtypes": dtypes})])
    for side in sides:
        for name in dtypes:
            ours = transformers_457_position_ids(side, getattr(torch, name)).tolist()
            assert ours == ids[f"{side}/{name}"], (side, name)
    assert ids["32/float32"][:3] == [0, 0, 1] and ids["32/bfloat16"][:3] == [0, 1, 2]


def test_state_axis_angle_equals_lerobot_044():
    rng = np.random.default_rng(1)
    quats = rng.normal(size=(3000, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats[:1000] = np.array([0.9999, 0.0, -0.044, 0.0005]) + rng.normal(scale=1e-3, size=(1000, 4))  # LIBERO's pose
    quats[-2:] = [[0, 0, 0, 1.0], [0, 0, 0, -1.0]]
    [(_, out)] = run(python_044(), [Request("axis_angle", {}, {"inputs": {"quat": torch.from_numpy(quats)}})])
    ours = np.stack([quat2axisangle(q) for q in quats])  # one row at a time, as the env computes it
    np.testing.assert_array_equal(ours, out["axis_angle"].numpy())
