"""SmolVLM2 image path in plain PyTorch: the SigLIP-style vision tower and the pixel-shuffle connector.

Numerically this is transformers 5.23's ``SmolVLMVisionTransformer`` followed by ``SmolVLMConnector``
(``reference/model_facts.md`` §1), restricted to what SmolVLA feeds it: full square images of
``image_size`` with no patch mask. The NaViT bucketised position ids then reduce to ``arange(N)`` in
transformers 5, so by default the learned position table is added whole and no buffer is kept; the model
can be built on the meta device and filled with ``load_state_dict(..., assign=True)``. transformers
4.55.1-4.57.x (LeRobot 0.4.x) compute other ids for float32 pixels (``transformers_457_position_ids``);
``VisionEmbeddings.set_position_ids`` installs them (``vlaworld.config.numerics``).

Notable choices:
- Submodule names equal the Hugging Face key suffixes (``vision_model.encoder.layers.{i}.self_attn.q_proj``,
  ``connector.modality_projection.proj``), so a checkpoint key map is a pure prefix.
- The model runs in the dtype of its weights (LeRobot runs the VLM in bf16); inputs are cast to it.
- Attention uses ``F.scaled_dot_product_attention``: LeRobot loads the VLM without naming an attention
  implementation, so transformers picks ``sdpa``. Ours is bit-equal to HF ``sdpa`` (fp32 and bf16) and
  within float32 rounding of HF ``eager`` (~1e-6 on the debug config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlaworld.models.registry import lookup

# hidden_act name in the HF config -> the ``approximate`` argument of F.gelu (HF ACT2FN semantics).
GELU_APPROXIMATE = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}


@dataclass(frozen=True, kw_only=True)
class VisionConfig:
    """The vision tower; field names and defaults are those of transformers 5.23 ``SmolVLMVisionConfig``."""

    hidden_size: int = 1152
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    patch_size: int = 32
    image_size: int = 224
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    num_channels: int = 3
    head_dim: int = field(init=False, repr=False)
    patches_per_side: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"VisionConfig.{name} must be an int (square images), "
                                 f"got {getattr(self, name)!r}")
        if self.hidden_act not in GELU_APPROXIMATE:
            raise ValueError(f"unsupported vision hidden_act {self.hidden_act!r}; "
                             f"supported: {sorted(GELU_APPROXIMATE)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"{self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        object.__setattr__(self, "patches_per_side", self.image_size // self.patch_size)

    @property
    def num_patches(self) -> int:
        return self.patches_per_side**2

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> VisionConfig:
        """Read the ``vision_config`` of a SmolVLM ``config.json``; absent fields take HF class defaults.

        The real SmolVLM2-500M file omits num_hidden_layers, intermediate_size, layer_norm_eps and hidden_act.
        Keys that do not change the computation (``max_image_size``, ``use_base_siglip``...) are ignored.
        """
        model_type = d.get("model_type", "smolvlm_vision")
        if model_type != "smolvlm_vision":
            raise ValueError(f"vision_config.model_type is {model_type!r}, expected 'smolvlm_vision'")
        names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                 "image_size", "layer_norm_eps", "hidden_act", "num_channels")
        return cls(**{k: d[k] for k in names if k in d})


@dataclass(frozen=True, kw_only=True)
class ConnectorConfig:
    """Pixel shuffle by ``scale_factor`` then a bias-free projection to the text width."""

    vision_hidden_size: int
    text_hidden_size: int
    scale_factor: int = 2  # SmolVLMConfig's class default; SmolVLM2 sets 4 in its JSON

    @property
    def in_features(self) -> int:
        return self.vision_hidden_size * self.scale_factor**2

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> ConnectorConfig:
        """Read a whole SmolVLM ``config.json`` (``scale_factor`` is top-level, widths in sub-configs)."""
        return cls(
            vision_hidden_size=VisionConfig.from_hf(d.get("vision_config") or {}).hidden_size,
            text_hidden_size=(d.get("text_config") or {}).get("hidden_size", 4096),  # LlamaConfig default
            scale_factor=d.get("scale_factor", 2),
        )


@dataclass(frozen=True, kw_only=True)
class ImageEncoderConfig:
    """Vision tower + connector: pixels [B, C, S, S] -> tokens [B, (S/patch/scale)², text_hidden]."""

    vision: VisionConfig
    connector: ConnectorConfig

    def __post_init__(self) -> None:
        if self.connector.vision_hidden_size != self.vision.hidden_size:
            raise ValueError(f"connector expects width {self.connector.vision_hidden_size}, "
                             f"vision tower gives {self.vision.hidden_size}")
        if self.vision.patches_per_side % self.connector.scale_factor:
            raise ValueError(f"a {self.vision.patches_per_side}² patch grid cannot be pixel-shuffled "
                             f"by scale_factor {self.connector.scale_factor}")

    @property
    def tokens_per_image(self) -> int:
        return (self.vision.patches_per_side // self.connector.scale_factor) ** 2

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> ImageEncoderConfig:
        """Read a whole SmolVLM ``config.json``."""
        vision = VisionConfig.from_hf(d.get("vision_config") or {})
        return cls(vision=vision, connector=ConnectorConfig.from_hf(d))


def _image_encoder(
    *, hidden: int, inter: int, layers: int, heads: int, patch: int, image: int, scale: int, text: int
) -> ImageEncoderConfig:
    vision = VisionConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                          num_attention_heads=heads, patch_size=patch, image_size=image)
    connector = ConnectorConfig(vision_hidden_size=hidden, text_hidden_size=text, scale_factor=scale)
    return ImageEncoderConfig(vision=vision, connector=connector)


CONFIGS: dict[str, ImageEncoderConfig] = {
    # the debug size's vision tower and connector (vlaworld.debug.VLM_JSON): 4² patches -> 4 tokens of width 64
    "debug": _image_encoder(hidden=32, inter=64, layers=2, heads=4, patch=8, image=32, scale=2, text=64),
    # HuggingFaceTB/SmolVLM2-500M-Video-Instruct (model_facts §1.1): 32² patches -> 64 tokens of width 960.
    "smolvlm2-500m": _image_encoder(
        hidden=768, inter=3072, layers=12, heads=12, patch=16, image=512, scale=4, text=960
    ),
}


def from_name(name: str) -> ImageEncoderConfig:
    """Look up a named size; an unknown name suggests the closest one."""
    return lookup(CONFIGS, name, "image encoder")


class VisionEmbeddings(nn.Module):
    """Non-overlapping patch projection plus a learned position per patch (row-major)."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        d, p = config.hidden_size, config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, d, kernel_size=p, stride=p)
        self.position_embedding = nn.Embedding(config.num_patches, d)
        self.register_buffer("position_ids", None, persistent=False)  # None: arange(N), the table added whole

    def set_position_ids(self, ids: torch.Tensor | None) -> None:
        """Use these patch position ids [N] (None: arange, transformers 5); kept as a buffer that moves with
        the module."""
        if ids is not None:
            if tuple(ids.shape) != (self.config.num_patches,):
                raise ValueError(f"position ids must be [{self.config.num_patches}], got {tuple(ids.shape)}")
            ids = ids.to(self.position_embedding.weight.device)
        self.position_ids = ids  # a registered buffer: assignment keeps it one

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c, s = self.config.num_channels, self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, s, s):
            raise ValueError(f"expected pixel_values of shape [B, {c}, {s}, {s}] (resize_with_pad to {s} "
                             f"first), got {list(pixel_values.shape)}; only full square images are supported")
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        if self.position_ids is None:  # full image, no patch mask: transformers 5's ids are arange(N)
            return x + self.position_embedding.weight  # (B, N, D)
        return x + self.position_embedding(self.position_ids)  # (B, N, D)


