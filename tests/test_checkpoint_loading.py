"""Loading tiny checkpoints written in LeRobot's exact layout: round trips and every failure mode."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlaworld
from tests.support import lerobot_layout as layout
from tests.support.tiny_checkpoint import VLM_REPO, libero_batch, tiny_config_json, write_tiny_checkpoint

from vlaworld.checkpoint.architecture import architecture
from vlaworld.config import ConfigError, PolicyConfig
from vlaworld.checkpoint.hub import ModelFilesNotFound
from vlaworld.models.smolvla import VLMConfig
from vlaworld.checkpoint.files import CheckpointError
from vlaworld import debug


def copy_ckpt(tiny_smolvla, tmp_path):
    return shutil.copytree(tiny_smolvla.ckpt, tmp_path / "pretrained_model")


def test_loads_in_lerobots_runtime_dtypes_and_round_trips(tiny_smolvla, tmp_path):
    vlm, ckpt = tiny_smolvla
    policy = vlaworld.load_policy(ckpt, vlm=vlm)  # load_vlm_weights=false: LeRobot builds everything in fp32
    state = policy.model.state_dict()
    stored = load_file(ckpt / "model.safetensors")
    assert set(state) == set(stored)
    assert stored["model.vlm_with_expert.lm_expert.layers.0.self_attn.k_proj.weight"].dtype == torch.bfloat16
    assert all(state[k].dtype == torch.float32 and torch.equal(state[k], stored[k].float()) for k in stored)
    assert policy.config.dtype == "lerobot" and set(policy.config.runtime_dtypes.values()) == {"float32"}

    out = tmp_path / "saved"
    policy.save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ckpt.iterdir())
    for name in ("config.json", "policy_preprocessor.json", "policy_postprocessor.json", "train_config.json"):
        assert (out / name).read_bytes() == (ckpt / name).read_bytes(), name
    for name in ("model.safetensors", "policy_preprocessor_step_5_normalizer_processor.safetensors"):
        a, b = load_file(out / name), load_file(ckpt / name)  # saved in the stored dtypes
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)

    again = vlaworld.load_policy(out, vlm=vlm)
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    assert torch.equal(policy.predict_chunk(batch, noise=noise), again.predict_chunk(batch, noise=noise))


def test_accepts_training_checkpoint_dir_and_compiled_prefix(tiny_smolvla, tmp_path):
    vlm, _ = tiny_smolvla
    ckpt = copy_ckpt(tiny_smolvla, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    save_file({"model._orig_mod." + k[len("model."):]: v for k, v in tensors.items()}, ckpt / "model.safetensors")
    policy = vlaworld.load_policy(tmp_path, vlm=vlm)  # the parent of pretrained_model/
    reference = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=vlm)
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    assert torch.equal(policy.predict_chunk(batch, noise=noise), reference.predict_chunk(batch, noise=noise))


def test_legacy_stats_inside_weights(tiny_smolvla, tmp_path):
    vlm, _ = tiny_smolvla
    ckpt = copy_ckpt(tiny_smolvla, tmp_path)
    stats = load_file(ckpt / "policy_preprocessor_step_5_normalizer_processor.safetensors")
    tensors = load_file(ckpt / "model.safetensors")
    for k in ("mean", "std"):
        tensors[f"normalize_inputs.buffer_observation_state.{k}"] = stats[f"observation.state.{k}"]
        tensors[f"unnormalize_outputs.buffer_action.{k}"] = stats[f"action.{k}"].clone()
        tensors[f"normalize_targets.buffer_action.{k}"] = stats[f"action.{k}"]
    save_file(tensors, ckpt / "model.safetensors")
    for p in ckpt.glob("policy_*"):
        p.unlink()
    legacy = vlaworld.load_policy(ckpt, vlm=vlm)
    current = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=vlm)
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    assert torch.allclose(legacy.predict_chunk(batch, noise=noise), current.predict_chunk(batch, noise=noise), atol=1e-6)
    out = tmp_path / "resaved"
    legacy.save_pretrained(out)
    assert "normalize_inputs.buffer_observation_state.mean" in load_file(out / "model.safetensors")


@pytest.mark.parametrize("problem", ["missing", "unexpected", "shape"])
def test_strict_key_errors_name_the_keys(tiny_smolvla, tmp_path, problem):
    vlm, _ = tiny_smolvla
    ckpt = copy_ckpt(tiny_smolvla, tmp_path)
    tensors = load_file(ckpt / "model.safetensors")
    key = "model.vlm_with_expert.lm_expert.layers.2.mlp.up_proj.weight"
    if problem == "missing":
        del tensors[key]
    elif problem == "unexpected":
        tensors["model.some_new_head.weight"] = torch.zeros(3)
    else:
        tensors[key] = torch.zeros(5, 5, dtype=torch.bfloat16)
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        vlaworld.load_policy(ckpt, vlm=vlm)
    text = str(err.value)
    expected = {"missing": f"missing keys (1):\n    {key}", "unexpected": "unexpected keys (1):\n    model.some_new_head",
                "shape": "shape mismatches (1)"}[problem]
    assert expected in text and "config.json" in text


def test_refuses_to_run_without_normalisation_stats(tiny_smolvla, tmp_path):
    vlm, _ = tiny_smolvla
    ckpt = tmp_path / "nostats"
    write_tiny_checkpoint(ckpt, stats=False)
    with pytest.raises(CheckpointError, match="--stats FILE"):
        vlaworld.load_policy(ckpt, vlm=vlm)
    stats_file = tmp_path / "stats.json"
    stats_file.write_text(json.dumps({k: {s: v.tolist() for s, v in sub.items()} for k, sub in layout.dataset_stats().items()}))
    with_stats = vlaworld.load_policy(ckpt, vlm=vlm, stats=stats_file)
    assert with_stats.config.stats_file == str(stats_file)
    assert with_stats.predict_chunk(libero_batch()).shape == (2, 6, 7)


def test_stats_matching_no_feature_are_refused(tiny_smolvla, tmp_path):
    """lerobot/smolvla_base-style stats (keyed by another dataset) would leave actions in normalised units."""
    vlm, _ = tiny_smolvla
    ckpt = tmp_path / "base"
    write_tiny_checkpoint(ckpt, stats=False)
    stats_file = tmp_path / "so100.json"
    stats_file.write_text(json.dumps({"so100-blue.buffer.action": {"mean": [0.0] * 7, "std": [1.0] * 7}}))
    with pytest.raises(CheckpointError, match=r"so100\.json: cannot normalise .*no stats for 'observation.state'"):
        vlaworld.load_policy(ckpt, vlm=vlm, stats=stats_file)


def test_vlm_not_found_names_repo_flag_and_command(tiny_smolvla, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    with pytest.raises(ModelFilesNotFound) as err:
        vlaworld.load_policy(tiny_smolvla.ckpt)
    text = str(err.value)
    assert VLM_REPO in text and "--vlm" in text and f"huggingface-cli download {VLM_REPO}" in text
    with pytest.raises(ModelFilesNotFound, match="tokenizer.json"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "config.json").write_text("{}")
        vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tmp_path / "half")


def test_vlm_found_in_offline_hf_cache(tiny_smolvla, tmp_path, monkeypatch):
    vlm, ckpt = tiny_smolvla
    snap = tmp_path / "hf" / "hub" / f"models--{VLM_REPO.replace('/', '--')}" / "snapshots" / "abc123"
    shutil.copytree(vlm, snap)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert vlaworld.load_policy(ckpt).config.vlm_dir == str(snap)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("adapt_to_pi_aloha", True, "Aloha"),
        ("attention_mode", "flash_attn", "attention_mode"),
        ("pad_language_to", "left", "pad_language_to"),
        ("num_stepz", 5, "did you mean num_steps"),
        ("n_action_steps", 60, "n_action_steps"),
    ],
)
def test_unknown_or_unsupported_config_values_are_errors(field, value, match):
    cfg = tiny_config_json()
    cfg[field] = value
    with pytest.raises(ConfigError, match=match):
        PolicyConfig.from_lerobot(cfg)


def test_smolvla_refuses_world_memory_modes(tiny_smolvla):
    with pytest.raises(ConfigError, match="plain smolvla"):
        vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, memory="pred")


def test_real_size_model_has_lerobots_parameter_count():
    """SmolVLM2-500M-Video-Instruct's config gives lerobot/smolvla_base's 450,046,176 parameters."""
    vlm_json = {
        "scale_factor": 4,
        "vision_config": {"hidden_size": 768, "image_size": 512, "model_type": "smolvlm_vision",
                          "num_attention_heads": 12, "patch_size": 16},
        "text_config": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                        "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64, "rms_norm_eps": 1e-5,
                        "vocab_size": 49280, "hidden_act": "silu", "rope_theta": 100000},
    }
    inputs, outputs = layout.features(cameras=("observation.image", "observation.image2", "observation.image3"),
                                      state_dim=6, action_dim=6)
    cfg = layout.smolvla_config(input_features=inputs, output_features=outputs, overrides={"pad_language_to": "max_length"})
    with torch.device("meta"):
        model = architecture(PolicyConfig.from_lerobot(cfg), VLMConfig.from_hf(vlm_json)).build()
    state = model.state_dict()
    assert len(state) == 500
    assert sum(p.numel() for p in model.parameters()) == 450_046_176
    assert tuple(state["model.vlm_with_expert.lm_expert.layers.1.self_attn.k_proj.weight"].shape) == (320, 320)
    assert tuple(state["model.vlm_with_expert.lm_expert.layers.0.self_attn.k_proj.weight"].shape) == (320, 720)
    assert tuple(state["model.vlm_with_expert.lm_expert.layers.0.mlp.gate_proj.weight"].shape) == (2048, 720)
    assert not any(".layers.16." in k for k in state)


def test_tiny_vlm_config_json_is_a_real_smolvlm_config():
    from transformers import SmolVLMConfig

    hf = SmolVLMConfig(**debug.VLM_JSON)
    assert VLMConfig.from_hf(hf.to_dict()).text.head_dim == 16


@pytest.mark.parametrize("float_dtype, loads", [("float32", True), ("bfloat16", False), ("float16", False)])
def test_device_processor_float_dtype_is_applied_or_refused(tiny_smolvla, tmp_path, float_dtype, loads):
    """LeRobot casts the inputs to device_processor.float_dtype before normalising; vlaworld runs them in
    float32, so float32 (or null, the default) loads and anything else is refused naming the file."""
    ckpt = copy_ckpt(tiny_smolvla, tmp_path)
    path = ckpt / "policy_preprocessor.json"
    doc = json.loads(path.read_text())
    (step,) = [s for s in doc["steps"] if s["registry_name"] == "device_processor"]
    step["config"]["float_dtype"] = float_dtype
    path.write_text(json.dumps(doc))
    if loads:
        policy = vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)
        reference = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm)
        batch, noise = libero_batch(), torch.randn(2, 6, 10)
        assert torch.equal(policy.predict_chunk(batch, noise=noise), reference.predict_chunk(batch, noise=noise))
    else:
        with pytest.raises(ConfigError, match=f"policy_preprocessor.json device_processor has float_dtype='{float_dtype}'"):
            vlaworld.load_policy(ckpt, vlm=tiny_smolvla.vlm)
