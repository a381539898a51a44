"""The one ``debug`` size: a tiny SmolVLA (+ world modality) used by the demo, the benchmark and the tests.

What it fixes is the *shape* of every module (the VLM and V-JEPA 2 configs, the padded state/action
widths, the image size, the world fields) and the tokenizer; the runtime schedule (chunk size, actions
per chunk, denoising steps, prompt length) belongs to who runs it: the demo keeps SmolVLA's (50/10/10/48),
the tests a shorter one. The models' own ``CONFIGS["debug"]`` rows are this size's parts
(tests/test_architecture.py checks it). Importing this module needs neither torch nor the models.
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGE = 32  # the resize target (``resize_imgs_with_padding``) and the vision tower's image size

VLM_JSON = {  # a Hugging Face SmolVLM config.json
    "model_type": "smolvlm",
    "scale_factor": 2,
    "tie_word_embeddings": False,
    "image_token_id": 90,
    "vision_config": {
        "model_type": "smolvlm_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 8,
        "image_size": IMAGE,
    },
    "text_config": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-5,
        "vocab_size": 128,
        "hidden_act": "silu",
        "rope_theta": 100000.0,
        "tie_word_embeddings": False,
        "pad_token_id": 2,
    },
}
VJEPA_JSON = {  # a Hugging Face VJEPA2 config.json: 64-pixel patches keep the 256² crop cheap
    "model_type": "vjepa2", "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_ratio": 2.0,
    "patch_size": 64, "tubelet_size": 2, "crop_size": 256, "in_chans": 3, "layer_norm_eps": 1e-6,
    "qkv_bias": True, "hidden_act": "gelu",
}
# config.json fields that shape the policy's modules (the rest: LeRobot's and the plugin's defaults).
POLICY_FIELDS = {"max_state_dim": 12, "max_action_dim": 10, "resize_imgs_with_padding": [IMAGE, IMAGE],
                 "num_vlm_layers": 4}
WORLD_FIELDS = {"world_latent_dim": VJEPA_JSON["hidden_size"], "context_frames": 3, "future_offset": 4,
                "latent_suffix": "m2", "world_inject_num_heads": 2, "prophet_heads": 2}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<global-img>",
                  "<image>"]
WORDS = ("pick up the black bowl next to ramekin and place it on plate between cookie box stove wooden "
         "cabinet top drawer of open put in basket alphabet soup cream cheese").split()


def write_vlm(directory: Path, *, sub_config_dtypes: dict[str, str] | None = None, weights_seed: int | None = None) -> Path:
    """A SmolVLM-layout directory: config.json and a word-level tokenizer (pad ``<|im_end|>`` = 2).

    ``sub_config_dtypes`` ({"vision_config": "bfloat16", ...}) writes ``torch_dtype`` into sub-configs;
    ``weights_seed`` adds a Hugging Face ``model.safetensors`` with random weights (what
    ``load_vlm_weights=true`` reads).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(VLM_JSON))
    for sub, dtype in (sub_config_dtypes or {}).items():
        config[sub]["torch_dtype"] = dtype
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    if weights_seed is not None:
        _write_vlm_weights(directory, weights_seed)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in ["\n", *WORDS]:
        vocab.setdefault(word, len(vocab))
    vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    for special in SPECIAL_TOKENS:
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


def _write_vlm_weights(directory: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    from vlaworld.models.smolvla import SmolVLM, VLMConfig

    vlm_cfg = VLMConfig.from_hf(VLM_JSON)
    torch.manual_seed(seed)
    vlm = SmolVLM(vlm_cfg, vlm_cfg.text.num_hidden_layers)
    save_file({k: v.contiguous() for k, v in vlm.state_dict().items()}, directory / "model.safetensors",
              metadata={"format": "pt"})


def write_vjepa(directory: Path, *, seed: int) -> Path:
    """A V-JEPA 2 directory in Hugging Face layout (config.json + model.safetensors with random weights;
    a predictor key too, as real files have, which loading drops)."""
    import torch
    from safetensors.torch import save_file

    from vlaworld.models.vjepa2 import VJEPA2Config, VJEPA2Encoder

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(VJEPA_JSON))
    torch.manual_seed(seed)
    enc = VJEPA2Encoder(VJEPA2Config.from_hf(VJEPA_JSON))
    state = {k: v.contiguous() for k, v in enc.state_dict().items()}
    state["predictor.embeddings.mask_tokens"] = torch.zeros(1, 1, VJEPA_JSON["hidden_size"])
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory
