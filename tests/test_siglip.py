"""SmolVLM2 vision tower and connector against transformers 5.23 (the numerical reference)."""

import dataclasses

import pytest
import torch

from vlaworld.models.siglip import (
    CONFIGS,
    ConnectorConfig,
    ImageEncoder,
    ImageEncoderConfig,
    VisionConfig,
    VisionTransformer,
    from_name,
    pixel_shuffle,
)

smolvlm = pytest.importorskip("transformers.models.smolvlm.modeling_smolvlm")
from transformers.models.smolvlm.configuration_smolvlm import SmolVLMConfig, SmolVLMVisionConfig  # noqa: E402

# Verbatim vision_config of HuggingFaceTB/SmolVLM2-500M-Video-Instruct config.json (model_facts §1.1).
REAL_VISION_JSON = {
    "hidden_size": 768,
    "image_size": 512,
    "max_image_size": {"longest_edge": 512},
    "model_type": "smolvlm_vision",
    "num_attention_heads": 12,
    "patch_size": 16,
    "size": {"longest_edge": 2048},
    "tie_word_embeddings": False,
    "use_base_siglip": False,
}
REAL_JSON = {
    "model_type": "smolvlm",
    "scale_factor": 4,
    "text_config": {"hidden_size": 960},
    "vision_config": REAL_VISION_JSON,
}


def _hf_configs(cfg: ImageEncoderConfig, attn: str) -> tuple[SmolVLMVisionConfig, SmolVLMConfig]:
    v = cfg.vision
    vision = SmolVLMVisionConfig(**{f.name: getattr(v, f.name) for f in dataclasses.fields(v) if f.init})
    vision._attn_implementation = attn
    full = SmolVLMConfig(
        vision_config=vision.to_dict(), scale_factor=cfg.connector.scale_factor,
        text_config={"model_type": "llama", "hidden_size": cfg.connector.text_hidden_size,
                     "num_attention_heads": 4},
    )
    return vision, full


def _randomize(module: torch.nn.Module) -> None:
    """Perturb every parameter so zero biases or unit LayerNorm weights cannot hide a swapped name."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def _pair(cfg: ImageEncoderConfig, attn: str = "eager"):
    torch.manual_seed(0)
    hf_vision_cfg, hf_cfg = _hf_configs(cfg, attn)
    hf_vision = smolvlm.SmolVLMVisionTransformer(hf_vision_cfg).eval()
    hf_connector = smolvlm.SmolVLMConnector(hf_cfg).eval()
    _randomize(hf_vision)
    _randomize(hf_connector)
    with torch.device("meta"):
        ours = ImageEncoder(cfg)
    # Keys match by name alone: HF's modules fill ours through a pure prefix.
    ours.vision_model.load_state_dict(hf_vision.state_dict(), strict=True, assign=True)
    ours.connector.load_state_dict(hf_connector.state_dict(), strict=True, assign=True)
    return hf_vision, hf_connector, ours.eval()


def _with_scale(scale: int) -> ImageEncoderConfig:
    cfg = CONFIGS["debug"]
    return dataclasses.replace(cfg, connector=dataclasses.replace(cfg.connector, scale_factor=scale))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("scale", [2, 4])
def test_parity_float32(scale: int, attn: str) -> None:
    cfg = _with_scale(scale)
    hf_vision, hf_connector, ours = _pair(cfg, attn)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref_feats = hf_vision(pixel_values=x).last_hidden_state
        ref_tokens = hf_connector(ref_feats)
        feats = ours.vision_model(x)
        tokens = ours.embed_images(x)
    assert feats.shape == (2, 16, 32)  # 4² patches of width 32
    assert tokens.shape == (2, cfg.tokens_per_image, 64) == (2, 16 // scale**2, 64)
    assert (feats - ref_feats).abs().max().item() <= 1e-5
    assert (tokens - ref_tokens).abs().max().item() <= 1e-5
    assert (ours.connector(ref_feats) - ref_tokens).abs().max().item() <= 1e-5


def test_runs_in_weight_dtype_bf16() -> None:
    """bf16 weights -> bf16 compute, bit-equal to HF's sdpa path (the one LeRobot's default load runs)."""
    hf_vision, hf_connector, ours = _pair(CONFIGS["debug"], attn="sdpa")
    hf_vision, hf_connector, ours = hf_vision.bfloat16(), hf_connector.bfloat16(), ours.bfloat16()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1  # fp32 in, cast inside
    with torch.no_grad():
        ref = hf_connector(hf_vision(pixel_values=x.bfloat16()).last_hidden_state)
        got = ours.embed_images(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, ref)


def test_real_size_position_ids_are_arange() -> None:
    """At 512/16 HF's bucketised NaViT position ids equal arange(1024), so adding the whole table is exact."""
    torch.manual_seed(0)
    hf = smolvlm.SmolVLMVisionEmbeddings(SmolVLMVisionConfig.from_dict(REAL_VISION_JSON))
    _randomize(hf)
    with torch.device("meta"):
        ours = ImageEncoder(CONFIGS["smolvlm2-500m"]).vision_model.embeddings
    ours.load_state_dict(hf.state_dict(), strict=True, assign=True)
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        ref = hf(x, patch_attention_mask=torch.ones(1, 32, 32, dtype=torch.bool))
        got = ours(x)
    assert (got - ref).abs().max().item() <= 1e-5


