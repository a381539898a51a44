"""LeRobot processor files: read what lerobot-train writes, write it back byte for byte, stats semantics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support import lerobot_layout as layout
from vlaworld.checkpoint import normalization as norm
from vlaworld.checkpoint import processors as lp
from vlaworld.checkpoint.files import CheckpointError

SMOLVLA_PRE = ["rename_observations_processor", "to_batch_processor", "smolvla_new_line_processor",
               "tokenizer_processor", "device_processor", "normalizer_processor"]


def _ckpt(tmp_path: Path, **kw) -> tuple[Path, dict]:
    stats = layout.dataset_stats()
    return layout.write_checkpoint(tmp_path / "ckpt", stats=stats, **kw), stats


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name.startswith("policy_")}


def test_reads_every_field_lerobot_writes(tmp_path):
    ckpt, stats = _ckpt(tmp_path)
    spec = lp.read_processors(ckpt)
    assert [s.registry_name for s in spec.preprocessor.steps] == SMOLVLA_PRE
    assert [s.registry_name for s in spec.postprocessor.steps] == ["unnormalizer_processor", "device_processor"]
    assert spec.preprocessor.name == "policy_preprocessor" and spec.postprocessor.name == "policy_postprocessor"
    normalizer = spec.normalizer
    assert list(normalizer.features) == ["observation.images.image", "observation.images.image2", "observation.state",
                                   "action"]
    assert normalizer.features["observation.state"] == norm.Feature(type="STATE", shape=(8,))
    assert normalizer.features["observation.images.image"].shape == (3, 256, 256)
    assert normalizer.norm_map == {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    assert normalizer.eps == 1e-8 and normalizer.normalize_observation_keys is None
    assert set(normalizer.stats) == set(stats)  # all dataset features are saved, not only the policy's
    for key, sub in stats.items():
        for name, value in sub.items():
            torch.testing.assert_close(normalizer.stats[key][name], value, rtol=0, atol=0)
    assert list(spec.unnormalizer.features) == ["action"]
    assert spec.tokenizer == lp.TokenizerSpec(tokenizer_name=layout.VLM, max_length=48, padding="longest",
                                              padding_side="right", truncation=True, task_key="task")
    assert spec.rename_map == {} and spec.appends_newline and spec.float_dtype is None
    assert lp.has_processors(ckpt) and not lp.has_processors(tmp_path)


def test_tokenizer_and_rename_follow_the_checkpoint(tmp_path):
    cfg = layout.smolvla_config(overrides={"pad_language_to": "max_length", "tokenizer_max_length": 64,
                                           "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Instruct"})
    rename = {"observation.images.image": "observation.images.camera1"}
    ckpt, _ = _ckpt(tmp_path, config=cfg, rename_map=rename)
    spec = lp.read_processors(ckpt)
    assert spec.tokenizer.padding == "max_length" and spec.tokenizer.max_length == 64
    assert spec.tokenizer.tokenizer_name == "HuggingFaceTB/SmolVLM2-500M-Instruct"
    assert spec.rename_map == rename


@pytest.mark.parametrize("world", [False, True])
def test_write_reproduces_lerobot_bytes(tmp_path, world):
    ckpt, _ = _ckpt(tmp_path, world=world)
    out1, out2 = tmp_path / "w1", tmp_path / "w2"
    lp.write_processors(out1, lp.read_processors(ckpt))
    lp.write_processors(out2, lp.read_processors(out1))
    assert _files(out1) == _files(ckpt) == _files(out2)
    assert not (out1 / "policy_preprocessor.json").read_text().endswith("\n")


def test_world_normalizer_found_by_name_at_shifted_index(tmp_path):
    ckpt, stats = _ckpt(tmp_path, world=True, config=layout.smolvla_world_config())
    doc = json.loads((ckpt / "policy_preprocessor.json").read_text())
    names = [s["registry_name"] for s in doc["steps"]]
    assert names.index("world_latents_from_cache") == 2 and names.index("normalizer_processor") == 6
    assert (ckpt / "policy_preprocessor_step_6_normalizer_processor.safetensors").is_file()
    spec = lp.read_processors(ckpt)
    torch.testing.assert_close(spec.normalizer.stats["observation.state"]["std"], stats["observation.state"]["std"])


def test_migrated_postprocessor_order_keeps_its_state_file_name(tmp_path):
    """HuggingFaceVLA/smolvla_libero: postprocessor = [device, unnormalizer] -> step_1 state file."""
    ckpt, _ = _ckpt(tmp_path)
    post = json.loads((ckpt / "policy_postprocessor.json").read_text())
    post["steps"].reverse()
    post["steps"][1]["state_file"] = "policy_postprocessor_step_1_unnormalizer_processor.safetensors"
    (ckpt / "policy_postprocessor_step_0_unnormalizer_processor.safetensors").rename(
        ckpt / post["steps"][1]["state_file"])
    layout.write_json(ckpt / "policy_postprocessor.json", post, indent=2)
    lp.write_processors(tmp_path / "out", lp.read_processors(ckpt))
    assert _files(tmp_path / "out") == _files(ckpt)


def _edit_pre(ckpt: Path, fn) -> None:
    doc = json.loads((ckpt / "policy_preprocessor.json").read_text())
    fn(doc["steps"])
    layout.write_json(ckpt / "policy_preprocessor.json", doc, indent=2)


@pytest.mark.parametrize("which, entry, name", [
    ("pre", {"registry_name": "image_crop_processor", "config": {}}, "image_crop_processor"),
    ("pre", {"class": "mypkg.steps.Augment", "config": {}}, "mypkg.steps.Augment"),
    ("pre", {"registry_name": "unnormalizer_processor", "config": {}}, "unnormalizer_processor"),
    ("post", {"registry_name": "tokenizer_processor", "config": {}}, "tokenizer_processor"),
])
def test_unknown_or_misplaced_step_is_refused_by_name(tmp_path, which, entry, name):
    ckpt, _ = _ckpt(tmp_path)
    path = ckpt / f"policy_{which}processor.json"
    doc = json.loads(path.read_text())
    doc["steps"].insert(1, entry)
    layout.write_json(path, doc, indent=2)
    with pytest.raises(CheckpointError, match=rf"step 1 '{re.escape(name)}'"):
        lp.read_processors(ckpt)


def test_missing_files_are_named(tmp_path):
    ckpt, _ = _ckpt(tmp_path)
    (ckpt / "policy_preprocessor_step_5_normalizer_processor.safetensors").unlink()
    with pytest.raises(CheckpointError, match="step_5_normalizer_processor.safetensors"):
        lp.read_processors(ckpt)
    ckpt, _ = _ckpt(tmp_path / "other")
    (ckpt / "policy_postprocessor.json").unlink()
    with pytest.raises(CheckpointError, match="policy_postprocessor.json is missing"):
        lp.read_processors(ckpt)


def test_stats_check_missing_unmatched_partial(tmp_path):
    ckpt = layout.write_checkpoint(tmp_path / "nostats", stats=None)
    spec = lp.read_processors(ckpt)
    assert "state_file" not in spec.preprocessor.find("normalizer_processor").entry
    normalizer = spec.normalizer
    check = norm.check_stats(normalizer.features, normalizer.norm_map, normalizer.stats)
    assert check.status == "missing" and check.needed == ("observation.state", "action")
    assert "--stats" in check.message

    base = {"so100-blue.buffer.action": {"mean": torch.zeros(6), "std": torch.ones(6)},
            "so100-blue.buffer.observation.state": {"mean": torch.zeros(6), "std": torch.ones(6)}}
    check = norm.check_stats(normalizer.features, normalizer.norm_map, base)  # lerobot/smolvla_base's keys
    assert check.status == "unmatched" and "identity" in check.message

    stats = layout.dataset_stats()
    del stats["action"]
    check = norm.check_stats(normalizer.features, normalizer.norm_map, stats)
    assert check.status == "partial" and check.missing == ("action",)
    assert norm.check_stats(normalizer.features, normalizer.norm_map, layout.dataset_stats()).status == "ok"

    bad = layout.dataset_stats(state_dim=6)
    with pytest.raises(CheckpointError, match="observation.state.mean"):
        norm.check_stats(normalizer.features, normalizer.norm_map, bad)


def test_mean_std_and_min_max_match_lerobot_formulas():
    x = torch.tensor([[0.5, -2.0, 3.0]])
    s = {"mean": torch.tensor([0.1, 0.2, 0.3]), "std": torch.tensor([2.0, 0.0, 1.0]),
         "min": torch.tensor([-1.0, 1.0, 0.0]), "max": torch.tensor([1.0, 1.0, 4.0]),
         "q01": torch.tensor([-1.0, 0.0, 0.0]), "q99": torch.tensor([1.0, 2.0, 4.0])}
    torch.testing.assert_close(norm.normalize(x, s, "MEAN_STD"), (x - s["mean"]) / (s["std"] + 1e-8))
    assert norm.normalize(x, s, "MEAN_STD")[0, 1].item() == pytest.approx(-2.2 / 1e-8, rel=1e-6)
    torch.testing.assert_close(norm.unnormalize(x, s, "MEAN_STD"), x * s["std"] + s["mean"])  # no eps
    mm = norm.normalize(x, s, "MIN_MAX")
    expected = torch.tensor([[0.5, 2 * (-3.0) / 1e-8 - 1, 0.5]])  # max==min: denominator eps, not +eps
    torch.testing.assert_close(mm, expected)
    torch.testing.assert_close(norm.unnormalize(mm, s, "MIN_MAX")[:, [0, 2]], x[:, [0, 2]])
    legacy = norm.normalize(x, s, "MIN_MAX", legacy_min_max=True)
    torch.testing.assert_close(legacy[0, 0], (x[0, 0] + 1) / (2 + 1e-8) * 2 - 1)
    torch.testing.assert_close(norm.normalize(x, s, "QUANTILES"), torch.tensor([[0.5, -3.0, 0.5]]))
    assert norm.normalize(x, s, "IDENTITY") is x
    with pytest.raises(CheckpointError, match="q10"):
        norm.normalize(x, s, "QUANTILE10")
    with pytest.raises(CheckpointError, match="Unsupported"):
        norm.normalize(x, s, "ZSCORE")


def test_normalisation_runs_in_the_input_dtype():
    """LeRobot moves the stats to x's dtype first, so in bf16 the eps vanishes (L318-321)."""
    x = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    s = {"mean": torch.tensor([0.5, 0.5]), "std": torch.tensor([0.3, 3.0])}
    out = norm.normalize(x, s, "MEAN_STD")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (x - s["mean"].bfloat16()) / (s["std"].bfloat16() + 1e-8))


