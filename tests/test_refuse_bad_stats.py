"""Normalisation stats that would make actions silently wrong are refused at load, naming file and feature.

Each case below loaded silently before (issue: missing or NaN postprocessor ``action`` stats gave actions
in normalised units or NaN, scored as ordinary failures).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlaworld
from tests.support.tiny_checkpoint import libero_batch
from vlaworld.checkpoint.files import CheckpointError

POST_STATE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
PRE_STATE = "policy_preprocessor_step_5_normalizer_processor.safetensors"


def copy(tiny_smolvla, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_smolvla.ckpt, tmp_path / "ckpt"))


def edit_state(path: Path, change) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def test_postprocessor_without_state_file_is_refused(tiny_smolvla, tmp_path):
    ckpt = copy(tiny_smolvla, tmp_path)
    doc = json.loads((ckpt / "policy_postprocessor.json").read_text())
    del doc["steps"][0]["state_file"]  # the preprocessor still holds action stats: they must not hide the gap
    (ckpt / "policy_postprocessor.json").write_text(json.dumps(doc))
    assert "action.mean" in load_file(ckpt / PRE_STATE)
    with pytest.raises(CheckpointError, match=r"policy_postprocessor\.json \(its unnormalizer_processor step has "
                       r"no state_file\): cannot unnormalise the policy's actions: no stats for 'action'.*--stats"):
        vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)


def test_renamed_action_stats_are_refused(tiny_smolvla, tmp_path):
    ckpt = copy(tiny_smolvla, tmp_path)
    edit_state(ckpt / POST_STATE, lambda t: t.update({k.replace("action", "act"): t.pop(k) for k in list(t)}))
    with pytest.raises(CheckpointError, match=rf"{POST_STATE}: cannot unnormalise .*no stats for 'action'"):
        vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_action_stats_are_refused(tiny_smolvla, tmp_path, value):
    ckpt = copy(tiny_smolvla, tmp_path)
    edit_state(ckpt / POST_STATE, lambda t: t["action.std"].__setitem__(0, value))
    with pytest.raises(CheckpointError, match=rf"{POST_STATE}: cannot unnormalise .*'action.std' has non-finite"):
        vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)


def test_missing_state_stats_are_refused(tiny_smolvla, tmp_path):
    ckpt = copy(tiny_smolvla, tmp_path)
    edit_state(ckpt / PRE_STATE, lambda t: t.pop("observation.state.std"))
    with pytest.raises(CheckpointError, match=r"cannot normalise the policy's inputs: 'observation.state.std' is missing"):
        vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)


@pytest.mark.parametrize("bad", ["no action", "nan"])
def test_stats_file_override_must_cover_the_action(tiny_smolvla, tmp_path, bad):
    good = {"observation.state": {"mean": [0.0] * 8, "std": [1.0] * 8}, "action": {"mean": [0.0] * 7, "std": [1.0] * 7}}
    if bad == "no action":
        del good["action"]
    else:
        good["action"]["mean"][3] = float("nan")
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(good, allow_nan=True))
    with pytest.raises(CheckpointError, match=rf"--stats {path}: cannot unnormalise the policy's actions"):
        vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, stats=path)


def test_zero_std_is_named_in_a_warning(tiny_smolvla, tmp_path, caplog):
    ckpt = copy(tiny_smolvla, tmp_path)
    edit_state(ckpt / POST_STATE, lambda t: t["action.std"].__setitem__(2, 0.0))
    with caplog.at_level(logging.WARNING):
        policy = vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)
    assert "std of 'action' has zero or negative entries" in caplog.text
    assert torch.isfinite(policy.predict_chunk(libero_batch())).all()
