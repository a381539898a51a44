"""V-JEPA 2 world encoder: parity with transformers.VJEPA2Model, strict loading, preprocessing modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vlaworld.checkpoint.hub import ModelFilesNotFound
from vlaworld.checkpoint.files import CheckpointError
from vlaworld.checkpoint.vjepa2 import adapt_hf_keys, load_vjepa2
from vlaworld.models.vjepa2 import CONFIGS, VJEPA2Config, VJEPA2Encoder, param_count
from vlaworld.world.preprocess import IMAGENET_MEAN, IMAGENET_STD, clip_to_float, preprocess_clip

transformers = pytest.importorskip("transformers")

# Tiny HF configs: head_dim 16 (RoPE 4/4/4 + 4 unrotated, like ViT-g's 20/20/20 + 4) and head_dim 12
# (no unrotated tail) on a 4x4 grid; and ViT-g's head geometry (head_dim 64, 16x16 grid of 256² input).
HF_TINY = {
    "hd16": dict(hidden_size=32, num_attention_heads=2, mlp_ratio=48 / 11, num_hidden_layers=2,
                 patch_size=4, crop_size=16),
    "hd12": dict(hidden_size=36, num_attention_heads=3, mlp_ratio=4.0, num_hidden_layers=2,
                 patch_size=4, crop_size=16),
    "hd64": dict(hidden_size=128, num_attention_heads=2, mlp_ratio=48 / 11, num_hidden_layers=1,
                 patch_size=16, crop_size=256),
}


def _hf_model(kind: str) -> transformers.VJEPA2Model:
    cfg = transformers.VJEPA2Config(
        **HF_TINY[kind], tubelet_size=2, frames_per_clip=4,
        pred_hidden_size=16, pred_num_attention_heads=2, pred_num_hidden_layers=1, pred_num_mask_tokens=2,
    )
    torch.manual_seed(0)
    model = transformers.VJEPA2Model(cfg).eval()
    with torch.no_grad():  # larger-than-init weights so attention is peaked and RoPE errors show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    return model


def _saved(kind: str, tmp_path_factory) -> tuple[transformers.VJEPA2Model, Path]:
    """A tiny VJEPA2Model saved in HF layout (config.json + model.safetensors, predictor included)."""
    model = _hf_model(kind)
    path = tmp_path_factory.mktemp(f"vjepa2_{kind}")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module", params=sorted(HF_TINY))
def hf_dir(request, tmp_path_factory):
    return _saved(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return _saved("hd16", tmp_path_factory)


@pytest.mark.parametrize("m", [4, 1, 3])
def test_parity_with_transformers(hf_dir, m):
    hf, path = hf_dir
    ours = load_vjepa2(path, repo_id="test/tiny-vjepa2")
    torch.manual_seed(m)
    S, grid = hf.config.crop_size, hf.config.crop_size // hf.config.patch_size
    clip = torch.randn(2, m, 3, S, S)
    with torch.no_grad():
        ref = hf(pixel_values_videos=clip, skip_predictor=True).last_hidden_state  # HF default: sdpa
        hf.set_attn_implementation("eager")
        ref_eager = hf(pixel_values_videos=clip, skip_predictor=True).last_hidden_state
        hf.set_attn_implementation("sdpa")
        got = ours.forward_features(clip)
        z = ours.encode(clip)
    n_tubelets = max(m, 2) // 2  # T=1 repeated to one tubelet, odd T floors
    assert got.shape == ref.shape == (2, n_tubelets * grid**2, hf.config.hidden_size)
    err, err_eager = (got - ref).abs().max().item(), (got - ref_eager).abs().max().item()
    print(f"max-abs |ours - HF| hidden={hf.config.hidden_size} m={m}: sdpa {err:.2e}, eager {err_eager:.2e}")
    assert err <= 1e-5 and err_eager <= 1e-5
    assert (z - ref.mean(dim=1)).abs().max().item() <= 1e-5
    assert z.dtype == torch.float32 and z.shape == (2, hf.config.hidden_size)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_follows_transformers(hf_dir, dtype):
    """In half precision HF rotates by half-precision angles and pools in the model dtype; the plugin's
    latents were made that way (fp16), so ours must do the same, not the more accurate float32 angles."""
    hf, path = hf_dir
    ours = load_vjepa2(path, repo_id="test/tiny-vjepa2", dtype=dtype)
    half = _hf_model_copy(hf, dtype)
    torch.manual_seed(3)
    S = hf.config.crop_size
    clip = torch.randn(2, 4, 3, S, S).to(dtype)
    with torch.no_grad():
        ref = half(pixel_values_videos=clip, skip_predictor=True).last_hidden_state
        got = ours.forward_features(clip)
        z = ours.encode(clip)
    assert got.dtype == dtype
    assert torch.equal(got, ref)
    assert torch.equal(z, ref.mean(dim=1).float())


def _hf_model_copy(hf: transformers.VJEPA2Model, dtype: torch.dtype) -> transformers.VJEPA2Model:
    copy = transformers.VJEPA2Model(hf.config).eval()
    copy.load_state_dict(hf.state_dict())
    return copy.to(dtype)


def test_file_holds_predictor_and_it_is_dropped(tiny_dir):
    _, path = tiny_dir
    keys = load_file(path / "model.safetensors").keys()
    assert any(k.startswith("predictor.") for k in keys)
    ours = load_vjepa2(path, repo_id="test/tiny-vjepa2")
    assert not any(k.startswith("predictor.") for k in ours.state_dict())
    assert set(ours.state_dict()) == {k for k in keys if k.startswith("encoder.")}  # identity key map
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())


def test_sharded_checkpoint_and_dtype(tmp_path):
    hf = _hf_model("hd16")
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ours = load_vjepa2(tmp_path, repo_id="test/tiny-vjepa2")
    clip = torch.randn(1, 4, 3, 16, 16)
    with torch.no_grad():
        ref = hf(pixel_values_videos=clip, skip_predictor=True).last_hidden_state
        assert (ours.forward_features(clip) - ref).abs().max().item() <= 1e-5
        half = load_vjepa2(tmp_path, repo_id="test/tiny-vjepa2", dtype=torch.bfloat16)
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
        assert (half.encode(clip) - ref.mean(dim=1)).abs().max().item() < 0.1


def test_vit_giant_param_count_on_meta():
    cfg = CONFIGS["vit_giant"]
    geometry = (cfg.hidden, cfg.layers, cfg.heads, cfg.head_dim, cfg.mlp_hidden, cfg.rope_dim)
    assert geometry == (1408, 40, 22, 64, 6144, 20)
    with torch.device("meta"):
        model = VJEPA2Encoder(cfg)
    assert sum(p.numel() for p in model.parameters()) == 1_012_173_952 == param_count(cfg)
    assert sum(p.numel() for p in model.encoder.layer[0].parameters()) == 25_250_176
    assert list(model.buffers()) == []  # nothing a meta build + assign=True load could miss


def test_configs_table_and_from_hf():
    assert next(iter(CONFIGS)) == "debug"
    cfg = VJEPA2Config.from_hf(
        {"model_type": "vjepa2", "hidden_size": 1408, "num_hidden_layers": 40, "num_attention_heads": 22,
         "mlp_ratio": 48 / 11, "patch_size": 16, "tubelet_size": 2, "crop_size": 256, "frames_per_clip": 64,
         "layer_norm_eps": 1e-6, "qkv_bias": True, "hidden_act": "gelu", "pred_hidden_size": 384}
    )
    assert cfg == CONFIGS["vit_giant"]
    with pytest.raises(ValueError, match="hidden_act"):
        VJEPA2Config.from_hf({"hidden_act": "silu"})
    with pytest.raises(KeyError, match="vit_giant"):
        VJEPA2Config.from_name("vit_gaint")
    with pytest.raises(TypeError):
        VJEPA2Config(1408, 40, 22)  # keyword-only


def test_encoder_rejects_other_input_sizes():
    model = VJEPA2Encoder(CONFIGS["debug"])
    with pytest.raises(ValueError, match=r"\[B, T, 3, 256, 256\].*vlaworld.world.preprocess"):
        model.encode(torch.zeros(1, 4, 3, 32, 32))


def _tamper(src, dst, change):
    """Copy an HF dir, applying ``change`` to its tensors."""
    tensors = dict(load_file(src / "model.safetensors"))
    change(tensors)
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    save_file(tensors, dst / "model.safetensors")
    return dst


def test_strict_load_errors_are_readable(tiny_dir, tmp_path):
    _, path = tiny_dir
    missing = _tamper(path, tmp_path / "missing", lambda t: t.pop("encoder.layer.1.mlp.fc2.bias"))
    with pytest.raises(CheckpointError, match=r"(?s)missing keys \(1\).*encoder\.layer\.1\.mlp\.fc2\.bias"):
        load_vjepa2(missing, repo_id="test/tiny-vjepa2")
    extra = _tamper(path, tmp_path / "extra", lambda t: t.update({"encoder.layer.9.norm1.weight": torch.ones(3)}))
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys \(1\).*encoder\.layer\.9\.norm1\.weight"):
        load_vjepa2(extra, repo_id="test/tiny-vjepa2")
    shaped = _tamper(path, tmp_path / "shaped", lambda t: t.update({"encoder.layernorm.weight": torch.ones(5)}))
    with pytest.raises(CheckpointError, match=r"(?s)shape mismatches \(1\).*encoder\.layernorm\.weight: file \(5,\)"):
        load_vjepa2(shaped, repo_id="test/tiny-vjepa2")


def test_classification_layout_is_detected(tiny_dir, tmp_path):
    hf, path = tiny_dir
    tensors = {f"vjepa2.{k}": v for k, v in load_file(path / "model.safetensors").items()}
    tensors |= {"pooler.query_tokens": torch.zeros(1, 1, 4), "classifier.weight": torch.zeros(2, 4)}
    renamed, drop = adapt_hf_keys(tensors)
    assert "encoder.layernorm.weight" in renamed and r"classifier\..*" in drop
    d = _tamper(path, tmp_path / "cls", lambda t: (t.clear(), t.update(tensors)))
    ours = load_vjepa2(d, repo_id="test/tiny-vjepa2")
    assert torch.equal(ours.encoder.layernorm.weight, hf.encoder.layernorm.weight.detach())


def test_not_found_names_repo_and_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ModelFilesNotFound, match=r"(?s)facebook/vjepa2-vitg-fpc64-256.*--world-encoder"):
        load_vjepa2(None, repo_id="facebook/vjepa2-vitg-fpc64-256")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "vjepa2"}))
    with pytest.raises(ModelFilesNotFound, match=r"(?s)model\.safetensors.*--world-encoder"):
        load_vjepa2(no_weights, repo_id="facebook/vjepa2-vitg-fpc64-256")


# --- preprocessing -------------------------------------------------------------------------------

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)


def _frames(b, m, h, w, seed=0):
    return torch.randint(0, 256, (b, m, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_default_on_dataset_frames_is_plain_normalisation():
    u8 = _frames(2, 4, 256, 256)
    x01 = u8.permute(0, 1, 4, 2, 3).float() / 255.0  # what LeRobotDataset hands the precompute script
    out = preprocess_clip(u8, "default")
    assert out.shape == (2, 4, 3, 256, 256) and out.dtype == torch.float32
    same = F.interpolate(x01.flatten(0, 1), size=(256, 256), mode="bilinear", align_corners=False)
    assert torch.equal(same, x01.flatten(0, 1))  # 256->256 bilinear is an exact identity, so it is skipped
    assert torch.equal(out, (x01 - MEAN) / STD)
    torch.testing.assert_close(preprocess_clip(x01, "default"), out, atol=0, rtol=0)  # float CHW == uint8 HWC
    torch.testing.assert_close(preprocess_clip(u8.numpy(), "default"), out, atol=0, rtol=0)  # numpy accepted


def test_default_resizes_other_sizes_bilinear():
    u8 = _frames(1, 2, 128, 128)
    x01 = clip_to_float(u8)
    want = F.interpolate(x01.flatten(0, 1), size=(256, 256), mode="bilinear", align_corners=False)
    out = preprocess_clip(u8, "default")
    torch.testing.assert_close(out, (want.unflatten(0, (1, 2)) - MEAN) / STD, atol=1e-6, rtol=0)


def test_legacy_is_the_512_round_trip():
    u8 = _frames(2, 4, 256, 256, seed=1)
    x = clip_to_float(u8).flatten(0, 1)
    up = F.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
    back = F.interpolate(up, size=(256, 256), mode="bilinear", align_corners=False).unflatten(0, (2, 4))
    legacy = preprocess_clip(u8, "legacy")
    assert legacy.shape == (2, 4, 3, 256, 256)
    torch.testing.assert_close(legacy, (back - MEAN) / STD, atol=1e-5, rtol=0)
    assert (legacy - preprocess_clip(u8, "default")).abs().max() > 0.05  # the modes really differ


def test_legacy_pads_left_and_top_like_smolvla():
    x = torch.ones(1, 1, 3, 128, 256)  # wide frame: resize_with_pad puts the padding on top
    out = preprocess_clip(x, "legacy")
    pad, image = ((0.0 - MEAN) / STD).view(3, 1), ((1.0 - MEAN) / STD).view(3, 1)  # pad is 0 in [0,1], −1 for SigLIP
    torch.testing.assert_close(out[0, 0, :, :60, 10], pad.expand(3, 60), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0, 0, :, -60:, 10], image.expand(3, 60), atol=1e-6, rtol=0)


def test_legacy_follows_the_checkpoints_resize():
    """The plugin took SmolVLA's image as the checkpoint prepared it: its resize_imgs_with_padding, or none."""
    u8 = _frames(1, 2, 256, 256, seed=2)
    x = clip_to_float(u8).flatten(0, 1)
    for size in ((384, 384), (320, 160)):  # (width, height) as LeRobot passes it
        w, h = size
        ratio = max(256 / w, 256 / h)
        inner = F.interpolate(x, size=(int(256 / ratio), int(256 / ratio)), mode="bilinear", align_corners=False)
        padded = F.pad(inner, (w - inner.shape[-1], 0, h - inner.shape[-2], 0), value=0.0)
        want = F.interpolate(padded, size=(256, 256), mode="bilinear", align_corners=False).unflatten(0, (1, 2))
        torch.testing.assert_close(preprocess_clip(u8, "legacy", smolvla_size=size), (want - MEAN) / STD,
                                   atol=1e-5, rtol=0)
    # No resize: x*2-1 then back to [0,1] changes nothing but rounding.
    torch.testing.assert_close(preprocess_clip(u8, "legacy", smolvla_size=None), preprocess_clip(u8, "default"),
                               atol=1e-6, rtol=0)


def test_preprocess_rejects_ambiguous_layouts():
    with pytest.raises(ValueError, match="channels-last"):
        preprocess_clip(torch.zeros(1, 4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels-first"):
        preprocess_clip(torch.zeros(1, 4, 16, 16, 3))
    with pytest.raises(ValueError, match="default, legacy"):
        preprocess_clip(torch.zeros(1, 4, 3, 16, 16), "raw")
    with pytest.raises(ValueError, match=r"\[B, m"):
        preprocess_clip(np.zeros((4, 16, 16, 3), dtype=np.uint8))


def test_preprocess_feeds_the_encoder():
    model = VJEPA2Encoder(CONFIGS["debug"]).eval()
    clip = preprocess_clip(_frames(2, 4, 32, 32), "default", size=256)
    with torch.no_grad():
        z = model.encode(clip)
    assert z.shape == (2, 24) and torch.isfinite(z).all()