def test_normalizer_spec_apply_uses_feature_type_and_keys(tmp_path):
    ckpt, stats = _ckpt(tmp_path)
    spec = lp.read_processors(ckpt)
    state, s = torch.randn(2, 8), stats["observation.state"]
    torch.testing.assert_close(spec.normalizer.apply("observation.state", state), (state - s["mean"]) / (s["std"] + 1e-8))
    img = torch.rand(2, 3, 256, 256)
    assert spec.normalizer.apply("observation.images.image", img) is img  # VISUAL: IDENTITY
    a = torch.randn(2, 50, 7)
    torch.testing.assert_close(spec.unnormalizer.apply("action", a, inverse=True),
                               a * stats["action"]["std"] + stats["action"]["mean"])
    only = norm.NormalizerSpec(features=spec.normalizer.features, norm_map=spec.normalizer.norm_map,
                             stats=spec.normalizer.stats, normalize_observation_keys=())
    assert only.mode("observation.state") == "IDENTITY" and only.mode("action") == "MEAN_STD"


def test_legacy_buffers_are_extracted_and_accounted_for():
    feats = {"observation.images.wrist_image": norm.Feature(type="VISUAL", shape=(3, 256, 256)),
             "observation.state": norm.Feature(type="STATE", shape=(8,)),
             "action": norm.Feature(type="ACTION", shape=(7,))}
    t = {
        "model.state_proj.weight": torch.zeros(960, 32),
        "normalize_inputs.buffer_observation_state.mean": torch.full((8,), 0.5),
        "normalize_inputs.buffer_observation_state.std": torch.full((8,), 2.0),
        "normalize_inputs.buffer_observation_images_wrist_image.mean": torch.zeros(3, 1, 1),
        "normalize_targets.buffer_action.mean": torch.full((7,), 1.0),
        "normalize_targets.buffer_action.std": torch.full((7,), 3.0),
        "unnormalize_outputs.buffer_action.mean": torch.full((7,), 1.5),
        "unnormalize_outputs.buffer_action.std": torch.full((7,), 4.0),
        "normalize_inputs.so100_buffer_observation_state.mean": torch.zeros(6),
    }
    legacy = norm.extract_legacy_stats(t, feats)
    assert set(legacy.consumed) == set(t) - {"model.state_proj.weight"}
    assert legacy.unmatched == ("normalize_inputs.so100_buffer_observation_state",)
    assert legacy.inputs["observation.state"]["std"][0] == 2.0
    assert "observation.images.wrist_image" in legacy.inputs  # not mangled to wrist.image
    assert legacy.pre["action"]["mean"][0] == 1.0 and legacy.post["action"]["mean"][0] == 1.5
    norm_map = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    assert norm.check_stats(feats, norm_map, legacy.pre).status == "ok"
    never_set = {"observation.state": {"mean": torch.full((8,), torch.inf), "std": torch.full((8,), torch.inf)}}
    assert norm.check_stats(feats, norm_map, never_set).status == "missing"  # +inf: stats were never set
    assert norm.check_stats(feats, {"STATE": "IDENTITY"}, {}).status == "ok"  # nothing to normalise