def test_pixel_shuffle_order() -> None:
    """Token h'*(side/s)+w' holds patches (s*h'+i, s*w'+j) at feature block i*s+j."""
    side, s, d = 4, 2, 3
    grid = torch.arange(side * side, dtype=torch.float32).view(1, side * side, 1).expand(1, side * side, d)
    out = pixel_shuffle(grid.contiguous(), s)  # (1, 4, 12)
    assert out.shape == (1, 4, s * s * d)
    assert out[0, :, ::d].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_real_size_param_counts_on_meta() -> None:
    cfg = from_name("smolvlm2-500m")
    with torch.device("meta"):
        model = ImageEncoder(cfg)
    assert sum(p.numel() for p in model.vision_model.parameters()) == 86_433_024
    assert sum(p.numel() for p in model.connector.parameters()) == 11_796_480
    assert not list(model.buffers())
    assert cfg.tokens_per_image == 64
    assert model.connector.modality_projection.proj.weight.shape == (960, 12288)


def test_state_dict_matches_hf_smolvlm_model_keys() -> None:
    """Real size, on meta: our keys and shapes equal HF SmolVLMModel's vision_model.* and connector.*."""
    text = {"model_type": "llama", "hidden_size": 960, "num_attention_heads": 15, "num_key_value_heads": 5,
            "head_dim": 64, "num_hidden_layers": 1, "intermediate_size": 2560, "vocab_size": 49280}
    with torch.device("meta"):
        hf_cfg = SmolVLMConfig(vision_config=REAL_VISION_JSON, scale_factor=4, text_config=text)
        hf = smolvlm.SmolVLMModel(hf_cfg)
        ours = ImageEncoder(CONFIGS["smolvlm2-500m"])
    hf_shapes = {k: v.shape for k, v in hf.state_dict().items() if not k.startswith("text_model.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == hf_shapes
    assert len(hf_shapes) == 198


def test_from_hf_real_smolvlm2_json() -> None:
    vision = VisionConfig.from_hf(REAL_VISION_JSON)
    assert (vision.num_hidden_layers, vision.intermediate_size) == (12, 3072)
    assert (vision.layer_norm_eps, vision.hidden_act) == (1e-6, "gelu_pytorch_tanh")
    assert vision == CONFIGS["smolvlm2-500m"].vision
    assert ImageEncoderConfig.from_hf(REAL_JSON) == CONFIGS["smolvlm2-500m"]
    no_scale = {k: v for k, v in REAL_JSON.items() if k != "scale_factor"}
    assert ConnectorConfig.from_hf(no_scale).scale_factor == 2  # SmolVLMConfig's class default
    # Our defaults are transformers' class defaults.
    hf_default = SmolVLMVisionConfig()
    for f in dataclasses.fields(VisionConfig):
        if f.init:
            assert getattr(VisionConfig(), f.name) == getattr(hf_default, f.name), f.name


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="hidden_act"):
        VisionConfig.from_hf({**REAL_VISION_JSON, "hidden_act": "quick_gelu"})
    with pytest.raises(ValueError, match="model_type"):
        VisionConfig.from_hf({**REAL_VISION_JSON, "model_type": "siglip_vision_model"})
    with pytest.raises(ValueError, match="pixel-shuffled"):
        _with_scale(3)
    with pytest.raises(KeyError, match="smolvlm2-500m"):
        from_name("smolvlm2_500m")


def test_wrong_image_size_is_a_clear_error() -> None:
    with torch.device("meta"):
        model = VisionTransformer(CONFIGS["debug"].vision)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\].*resize_with_pad"):
        model(torch.zeros(1, 3, 16, 16, device="meta"))
    with pytest.raises(ValueError, match="square"):
        model(torch.zeros(1, 3, 32, 24, device="meta"))
