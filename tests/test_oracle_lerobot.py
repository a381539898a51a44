"""vlaworld against the real LeRobot 0.4.4 (transformers 4.57.6), called live in its side environment.

Checkpoints here are written by LeRobot itself (``SmolVLAPolicy(config).save_pretrained`` and its
processors); LeRobot's ``predict_action_chunk`` and ``select_action`` make the references, and
``vlaworld.load_policy(..., numerics="lerobot-0.4")`` must reproduce them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlaworld
from tests import lerobot_layout as layout
from tests.oracle import Request, python_044, run, write_hf_cache
from tests.tiny_checkpoint import IMAGE, VLM_REPO, libero_batch, write_tiny_vlm
from vlaworld.envs.observation import quat2axisangle
from vlaworld.models.siglip import transformers_457_position_ids

pytestmark = pytest.mark.oracle

VLM_BF16_TEXT = "tiny-org/TinySmolVLM-bf16-text"  # a VLM config whose text_config says torch_dtype bfloat16
INPUTS, OUTPUTS = layout.features(image_shape=(3, 16, 16))
TINY = dict(
    chunk_size=6, n_action_steps=3, max_state_dim=12, max_action_dim=10, resize_imgs_with_padding=[IMAGE, IMAGE],
    tokenizer_max_length=8, num_steps=4, num_vlm_layers=4, vlm_model_name=VLM_REPO, device="cpu",
    input_features=INPUTS, output_features=OUTPUTS,
)
# load_vlm_weights decides how LeRobot builds the VLM: true -> bf16 VLM and expert (exact position ids),
# false -> the sub-configs' dtypes (float32 here: shifted position ids under transformers 4.57).
CASES = {
    "fp32": dict(load_vlm_weights=False),
    "vlm-weights-bf16": dict(load_vlm_weights=True),
    "bf16-text-config": dict(load_vlm_weights=False, vlm_model_name=VLM_BF16_TEXT),
}
QUEUE_STEPS = 7  # three chunks of n_action_steps=3, the last one partly used


def stats() -> dict:
    """Dataset stats as JSON: every feature, as lerobot-train passes dataset.meta.stats."""
    return {k: {n: v.tolist() for n, v in d.items()} for k, d in layout.dataset_stats(seed=3).items()}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    scratch = tmp_path_factory.mktemp("vlms")
    write_hf_cache(root, VLM_REPO, write_tiny_vlm(scratch / "plain", weights=True))
    write_hf_cache(root, VLM_BF16_TEXT, write_tiny_vlm(scratch / "bf16", sub_config_dtypes={"text_config": "bfloat16"}))
    return root


@pytest.fixture(scope="module")
def lerobot(hf_home, tmp_path_factory):
    """Per case: the checkpoint LeRobot 0.4.4 wrote, its outputs, and the inputs and noise it was given."""
    python = python_044()
    root = tmp_path_factory.mktemp("lerobot044")
    batch = libero_batch(bsz=2, seed=5)
    inputs = {k: torch.as_tensor(v) for k, v in batch.items() if k != "task"}
    g = torch.Generator().manual_seed(11)
    noise = {"chunk": torch.randn(2, 6, 10, generator=g)}
    noise |= {f"queue_{k}": torch.randn(2, 6, 10, generator=g) for k in range(3)}
    saves = [Request("save_policy", {"dir": str(root / name), "config": TINY | case, "seed": 7, "stats": stats()})
             for name, case in CASES.items()]
    predicts = [Request("predict", {"dir": str(root / name), "tasks": batch["task"], "queue_steps": QUEUE_STEPS},
                        {"inputs": inputs, "noise": noise}) for name in CASES]
    results = run(python, saves + predicts, hf_home=hf_home)
    return {
        name: {"dir": root / name, "saved": results[i][0], "meta": results[len(CASES) + i][0],
               "out": results[len(CASES) + i][1]}
        for i, name in enumerate(CASES)
    } | {"batch": batch, "noise": noise}


@pytest.mark.parametrize("case", list(CASES))
def test_chunk_and_queue_equal_lerobot_044(lerobot, hf_home, monkeypatch, case):
    monkeypatch.setenv("HF_HOME", str(hf_home))
    ref = lerobot[case]
    policy = vlaworld.load_policy(ref["dir"], numerics="lerobot-0.4")
    # Each part runs in the dtype LeRobot built it in.
    ours = {k: str(v.dtype).removeprefix("torch.") for k, v in policy.model.state_dict().items()}
    assert ours == ref["meta"]["runtime_dtypes"]
    batch, noise = lerobot["batch"], lerobot["noise"]
    chunk = policy.predict_chunk(batch, noise=noise["chunk"])
    torch.testing.assert_close(chunk, ref["out"]["chunk"], rtol=0, atol=1e-5)
    policy.reset()
    queue = [policy.act(batch, noise=noise[f"queue_{s // 3}"]) for s in range(QUEUE_STEPS)]
    np.testing.assert_allclose(np.stack(queue), ref["out"]["queue"].numpy(), rtol=0, atol=1e-5)


def test_fp32_vision_differs_between_profiles(lerobot, hf_home, monkeypatch):
    """The lerobot-0.6 profile (transformers 5 ids) does not reproduce LeRobot 0.4.4 on an fp32 vision tower:
    the ids matter, so the test above would fail if they regressed."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    ref = lerobot["fp32"]
    policy = vlaworld.load_policy(ref["dir"], numerics="lerobot-0.6")
    chunk = policy.predict_chunk(lerobot["batch"], noise=lerobot["noise"]["chunk"])
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
