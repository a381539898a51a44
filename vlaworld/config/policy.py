"""Resolved, frozen configuration of a policy, read from LeRobot's ``config.json`` unchanged.

Every field of LeRobot's ``SmolVLAConfig`` is either honoured, known to be training-only, or refused
with a message: an unknown field or an unsupported value is an error, never a silent default (a
silently ignored ``n_action_steps`` or camera list is how evaluations lose 20 points).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields

from vlaworld.config.features import ACTION_KEY, STATE_KEY, Feature
from vlaworld.config.world import WorldConfig, world_fields
from vlaworld.errors import VlaworldError

POLICY_TYPES = ("smolvla", "smolvla_world")

# SmolVLAConfig / PreTrainedConfig fields that only matter for training or hub bookkeeping.
TRAINING_ONLY_FIELDS = frozenset(
    {
        "type", "device", "use_amp", "use_peft", "push_to_hub", "repo_id", "private", "tags", "license",
        "pretrained_path", "pretrained_revision", "freeze_vision_encoder", "train_expert_only",
        "train_state_proj", "optimizer_lr", "optimizer_betas", "optimizer_eps", "optimizer_weight_decay",
        "optimizer_grad_clip_norm", "scheduler_warmup_steps", "scheduler_decay_steps", "scheduler_decay_lr",
        "compile_model", "compile_mode",
        # ``use_cache=False`` crashes LeRobot's sampler; cached and uncached passes compute the same thing.
        "use_cache",
        # The policy keeps only the last observation either way (prepare_images/prepare_state take [:, -1]).
        "n_obs_steps",
    }
)
BEHAVIOUR_FIELDS = frozenset(
    {
        "input_features", "output_features", "chunk_size", "n_action_steps", "normalization_mapping",
        "max_state_dim", "max_action_dim", "resize_imgs_with_padding", "empty_cameras", "adapt_to_pi_aloha",
        "use_delta_joint_actions_aloha", "tokenizer_max_length", "num_steps", "vlm_model_name",
        "add_image_special_tokens", "attention_mode", "prefix_length", "pad_language_to", "num_expert_layers",
        "num_vlm_layers", "self_attn_every_n_layers", "expert_width_multiplier", "min_period", "max_period",
        "rtc_config",
        # Decides the runtime dtypes (vlaworld.config.numerics): true builds the VLM and expert in bf16.
        "load_vlm_weights",
    }
)


class ConfigError(VlaworldError, ValueError):
    """A config.json value vlaworld cannot honour; the message says which and what to do."""


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Everything that changes what a LeRobot SmolVLA(-world) policy computes."""

    type: str
    input_features: dict[str, Feature]
    output_features: dict[str, Feature]
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    resize_imgs_with_padding: tuple[int, int] | None = (512, 512)  # (width, height) as LeRobot passes it
    empty_cameras: int = 0
    tokenizer_max_length: int = 48
    pad_language_to: str = "longest"
    num_steps: int = 10
    vlm_model_name: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    add_image_special_tokens: bool = False
    attention_mode: str = "cross_attn"
    prefix_length: int = -1
    num_expert_layers: int = -1
    num_vlm_layers: int = 16
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    min_period: float = 4e-3
    max_period: float = 4.0
    load_vlm_weights: bool = False  # SmolVLAConfig's class default
    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )
    world: WorldConfig | None = None

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise ConfigError(f"config.json type={self.type!r}: vlaworld runs {POLICY_TYPES}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ConfigError(
                f"n_action_steps={self.n_action_steps} must be in [1, chunk_size={self.chunk_size}]"
            )
        if self.pad_language_to not in ("longest", "max_length"):
            raise ConfigError(f"pad_language_to={self.pad_language_to!r}: expected 'longest' or 'max_length'")
        if self.attention_mode not in ("cross_attn", "self_attn"):
            raise ConfigError(f"attention_mode={self.attention_mode!r}: expected 'cross_attn' or 'self_attn'")
        if self.num_steps < 1:
            raise ConfigError(f"num_steps={self.num_steps} must be >= 1")
        if not self.image_features:
            raise ConfigError("input_features has no VISUAL feature; SmolVLA needs at least one camera")
        if self.state_feature is None or self.action_feature is None:
            raise ConfigError("config.json needs an observation.state input feature and an action output feature")
        if self.state_feature.shape[0] > self.max_state_dim or self.action_feature.shape[0] > self.max_action_dim:
            raise ConfigError("state/action feature wider than max_state_dim/max_action_dim")

    @property
    def image_features(self) -> list[str]:
        """Camera keys in config order: this order is the order of image tokens in the prefix."""
        return [k for k, f in self.input_features.items() if f.type == "VISUAL"]

    @property
    def state_feature(self) -> Feature | None:
        return self.input_features.get(STATE_KEY)

    @property
    def action_feature(self) -> Feature | None:
        return self.output_features.get(ACTION_KEY)

    @classmethod
    def from_lerobot(cls, d: dict, source: object = "config.json") -> PolicyConfig:
        """Parse a LeRobot ``config.json`` dict, refusing what cannot be honoured (``source`` names the
        file in errors). Values must have their field's JSON type: ``"50"``, ``50.0`` or ``true`` for an
        integer field is an error, not a guess."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must hold a JSON object, got {type(d).__name__}")
        ptype = d.get("type")
        if ptype not in POLICY_TYPES:
            raise ConfigError(
                f"config.json type={ptype!r} is not a SmolVLA policy; vlaworld loads types {POLICY_TYPES}"
            )
        wfields = world_fields() if ptype == "smolvla_world" else frozenset()
        unknown = sorted(set(d) - TRAINING_ONLY_FIELDS - BEHAVIOUR_FIELDS - wfields)
        if unknown:
            known = sorted(TRAINING_ONLY_FIELDS | BEHAVIOUR_FIELDS | wfields)
            hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, known, 1)) else u for u in unknown]
            raise ConfigError(
                f"config.json has fields vlaworld does not know: {', '.join(hints)}. They may change what the "
                "policy computes (a newer LeRobot or plugin version?); refusing rather than ignoring them."
            )
        check_field_types(d, cls, source)
        if ptype == "smolvla_world":
            check_field_types(d, WorldConfig, source)
        _refuse_if(d, "adapt_to_pi_aloha", True, "the Aloha joint/gripper transforms are not implemented")
        _refuse_if(d, "use_delta_joint_actions_aloha", True, "LeRobot itself does not implement it")
        rtc = d.get("rtc_config")
        if rtc and rtc.get("enabled", False):
            raise ConfigError("rtc_config.enabled=true (real-time chunking) is not supported by vlaworld")
        resize = d.get("resize_imgs_with_padding", (512, 512))
        kwargs = {k: d[k] for k in BEHAVIOUR_FIELDS & set(d) if k not in _SPECIAL}
        return cls(
            type=ptype,
            input_features=_features(d.get("input_features") or {}),
            output_features=_features(d.get("output_features") or {}),
            resize_imgs_with_padding=None if resize is None else (int(resize[0]), int(resize[1])),
            normalization_mapping=dict(d.get("normalization_mapping") or cls.__dataclass_fields__["normalization_mapping"].default_factory()),
            world=WorldConfig.from_lerobot(d, source) if ptype == "smolvla_world" else None,
            **kwargs,
        )


_SPECIAL = {
    "input_features", "output_features", "resize_imgs_with_padding", "normalization_mapping", "rtc_config",
    "adapt_to_pi_aloha", "use_delta_joint_actions_aloha",
}


def check_field_types(d: dict, cls: type, source: object) -> None:
    """Each value of ``d`` that fills a scalar field of dataclass ``cls`` must have that field's JSON type.

    JSON has no int/float distinction that survives hand edits, so it is enforced here: an int field takes
    an integer (not ``true``, ``50.0`` or ``"50"``), a float field any number but a boolean, a bool field
    ``true``/``false``, a str field a string (``| None`` fields also ``null``).
    """
    for f in fields(cls):
        if f.name not in d:
            continue
        value, kind = d[f.name], str(f.type).replace(" ", "")
        optional = kind.endswith("|None")
        kind = kind.removesuffix("|None")
        if kind not in _JSON_KINDS or (optional and value is None):
            continue
        if not _JSON_KINDS[kind][0](value):
            raise ConfigError(f"{source}: field {f.name!r} must be {_JSON_KINDS[kind][1]}"
                              f"{' or null' if optional else ''}, got {json.dumps(value)} ({type(value).__name__})")


_JSON_KINDS = {  # annotation -> (accepts, description)
    "int": (lambda v: type(v) is int, "an integer"),
    "float": (lambda v: type(v) in (int, float), "a number"),
    "bool": (lambda v: type(v) is bool, "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def _refuse_if(d: dict, key: str, bad: object, why: str) -> None:
    if d.get(key) == bad:
        raise ConfigError(f"config.json {key}={bad}: {why}")


def _features(d: dict) -> dict[str, Feature]:
    return {k: Feature(type=str(v["type"]), shape=tuple(int(s) for s in v["shape"])) for k, v in d.items()}
