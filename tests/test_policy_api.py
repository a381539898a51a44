"""The public API: batches in LeRobot feature names, processing as LeRobot's pipeline, the act queue."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlaworld
from tests.support.tiny_checkpoint import libero_batch
from vlaworld.checkpoint.processors import read_processors
from vlaworld.models.flow_matching import PrefixInputs
from vlaworld.processing.tokenizer import TaskTokenizer, TokenizerSettings


@pytest.fixture(scope="module")
def policy(tiny_smolvla):
    return vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm)


def test_predict_chunk_equals_lerobot_pipeline_written_out(tiny_smolvla, policy):
    """Processing written out independently (transformers tokenizer, LeRobot formulas) gives the same chunk."""
    from transformers import AutoTokenizer

    vlm, ckpt = tiny_smolvla
    batch = libero_batch()
    noise = torch.randn(2, 6, 10)
    got = policy.predict_chunk(batch, noise=noise)

    spec = read_processors(ckpt)
    pre, post = spec.normalizer.stats, spec.unnormalizer.stats
    images = []
    for key in ("observation.images.image", "observation.images.image2"):
        img = torch.from_numpy(batch[key]).permute(0, 3, 1, 2).float() / 255  # (B, 3, 16, 16)
        img = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)  # square: no padding
        images.append(img * 2 - 1)
    state = (torch.from_numpy(batch["observation.state"]) - pre["observation.state"]["mean"]) / (
        pre["observation.state"]["std"] + 1e-8
    )
    state = F.pad(state, (0, 4))
    tok = AutoTokenizer.from_pretrained(str(vlm))
    enc = tok([t + "\n" for t in batch["task"]], max_length=8, truncation=True, padding="longest",
              padding_side="right", return_tensors="pt")
    head = policy.model.model
    masks = [torch.ones(2, dtype=torch.bool)] * 2
    prefix = head.encode_prefix(PrefixInputs(images=tuple(images), image_masks=tuple(masks), tokens=enc["input_ids"],
                                             token_masks=enc["attention_mask"].bool(), state=state))
    actions = head.sample_actions(prefix, noise)[:, :, :7]
    expected = actions * post["action"]["std"] + post["action"]["mean"]
    assert torch.equal(got, expected)


@pytest.mark.parametrize("padding", ["longest", "max_length"])
@pytest.mark.parametrize("max_length", [4, 8, 20])
def test_tokenizer_matches_transformers(tiny_smolvla, padding, max_length):
    from transformers import AutoTokenizer

    vlm = tiny_smolvla.vlm
    tasks = ["pick up the black bowl next to the ramekin and place it on the plate", "open the top drawer", "put"]
    ours = TaskTokenizer(vlm, TokenizerSettings(max_length=max_length, padding=padding))
    ids, mask = ours(tasks)
    ref = AutoTokenizer.from_pretrained(str(vlm))([t + "\n" for t in tasks], max_length=max_length, truncation=True,
                                                  padding=padding, padding_side="right", return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"].bool())


def test_uint8_hwc_and_float_chw_images_agree(policy):
    batch = libero_batch()
    noise = torch.randn(2, 6, 10)
    as_float = dict(batch)
    for key in ("observation.images.image", "observation.images.image2"):
        as_float[key] = torch.from_numpy(batch[key]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(policy.predict_chunk(batch, noise=noise), policy.predict_chunk(as_float, noise=noise))


def test_act_hands_out_n_action_steps_then_recomputes_at_the_boundary(policy):
    batch = libero_batch()
    n = policy.config.n_action_steps
    assert n == 3
    noises = [torch.randn(2, 6, 10) for _ in range(2)]
    chunks = [policy.predict_chunk(batch, noise=z).numpy() for z in noises]
    policy.reset()
    got = []
    for step in range(2 * n):
        got.append(policy.act(batch, noise=noises[step // n]))
    for step in range(2 * n):
        np.testing.assert_array_equal(got[step], chunks[step // n][:, step % n])
    policy.reset()
    np.testing.assert_array_equal(policy.act(batch, noise=noises[1]), chunks[1][:, 0])  # reset empties the queue
    with pytest.raises(ValueError, match="call reset"):
        policy.act(libero_batch(bsz=3))
    policy.reset()


def test_n_action_steps_override_is_recorded(tiny_smolvla):
    p = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, n_action_steps=1)
    assert p.config.n_action_steps == 1
    with pytest.raises(ValueError, match="n_action_steps"):
        vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, n_action_steps=7)


def test_dtype_override_casts_the_whole_model(tiny_smolvla, policy):
    # This checkpoint runs in float32 as LeRobot builds it (load_vlm_weights=false): forcing float32 changes
    # nothing, forcing bfloat16 casts every part, the fp32 projections included.
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    p32 = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, dtype="float32")
    assert p32.config.dtype == "float32"
    assert torch.equal(p32.predict_chunk(batch, noise=noise), policy.predict_chunk(batch, noise=noise))
    p16 = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, dtype="bfloat16", numerics="lerobot-0.6")
    assert p16.config.dtype == "bfloat16" and set(p16.config.runtime_dtypes.values()) == {"bfloat16"}
    assert all(t.dtype == torch.bfloat16 for t in p16.model.state_dict().values())
    exact_ids = vlaworld.load_policy(tiny_smolvla.ckpt, vlm=tiny_smolvla.vlm, numerics="lerobot-0.6")  # same ids in fp32 and bf16
    diff = (p16.predict_chunk(batch, noise=noise) - exact_ids.predict_chunk(batch, noise=noise)).abs().max()
    assert 0 < diff < 0.5  # bf16 activations differ from fp32 ones, but only by rounding


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b.pop("observation.images.image2"), "lacks cameras"),
        (lambda b: b.pop("task"), "task"),
        (lambda b: b.update({"observation.state": np.zeros((2, 5), np.float32)}), r"\[B, 8\]"),
        (lambda b: b.update({"observation.images.image": np.zeros((2, 3, 16, 16), np.uint8)}), "channels last"),
    ],
)
def test_bad_batches_get_clear_errors(policy, mutate, match):
    batch = libero_batch()
    mutate(batch)
    with pytest.raises((KeyError, ValueError), match=match):
        policy.predict_chunk(batch)


def test_noise_shape_is_checked(policy):
    with pytest.raises(ValueError, match="chunk_size, max_action_dim"):
        policy.predict_chunk(libero_batch(), noise=torch.zeros(2, 6, 7))