def transformers_457_position_ids(patches_per_side: int, dtype: torch.dtype) -> torch.Tensor:
    """Patch position ids [side²] of a full image whose pixels are ``dtype``, as transformers 4.55.1-4.57.x
    compute them (``SmolVLMVisionEmbeddings.forward`` L138-160 @4.57.6, the same ops in the same dtypes).

    Coordinates are bucketised in the pixels' dtype: in float32 ``k/n·(1−1e−6)`` falls just below the
    boundary ``k/n``, so each axis reads [0, 0, 1, ..., n−2]; in bf16/fp16 the factor rounds to 1 and the
    ids are arange (for n a power of two). E.g. side 4, float32: rows and columns [0, 0, 1, 2].
    """
    side = torch.tensor(patches_per_side)  # HF: patch_attention_mask[:, 0].sum(), a 0-dim int64 tensor
    boundaries = torch.arange(1 / patches_per_side, 1.0, 1 / patches_per_side, dtype=torch.float32)
    coords = torch.arange(patches_per_side, dtype=dtype) / side * (1 - 1e-6)
    buckets = torch.bucketize(coords, boundaries, right=True)
    return (buckets[:, None] * patches_per_side + buckets[None, :]).flatten()  # (side²,)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention with biased q/k/v/out projections."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.scale = self.head_dim**-0.5
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, N, hd)
        return self.out_proj(y.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class MLP(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.approximate = GELU_APPROXIMATE[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x), approximate=self.approximate)  # (B, N, I)
        return self.fc2(h)  # (B, N, D)


class EncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN1(x)), then + mlp(LN2(x))."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = Attention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionTransformer(nn.Module):
    """SmolVLM2's SigLIP tower: pixels [B, C, S, S] in [-1, 1] -> features [B, N, D] after post_layernorm."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))  # (B, N, D)


class ModalityProjection(nn.Module):
    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.in_features, config.text_hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype))


class Connector(nn.Module):
    """Pixel shuffle (each s×s block of patches becomes one token) then project to the text width."""

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        self.scale_factor = config.scale_factor
        self.modality_projection = ModalityProjection(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.modality_projection(pixel_shuffle(x, self.scale_factor))  # (B, N/s², text_hidden)


class ImageEncoder(nn.Module):
    """Vision tower then connector; state-dict keys are HF's ``model.`` keys without that prefix."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(config.vision)
        self.connector = Connector(config.connector)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] in [-1, 1] -> [B, tokens_per_image, text_hidden].

        No sqrt(hidden) scaling here: HF SmolVLM does not apply it, SmolVLA multiplies it in itself.
        """
        return self.connector(self.vision_model(pixel_values))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.embed_images(pixel_values)


def pixel_shuffle(x: torch.Tensor, s: int) -> torch.Tensor:
    """Space-to-depth on the square patch grid, in HF ``SmolVLMConnector.pixel_shuffle`` order.

    Patch (h, w) with h = s*h' + i, w = s*w' + j goes to token h'*(side/s) + w' at features
    [(i*s + j)*D, (i*s + j + 1)*D). E.g. side 4, s 2: token 0 = patches (0,0), (0,1), (1,0), (1,1).
    """
    b, n, d = x.shape
    side = int(n**0.5)
    if side * side != n or side % s:
        raise ValueError(f"pixel_shuffle needs a square patch grid with side divisible by {s}, "
                         f"got {n} patches")
    x = x.reshape(b, side // s, s, side // s, s, d)  # (B, h', i, w', j, D)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, h', w', i, j, D)
    return x.reshape(b, n // s**2, s * s * d)  # (B, N/s², s²·D)
