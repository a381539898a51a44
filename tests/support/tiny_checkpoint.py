"""Tiny checkpoints on disk in LeRobot's exact layout, plus a tiny SmolVLM directory (config + tokenizer).

The weights are random, stored with LeRobot's dtype mix (bf16 VLM and expert; fp32 projections and
cross-attention k/v), and the non-weight files come from ``tests/support/lerobot_layout.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

from tests.support import lerobot_layout as layout
from tests.support.tiny_models import IMAGE, TINY_VLM_JSON
from vlaworld.checkpoint.architecture import architecture
from vlaworld.config import PolicyConfig
from vlaworld.models.smolvla import VLMConfig

VLM_REPO = "tiny-org/TinySmolVLM"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<global-img>", "<image>"]
WORDS = ("pick up the black bowl next to ramekin and place it on plate between cookie box stove wooden "
         "cabinet top drawer of open put in basket alphabet soup cream cheese").split()


def write_tiny_vlm(directory: Path, *, weights: bool = False, sub_config_dtypes: dict[str, str] | None = None) -> Path:
    """A SmolVLM-layout directory: config.json, tokenizer.json (word-level, pad <|im_end|> = 2), configs.

    ``weights`` adds a Hugging Face ``model.safetensors`` (what ``load_vlm_weights=true`` reads);
    ``sub_config_dtypes`` ({"vision_config": "bfloat16", ...}) writes ``torch_dtype`` into sub-configs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(TINY_VLM_JSON))
    for sub, dtype in (sub_config_dtypes or {}).items():
        config[sub]["torch_dtype"] = dtype
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    if weights:
        from vlaworld.models.smolvla import SmolVLM

        vlm_cfg = VLMConfig.from_hf(TINY_VLM_JSON)
        torch.manual_seed(1)
        vlm = SmolVLM(vlm_cfg, vlm_cfg.text.num_hidden_layers)
        save_file({k: v.contiguous() for k, v in vlm.state_dict().items()}, directory / "model.safetensors",
                  metadata={"format": "pt"})
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in ["\n", *WORDS]:
        vocab.setdefault(ch, len(vocab))
    vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    for special in SPECIALS:
        tok.add_special_tokens([special])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<|im_end|>", "eos_token": "<|im_end|>",
        "bos_token": "<|im_start|>", "unk_token": "[UNK]", "truncation_side": "left", "model_max_length": 8192,
        # SmolVLM's tokenizer names its image tokens; SmolVLA reads fake_image_token_id/global_image_token_id.
        "extra_special_tokens": {
            "fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
            "image_token": "<image>", "end_of_utterance_token": "<|im_end|>",
        },
    }))
    (directory / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<|im_end|>"}))
    return directory


def tiny_config_json(world: bool = False, **overrides) -> dict:
    inputs, outputs = layout.features(image_shape=(3, 16, 16))
    base = dict(
        chunk_size=6, n_action_steps=3, max_state_dim=12, max_action_dim=10, resize_imgs_with_padding=[IMAGE, IMAGE],
        tokenizer_max_length=8, num_steps=4, num_vlm_layers=4, vlm_model_name=VLM_REPO,
    )
    base.update(overrides)
    make = layout.smolvla_world_config if world else layout.smolvla_config
    return make(input_features=inputs, output_features=outputs, overrides=base)


def lerobot_dtypes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cast to LeRobot's stored mix: fp32 for model.action_*, model.state_proj and the CA k/v; bf16 else."""
    out = {}
    for key, t in state.items():
        fp32 = key.startswith(("model.action_", "model.state_proj")) or (
            ".lm_expert." in key and key.endswith(("k_proj.weight", "v_proj.weight")) and t.shape[0] == t.shape[1]
        )
        out[key] = t.to(torch.float32 if fp32 else torch.bfloat16).contiguous()
    return out


def write_tiny_checkpoint(directory: Path, *, seed: int = 0, stats: bool = True, config: dict | None = None) -> Path:
    """A complete ``pretrained_model/`` directory for a tiny smolvla policy."""
    cfg_json = config or tiny_config_json()
    pstats = layout.dataset_stats(seed=seed) if stats else None
    layout.write_checkpoint(directory, config=cfg_json, stats=pstats)
    arch = architecture(PolicyConfig.from_lerobot(cfg_json), VLMConfig.from_hf(TINY_VLM_JSON))
    torch.manual_seed(seed)
    model = arch.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_file(lerobot_dtypes(model.state_dict()), directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def libero_batch(bsz: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "observation.images.image": torch.randint(0, 256, (bsz, 16, 16, 3), generator=g, dtype=torch.uint8).numpy(),
        "observation.images.image2": torch.randint(0, 256, (bsz, 16, 16, 3), generator=g, dtype=torch.uint8).numpy(),
        "observation.state": torch.randn(bsz, 8, generator=g).numpy(),
        "task": ["pick up the black bowl and place it on the plate", "open the top drawer of the cabinet"][:bsz]
        + ["put the cream cheese in the basket"] * max(0, bsz - 2),
    }


VJEPA_REPO = "tiny-org/TinyVJEPA2"
TINY_VJEPA_JSON = {  # a Hugging Face VJEPA2 config.json: 64-pixel patches keep the 256² crop cheap
    "model_type": "vjepa2", "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_ratio": 2.0,
    "patch_size": 64, "tubelet_size": 2, "crop_size": 256, "in_chans": 3, "layer_norm_eps": 1e-6,
    "qkv_bias": True, "hidden_act": "gelu",
}
WORLD_OVERRIDES = {
    "world_latent_dim": 24, "context_frames": 3, "future_offset": 4, "latent_suffix": "m2",
    "world_inject_num_heads": 2, "prophet_heads": 2, "world_vision_model_name": VJEPA_REPO,
}


def write_tiny_vjepa(directory: Path, seed: int = 0) -> Path:
    """A V-JEPA 2 directory in Hugging Face layout (config.json + model.safetensors, predictor keys too)."""
    from vlaworld.models.vjepa2 import VJEPA2Config, VJEPA2Encoder

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(TINY_VJEPA_JSON))
    torch.manual_seed(seed)
    enc = VJEPA2Encoder(VJEPA2Config.from_hf(TINY_VJEPA_JSON))
    state = {k: v.contiguous() for k, v in enc.state_dict().items()}
    state["predictor.embeddings.mask_tokens"] = torch.zeros(1, 1, 24)  # present in real files, dropped on load
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def write_tiny_world_checkpoint(directory: Path, *, seed: int = 0, gate: float = 0.5, **overrides) -> Path:
    """A complete ``pretrained_model/`` of a tiny smolvla_world policy; ``gate`` is the stored gate param."""
    cfg_json = tiny_config_json(world=True, **{**WORLD_OVERRIDES, **overrides})
    layout.write_checkpoint(directory, world=True, config=cfg_json, stats=layout.dataset_stats(seed=seed))
    arch = architecture(PolicyConfig.from_lerobot(cfg_json), VLMConfig.from_hf(TINY_VLM_JSON))
    torch.manual_seed(seed)
    model = arch.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.model.world_inject.gate.fill_(gate)
    state = lerobot_dtypes({k: v for k, v in model.state_dict().items() if "world_inject" not in k and "prophet" not in k})
    state |= {k: v.float().contiguous() for k, v in model.state_dict().items() if "world_inject" in k or "prophet" in k}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


class TinyFiles(NamedTuple):
    vlm: Path
    ckpt: Path


class TinyWorldFiles(NamedTuple):
    vlm: Path
    vjepa: Path
    ckpt: Path


def write_tiny_files(root: Path) -> TinyFiles:
    return TinyFiles(write_tiny_vlm(root / "vlm"), write_tiny_checkpoint(root / "pretrained_model"))


def write_tiny_world_files(root: Path) -> TinyWorldFiles:
    return TinyWorldFiles(write_tiny_vlm(root / "vlm"), write_tiny_vjepa(root / "vjepa"),
                          write_tiny_world_checkpoint(root / "pretrained_model"))
