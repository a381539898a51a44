"""SmolVLA numerics: our model against a transformers-based statement of LeRobot's computation."""

import pytest
import torch

from tests.support.tiny_models import as_inputs, random_inputs, reference_and_ours, tiny_spec
from vlaworld.models.expert import ExpertLayout
from vlaworld.models.flow_matching import euler_times, make_att_2d_masks
from vlaworld.models.smollm import TextConfig, TextModel, apply_rope
from vlaworld.checkpoint.strict import load_strict

TOL = 1e-5

LAYOUTS = [
    {},  # cross-attention every other layer, as smolvla_base
    {"attention_mode": "self_attn"},
    {"self_attn_every_n_layers": 3},
    {"num_expert_layers": 2, "self_attn_every_n_layers": -1},  # all cross-attention, expert every 2nd layer
]


@pytest.mark.parametrize("overrides", LAYOUTS, ids=["cross2", "self", "cross3", "fewer-expert"])
def test_sample_actions_matches_reference(overrides):
    ref, ours, spec = reference_and_ours(**overrides)
    images, img_masks, tokens, tok_masks, state, noise = random_inputs(spec)
    expected = ref.sample_actions(images, img_masks, tokens, tok_masks, state, noise)
    prefix = ours.model.encode_prefix(as_inputs(images, img_masks, tokens, tok_masks, state))
    got = ours.model.sample_actions(prefix, noise)
    assert (got - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("overrides", LAYOUTS[:2], ids=["cross2", "self"])
def test_training_loss_matches_reference(overrides):
    ref, ours, spec = reference_and_ours(**overrides)
    images, img_masks, tokens, tok_masks, state, noise = random_inputs(spec)
    actions = torch.randn_like(noise)
    time = torch.tensor([0.3, 0.85])
    expected = ref.losses(images, img_masks, tokens, tok_masks, state, actions, noise, time)
    got = ours.model.loss(as_inputs(images, img_masks, tokens, tok_masks, state), actions, noise, time)
    assert got.shape == (2, spec.policy.chunk_size, spec.policy.max_action_dim)
    assert (got - expected).abs().max().item() <= TOL


def test_cached_step_equals_uncached_joint_forward():
    """One denoising step through the static KV cache equals the joint (training-style) pass."""
    _, ours, spec = reference_and_ours()
    images, img_masks, tokens, tok_masks, state, noise = random_inputs(spec)
    head = ours.model
    prefix_state = head.encode_prefix(as_inputs(images, img_masks, tokens, tok_masks, state))
    for t in (1.0, 0.4):
        emb = head.time_embeddings([t], noise.shape[0], noise.device)[0]
        cached = head.denoise_step(noise, emb, prefix_state)
        prefix, pad, att = head.embed_prefix(as_inputs(images, img_masks, tokens, tok_masks, state))
        suffix = head.embed_suffix(noise, emb)
        ones = torch.ones(suffix.shape[:2], dtype=torch.bool)
        pad_all, att_all = torch.cat([pad, ones], 1), torch.cat([att, ones], 1)
        out = head.vlm_with_expert.forward_joint(
            prefix, suffix, torch.cumsum(pad_all, 1) - 1, make_att_2d_masks(pad_all, att_all)
        )
        joint = head.velocity(out, None)
        assert (cached - joint).abs().max().item() <= TOL


def test_bf16_checkpoint_dtypes_match_reference():
    """With LeRobot's mixed dtypes (bf16 VLM/expert, fp32 projections) we follow its casts exactly."""
    ref, ours, spec = reference_and_ours()
    fp32_names = ("action_", "state_proj")
    with torch.no_grad():
        for model in (ref, ours):
            for name, p in model.named_parameters():
                keep = any(n in name for n in fp32_names) or (
                    "lm_expert" in name and p.ndim == 2 and p.shape[0] == p.shape[1] == 32
                )
                if not keep:
                    p.data = p.data.to(torch.bfloat16)
    images, img_masks, tokens, tok_masks, state, noise = random_inputs(spec)
    expected = ref.sample_actions(images, img_masks, tokens, tok_masks, state, noise)
    got = ours.model.sample_actions(ours.model.encode_prefix(as_inputs(images, img_masks, tokens, tok_masks, state)), noise)
    assert got.dtype == torch.float32
    # Same ops in the same order; only the vision attention kernel (SDPA in both) may differ in rounding.
    assert (got - expected).abs().max().item() <= 1e-2


def test_text_decoder_matches_transformers_llama():
    """Our decoder layer equals transformers' LlamaModel (with rope_theta 10000, as SmolVLA uses)."""
    from transformers import LlamaConfig, LlamaModel

    hf_cfg = LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, rms_norm_eps=1e-5, vocab_size=50, rope_theta=10000.0, attn_implementation="eager",
    )
    torch.manual_seed(0)
    hf = LlamaModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = TextConfig.from_hf(hf_cfg.to_dict())
    with torch.device("meta"):
        ours = TextModel(cfg, 3)
    load_strict(ours, hf.state_dict(), source="LlamaModel")
    x = torch.randn(2, 9, 64)
    pos = torch.arange(9)[None].expand(2, 9)
    causal = torch.ones(9, 9, dtype=torch.bool).tril()[None].expand(2, 9, 9)
    with torch.no_grad():
        expected = hf(inputs_embeds=x, position_ids=pos).last_hidden_state
        got = ours(x, pos, causal)
    assert (got - expected).abs().max().item() <= TOL


