"""The debug-size SmolVLM/SmolVLA (vlaworld.debug) as the tests build it: random weights, fixed seeds, and
a short schedule (chunk 6, 3 actions per chunk, 4 denoising steps, 8-token prompts) that keeps them fast."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlaworld.checkpoint.architecture import architecture
from vlaworld.checkpoint.strict import load_strict
from vlaworld.config import Feature, PolicyConfig
from vlaworld.models.flow_matching import PrefixInputs
from vlaworld.debug import IMAGE, POLICY_FIELDS, VLM_JSON
from vlaworld.models.smolvla import SmolVLAConfig, SmolVLAModel, VLMConfig

# The tests' runtime schedule for the debug size (the demo runs SmolVLA's: 50 / 10 / 10 / 48).
TEST_SCHEDULE = {"chunk_size": 6, "n_action_steps": 3, "tokenizer_max_length": 8, "num_steps": 4}


def tiny_policy_config(**overrides) -> PolicyConfig:
    base = dict(
        type="smolvla",
        input_features={
            "observation.images.image": Feature(type="VISUAL", shape=(3, 16, 16)),
            "observation.images.image2": Feature(type="VISUAL", shape=(3, 16, 16)),
            "observation.state": Feature(type="STATE", shape=(8,)),
        },
        output_features={"action": Feature(type="ACTION", shape=(7,))},
        **TEST_SCHEDULE,
        **{**POLICY_FIELDS, "resize_imgs_with_padding": (IMAGE, IMAGE)},  # a tuple, as config.json is read
    )
    base.update(overrides)
    return PolicyConfig(**base)


@dataclass(frozen=True, kw_only=True)
class TinySpec:
    """A tiny policy config with its VLM: what a checkpoint would give the architecture builder."""

    policy: PolicyConfig
    vlm: VLMConfig
    image_special_token_ids: tuple[int, int] | None = None

    @property
    def model(self) -> SmolVLAConfig:
        return architecture(self.policy, self.vlm, self.image_special_token_ids).smolvla

    @property
    def head(self):
        return self.model.head


def tiny_spec(**overrides) -> TinySpec:
    return TinySpec(policy=tiny_policy_config(**overrides), vlm=VLMConfig.from_hf(VLM_JSON))


def as_inputs(images, img_masks, tokens, tok_masks, state) -> PrefixInputs:
    """The five prefix tensors (as the reference takes them) as the model's input object."""
    return PrefixInputs(images=tuple(images), image_masks=tuple(img_masks), tokens=tokens, token_masks=tok_masks,
                        state=state)


def hf_config():
    from transformers import SmolVLMConfig

    return SmolVLMConfig(**VLM_JSON)


def reference_and_ours(seed: int = 0, **overrides):
    """A transformers-based reference with random weights and our model loaded from its state dict."""
    from tests.support.reference_smolvla import ReferenceSmolVLA

    spec = tiny_spec(**overrides)
    p = spec.policy
    torch.manual_seed(seed)
    ref = ReferenceSmolVLA(
        hf_config(),
        num_vlm_layers=p.num_vlm_layers,
        width_mult=p.expert_width_multiplier,
        chunk=p.chunk_size,
        max_state=p.max_state_dim,
        max_action=p.max_action_dim,
        n_every=p.self_attn_every_n_layers,
        cross=p.attention_mode == "cross_attn",
        num_expert_layers=p.num_expert_layers,
        num_steps=p.num_steps,
    ).eval()
    with torch.no_grad():  # HF inits norms to 1 and some weights to 0: perturb everything
        for param in ref.parameters():
            param.add_(0.05 * torch.randn_like(param))
    with torch.device("meta"):
        ours = SmolVLAModel(spec.model)
    load_strict(ours, ref.lerobot_state_dict(), source="reference state dict")
    return ref, ours.eval(), spec


def random_inputs(spec: TinySpec, bsz: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    p = spec.policy
    images = [torch.rand(bsz, 3, IMAGE, IMAGE, generator=g) * 2 - 1 for _ in p.image_features]
    img_masks = [torch.ones(bsz, dtype=torch.bool) for _ in p.image_features]
    tokens = torch.randint(0, 128, (bsz, p.tokenizer_max_length), generator=g)
    tok_masks = torch.ones(bsz, p.tokenizer_max_length, dtype=torch.bool)
    tok_masks[0, 5:] = False  # a padded row: pads must not move positions or outputs
    state = torch.randn(bsz, p.max_state_dim, generator=g)
    noise = torch.randn(bsz, p.chunk_size, p.max_action_dim, generator=g)
    return images, img_masks, tokens, tok_masks, state, noise
