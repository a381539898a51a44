"""Numerics profiles without the oracle: the dtype rules, the position ids, what loading records and says.

The oracle tests (test_oracle_*.py) show these reproduce the real LeRobot 0.4.4 and 0.6.1; these pin the
rules themselves so a regression shows without a side environment too.
"""

from __future__ import annotations

import logging

import pytest
import torch

import vlaworld
from tests.support.tiny_checkpoint import libero_batch, tiny_config_json, write_tiny_checkpoint
from vlaworld.models.siglip import transformers_457_position_ids
from vlaworld.config.numerics import DEFAULT_PROFILE, PROFILES, NumericsError, RuntimeDtypes, profile
from vlaworld import debug


def test_profiles_and_default():
    assert PROFILES == ("lerobot-0.4", "lerobot-0.6") and DEFAULT_PROFILE == "lerobot-0.4"
    with pytest.raises(NumericsError, match="lerobot-0.4, lerobot-0.6"):
        profile("lerobot-0.5")


@pytest.mark.parametrize("name", PROFILES)
def test_runtime_dtype_rules(name):
    rules = profile(name).runtime_dtypes
    assert rules(True, {"vision_config": {"torch_dtype": "float32"}}) == RuntimeDtypes(
        vision="bfloat16", connector="bfloat16", text="bfloat16", lm_head="bfloat16", expert="bfloat16")
    assert rules(False, {}) == RuntimeDtypes.uniform("float32")
    mixed = rules(False, {"vision_config": {"dtype": "bfloat16"}, "text_config": {"torch_dtype": "float16"}})
    assert (mixed.vision, mixed.connector, mixed.text, mixed.lm_head, mixed.expert, mixed.projections) == (
        "bfloat16", "float32", "float16", "float32", "float16", "float32")
    with pytest.raises(NumericsError, match="text_config.dtype='auto'"):
        rules(False, {"text_config": {"dtype": "auto"}})


def test_transformers_457_position_ids():
    fp32 = transformers_457_position_ids(4, torch.float32).view(4, 4)
    assert fp32[0].tolist() == [0, 0, 1, 2] and fp32[:, 0].tolist() == [0, 0, 4, 8]  # rows and columns shift
    for half in (torch.bfloat16, torch.float16):
        assert torch.equal(transformers_457_position_ids(32, half), torch.arange(1024))
    assert transformers_457_position_ids(32, torch.float32)[:33].tolist() == [0, 0, *range(1, 31), 0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("numerics")
    vlm = debug.write_vlm(root / "vlm")
    fp32 = write_tiny_checkpoint(root / "fp32")  # load_vlm_weights false: everything float32
    bf16 = write_tiny_checkpoint(root / "bf16", config=tiny_config_json(load_vlm_weights=True))
    return vlm, fp32, bf16


def test_profiles_differ_only_where_the_vision_tower_runs_in_fp32(files, caplog):
    vlm, fp32, bf16 = files
    batch, noise = libero_batch(), torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(0))

    def chunk(path, numerics):
        policy = vlaworld.load_policy(path, vlm=vlm, numerics=numerics)
        assert policy.config.numerics == numerics and policy.config.dtype == "lerobot"
        return policy, policy.predict_chunk(batch, noise=noise)

    with caplog.at_level(logging.WARNING, logger="vlaworld.load"):
        p4, a4 = chunk(fp32, "lerobot-0.4")
        chunk(fp32, "lerobot-0.4")  # the same choice again: said once
        _, a6 = chunk(fp32, "lerobot-0.6")
    said = [r.getMessage() for r in caplog.records if "patch position ids" in r.getMessage()]
    assert len(said) == 2 and "--numerics lerobot-0.6" in said[0] and "--numerics lerobot-0.4" in said[1]
    assert p4.model.model.vlm_with_expert.vlm.model.vision_model.embeddings.position_ids is not None
    assert (a4 - a6).abs().max() > 1e-3

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vlaworld.load"):
        b4, c4 = chunk(bf16, "lerobot-0.4")
        _, c6 = chunk(bf16, "lerobot-0.6")
    assert not [r for r in caplog.records if "patch position ids" in r.getMessage()]
    assert torch.equal(c4, c6)  # a bf16 tower: both transformers lines use arange
    runtime = b4.config.runtime_dtypes
    assert runtime["vision"] == runtime["expert"] == "bfloat16" and runtime["projections"] == "float32"
    state = b4.model.state_dict()
    assert state["model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"].dtype == torch.float32
    assert state["model.vlm_with_expert.lm_expert.layers.0.self_attn.k_proj.weight"].dtype == torch.bfloat16