def test_rope_equals_rotate_half_formulation():
    x = torch.randn(2, 5, 3, 16)
    pos = torch.arange(5)[None].expand(2, 5) + 7
    inv = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    ang = (pos[..., None].float() * inv)[:, :, None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    rot = torch.cat([-x[..., 8:], x[..., :8]], -1)
    assert torch.allclose(apply_rope(x, pos), x * cos + rot * sin, atol=1e-5)


def test_euler_times_and_masks():
    assert euler_times(10)[0] == 1.0 and abs(euler_times(10)[-1] - 0.1) < 1e-12 and len(euler_times(10)) == 10
    pad = torch.tensor([[True, True, False, True, True]])
    att = torch.tensor([[0, 0, 0, 1, 1]])
    m = make_att_2d_masks(pad, att)[0]
    assert m[0].tolist() == [True, True, False, False, False]  # prefix cannot see the later blocks
    assert m[4].tolist() == [True, True, False, True, True]  # last token sees all valid ones
    assert m[3].tolist() == [True, True, False, True, False]  # causal among AR tokens


def test_inconsistent_expert_layout_is_refused():
    with pytest.raises(ValueError, match="LeRobot cannot run this combination"):
        ExpertLayout(num_vlm_layers=4, num_expert_layers=2, cross_attn=True, self_attn_every_n_layers=2,
                     width=48, intermediate_size=256)


def test_padded_prefix_length_changes_nothing():
    _, ours, spec = reference_and_ours()
    images, img_masks, tokens, tok_masks, state, noise = random_inputs(spec)
    base = ours.model.sample_actions(ours.model.encode_prefix(as_inputs(images, img_masks, tokens, tok_masks, state)), noise)
    spec_padded = tiny_spec(prefix_length=64)
    ours.model.cfg = spec_padded.head
    padded_state = ours.model.encode_prefix(as_inputs(images, img_masks, tokens, tok_masks, state))
    assert padded_state.pad_mask.shape[1] == 64
    padded = ours.model.sample_actions(padded_state, noise)
    assert (padded - base).abs().max().item() <= TOL


def test_image_special_tokens_frame_every_camera():
    """add_image_special_tokens: [fake_image, global_image] before and [fake_image] after each camera."""
    import dataclasses

    from vlaworld.models.smolvla import SmolVLAModel

    _, ours, spec = reference_and_ours()
    special = (5, 9)
    spec = dataclasses.replace(spec, policy=dataclasses.replace(spec.policy, add_image_special_tokens=True),
                               image_special_token_ids=special)
    framed = SmolVLAModel(spec.model).eval()
    framed.load_state_dict(ours.state_dict())
    images, img_masks, tokens, tok_masks, state, _ = random_inputs(spec)
    with torch.no_grad():
        plain, plain_pad, _ = ours.model.embed_prefix(as_inputs(images, img_masks, tokens, tok_masks, state))
        embs, pad, att = framed.model.embed_prefix(as_inputs(images, img_masks, tokens, tok_masks, state))
        table = framed.model.embed_tokens(torch.tensor([*special, special[0]]))
    n_img = ours.model.embed_images(images[0]).shape[1]
    block = 2 + n_img + 1
    for cam in range(len(images)):
        at = cam * block
        assert torch.equal(embs[:, at : at + 2], table[:2].expand(embs.shape[0], -1, -1))
        assert torch.equal(embs[:, at + 2 : at + 2 + n_img], plain[:, cam * n_img : (cam + 1) * n_img])
        assert torch.equal(embs[:, at + block - 1], table[2].expand(embs.shape[0], -1))
        assert pad[:, at : at + block].all()
    rest = len(images) * n_img
    assert torch.equal(embs[:, len(images) * block :], plain[:, rest:])  # language and state follow unchanged
    assert torch.equal(pad[:, len(images) * block :], plain_pad[:, rest:]) and att[:, -1].all()