def test_stats_file_formats(tmp_path):
    stats = layout.dataset_stats()
    save_file(layout.flat_stats(stats), tmp_path / "s.safetensors")
    from_st = norm.load_stats_file(tmp_path / "s.safetensors")
    torch.testing.assert_close(from_st["observation.state"]["mean"], stats["observation.state"]["mean"])
    # meta/stats.json as LeRobot's write_stats writes it: nested lists, images (3,1,1), count [n]
    root = tmp_path / "dataset"
    (root / "meta").mkdir(parents=True)
    doc = {k: {s: v.tolist() for s, v in sub.items()} for k, sub in stats.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(doc, indent=4, ensure_ascii=False))
    for source in (root, root / "meta" / "stats.json"):
        got = norm.load_stats_file(source)
        assert got["observation.images.image"]["mean"].shape == (3, 1, 1)
        assert got["action"]["count"].tolist() == [1234.0] and got["action"]["std"].dtype == torch.float32
        torch.testing.assert_close(got["action"]["std"], stats["action"]["std"])
    (tmp_path / "bad.json").write_text('{"action": {"mean": ["a"]}}')
    with pytest.raises(CheckpointError, match="non-numeric"):
        norm.load_stats_file(tmp_path / "bad.json")
    (tmp_path / "s.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="safetensors or a .json"):
        norm.load_stats_file(tmp_path / "s.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        norm.load_stats_file(tmp_path / "nope.json")


def test_with_stats_replaces_the_state_files(tmp_path):
    ckpt = layout.write_checkpoint(tmp_path / "ckpt", stats=None)
    new = layout.dataset_stats(seed=3)
    spec = lp.read_processors(ckpt).with_stats(pre=new, post=new)
    lp.write_processors(tmp_path / "out", spec)
    written = load_file(tmp_path / "out" / "policy_preprocessor_step_5_normalizer_processor.safetensors")
    assert set(written) == set(layout.flat_stats(new))
    # The result is what lerobot-train writes when given these stats.
    ref = layout.write_checkpoint(tmp_path / "ref", stats=new)
    assert _files(tmp_path / "out") == _files(ref)
    empty_post = lp.Pipeline(name="policy_postprocessor", steps=())
    with pytest.raises(CheckpointError, match="unnormalizer_processor"):
        lp.ProcessorSpec(preprocessor=spec.preprocessor, postprocessor=empty_post).with_stats(post=new)


def test_tokenizer_artifact_of_newer_lerobot(tmp_path):
    """lerobot >= 0.6 saves the tokenizer beside the checkpoint and records it under "artifacts"."""
    ckpt, _ = _ckpt(tmp_path)

    def add_artifact(steps):
        steps[3]["config"]["tokenizer_name"] = "tokenizer"
        steps[3]["artifacts"] = {"tokenizer_name": "tokenizer"}

    _edit_pre(ckpt, add_artifact)
    spec = lp.read_processors(ckpt)
    assert spec.tokenizer.local_dir == Path("tokenizer")
    lp.write_processors(tmp_path / "out", spec)
    assert _files(tmp_path / "out") == _files(ckpt)


def test_config_layout_matches_lerobot_field_order():
    cfg = layout.smolvla_config()
    keys = list(cfg)
    assert keys[0] == "type" and keys[1:13] == ["n_obs_steps", "input_features", "output_features", "device",
                                                 "use_amp", "use_peft", "push_to_hub", "repo_id", "private",
                                                 "tags", "license", "pretrained_path"]
    assert keys[-3:] == ["rtc_config", "compile_model", "compile_mode"] and len(keys) == 51
    old = layout.smolvla_config(lerobot_version="0.4.2")
    assert "use_peft" not in old and "compile_mode" not in old and len(old) == 48
    world = layout.smolvla_world_config(overrides={"world_rollout_temporal_window": 4})
    assert world["type"] == "smolvla_world" and world["push_to_hub"] is False
    assert list(world)[:51] == keys and list(world)[51:] == list(layout.WORLD_FIELDS)
    assert world["world_rollout_temporal_window"] == 4
    with pytest.raises(KeyError):
        layout.smolvla_config(overrides={"chunk_sise": 10})
    text = json.dumps(cfg, indent=4)
    assert '"min_period": 0.004' in text and '"scheduler_decay_lr": 2.5e-06' in text


@pytest.mark.parametrize("world", [False, True])
def test_built_spec_equals_what_lerobot_train_writes(tmp_path, world):
    """``smolvla_spec`` (used to save legacy checkpoints in the current layout) matches LeRobot's files."""
    cfg = layout.smolvla_world_config() if world else layout.smolvla_config()
    stats = layout.dataset_stats()
    ref = layout.write_checkpoint(tmp_path / "ref", world=world, config=cfg, stats=stats)

    def feats(d):
        return {k: norm.Feature(type=v["type"], shape=tuple(v["shape"])) for k, v in d.items()}

    spec = lp.smolvla_spec(input_features=feats(cfg["input_features"]), output_features=feats(cfg["output_features"]),
                           norm_map=cfg["normalization_mapping"], tokenizer_name=cfg["vlm_model_name"],
                           max_length=cfg["tokenizer_max_length"], padding=cfg["pad_language_to"], stats=stats,
                           device="cuda", world=world)
    lp.write_processors(tmp_path / "out", spec)
    assert _files(tmp_path / "out") == _files(ref)


def test_smolvla_base_style_stats_read_from_files_are_unmatched(tmp_path):
    """lerobot/smolvla_base's state files are keyed ``so100-blue.buffer.action.mean`` (a migration artefact)."""
    base = {f"{ds}.buffer.{f}": {"mean": torch.zeros(6), "std": torch.ones(6)}
            for ds in ("so100-blue", "so100-red") for f in ("action", "observation.state")}
    cfg = layout.smolvla_config(input_features=layout.features(state_dim=6, action_dim=6)[0],
                                output_features=layout.features(state_dim=6, action_dim=6)[1])
    ckpt = layout.write_checkpoint(tmp_path / "base", config=cfg, stats=base)
    normalizer = lp.read_processors(ckpt).normalizer
    assert "so100-blue.buffer.observation.state" in normalizer.stats  # the stat is after the last dot
    check = norm.check_stats(normalizer.features, normalizer.norm_map, normalizer.stats)
    assert check.status == "unmatched" and check.missing == ("observation.state", "action")
    state = torch.randn(1, 6)
    assert normalizer.apply("observation.state", state) is state  # what LeRobot silently does
