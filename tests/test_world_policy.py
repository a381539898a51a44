"""smolvla_world checkpoints: loading, do-no-harm, memory modes, the lazy latent history, safety checks."""

import json
import shutil
from collections import deque

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import vlaworld
from tests.support import lerobot_layout as layout
from tests.support.tiny_checkpoint import (
    libero_batch,
    tiny_config_json,
    write_tiny_world_checkpoint,
)
from vlaworld.config import ConfigError
from vlaworld.checkpoint.files import CheckpointError
from vlaworld.world.memory import WindowMismatchError
from vlaworld import debug

M, T, K, D = 2, 3, 4, 24  # tiny geometry: latent_suffix m2, context_frames 3, future_offset 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {
        "vlm": debug.write_vlm(root / "vlm"),
        "vjepa": debug.write_vjepa(root / "vjepa", seed=0),
        "open": write_tiny_world_checkpoint(root / "open", gate=0.5),
        "closed": write_tiny_world_checkpoint(root / "closed", gate=0.0),
        "chunk10": write_tiny_world_checkpoint(root / "chunk10", chunk_size=10),
    }


def load(files, which="open", **kw):
    return vlaworld.load_policy(files[which], vlm=files["vlm"], world_encoder=files["vjepa"], **kw)


def episode_frames(steps: int, bsz: int = 2, seed: int = 3) -> list[dict]:
    batches = []
    for t in range(steps):
        b = libero_batch(bsz, seed=seed + t)
        batches.append(b)
    return batches


def test_loads_plugin_layout_and_runs(files):
    p = load(files)
    assert p.config.type == "smolvla_world" and p.config.memory == "pred" and p.config.world_window == M
    assert abs(p.gate - np.tanh(0.5)) < 1e-6
    assert p.world_frames_needed == M + T - 1 and p.world_camera == "observation.images.image"
    assert p.predict_chunk(libero_batch()).shape == (2, 6, 7)
    assert [s["memory_finite"] for s in p.last_chunk_stats] == [True, True]


def test_closed_gate_is_bitwise_plain_smolvla_and_encodes_nothing(files, tmp_path):
    """Gate 0: no encoder call, and actions bitwise equal to a plain smolvla checkpoint of the same weights."""
    world = load(files, "closed")
    assert world.world_frames_needed == 0 and world.world.encoder is None
    plain_dir = shutil.copytree(files["closed"], tmp_path / "plain")
    for f in plain_dir.glob("policy_*"):
        f.unlink()
    layout.write_checkpoint(plain_dir, config=tiny_config_json(), stats=layout.dataset_stats(seed=0))
    tensors = load_file(plain_dir / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if "world_inject" not in k and not k.startswith("prophet.")},
              plain_dir / "model.safetensors")
    plain = vlaworld.load_policy(plain_dir, vlm=files["vlm"])
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    assert torch.equal(world.predict_chunk(batch, noise=noise), plain.predict_chunk(batch, noise=noise))
    memory = torch.randn(2, K, D)  # even an explicit memory cannot pass a closed gate
    assert torch.equal(world.predict_chunk(batch, noise=noise, memory=memory), plain.predict_chunk(batch, noise=noise))
    assert world.world_encoder_calls == 0


def test_zero_differs_from_none(files):
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    none = load(files, memory="none").predict_chunk(batch, noise=noise)
    zero = load(files, memory="zero").predict_chunk(batch, noise=noise)
    assert not torch.allclose(none, zero)  # the projections have biases: zeros still move the actions


def test_memory_modes_shapes_and_statistics(files):
    base = load(files)
    window = torch.from_numpy(np.stack([libero_batch(2, seed=s)["observation.images.image"] for s in range(M + T - 1)], 1))
    z_hist = base.world.latent_history(window)
    assert z_hist.shape == (2, T, D)
    pred = base.predict_memory(z_hist)
    assert pred.shape == (2, K, D)
    assert torch.allclose(pred - z_hist[:, -1:], base.world.prophet(z_hist), atol=1e-6)  # delta prediction

    def memory(mode, gens=None, bsz=2):
        p = load(files, memory=mode)
        return p.world.memory(bsz, window[:bsz], gens, "cpu")

    assert torch.equal(memory("pred"), pred)
    assert torch.count_nonzero(memory("zero")) == 0
    gens = lambda: [torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)]  # noqa: E731
    rnd = memory("random", gens())
    assert rnd.shape == (2, K, D) and torch.equal(rnd, memory("random", gens()))
    assert torch.equal(rnd[0], torch.randn(K, D, generator=torch.Generator().manual_seed(11)))  # its own stream
    big = torch.cat([memory("random", [torch.Generator().manual_seed(s)], bsz=1) for s in range(40)])
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05
    scaled = memory("random_scaled", gens())
    assert torch.allclose(scaled.norm(dim=-1), pred.norm(dim=-1), rtol=1e-5)
    flipped = memory("signflip")
    assert torch.allclose(flipped + pred, 2 * z_hist[:, -1:].expand_as(pred), atol=1e-5)
    assert torch.equal(memory("shuffle"), pred.roll(1, dims=0))
    with pytest.raises(ValueError, match="at least 2 episodes"):
        load(files, memory="shuffle").world.memory(1, window[:1], None, "cpu")


def test_lazy_history_equals_per_step_reference(files):
    """12 steps, a chunk every 3: the plugin's per-step deques give the same actions as the lazy window."""
    policy = load(files)
    ref = load(files)
    steps, n = 12, policy.config.n_action_steps
    batches = episode_frames(steps)
    noises = [torch.randn(2, 6, 10) for _ in range(steps // n)]
    policy.reset()
    got = [policy.act(b, noise=noises[t // n]) for t, b in enumerate(batches)]
    calls_lazy = policy.world_encoder_calls

    frames, zs, expected, chunk = deque(maxlen=M), deque(maxlen=T), [], None
    for t, b in enumerate(batches):
        img = torch.from_numpy(b["observation.images.image"])
        frames.append(img)
        while len(frames) < M:
            frames.appendleft(img)
        z = ref.encode_world(torch.stack(list(frames), 1))  # a clip at every step, as the plugin did
        zs.append(z)
        while len(zs) < T:
            zs.appendleft(z)
        if t % n == 0:
            mem = ref.predict_memory(torch.stack(list(zs), 1))
            chunk = ref.predict_chunk(b, noise=noises[t // n], memory=mem).numpy()
        expected.append(chunk[:, t % n])
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a, e, atol=1e-5)
    assert calls_lazy == (steps // n) * T * 2  # T clips per episode per chunk, not one per step
    assert ref.world_encoder_calls == steps * 2


@pytest.mark.parametrize("mode, n_steps, expected", [("pred", 5, T / 5), ("pred", 10, T / 10), ("zero", 5, 0.0),
                                                      ("random", 5, 0.0), ("none", 5, 0.0)])
def test_encoder_calls_per_env_step(files, mode, n_steps, expected):
    p = load(files, "chunk10", memory=mode, n_action_steps=n_steps)
    for b in episode_frames(20, bsz=1):
        p.act(b)
    assert p.world_encoder_calls / 20 == pytest.approx(expected)


def test_window_mismatch_is_refused_with_the_reason(files, tmp_path):
    with pytest.raises(WindowMismatchError, match="20-40 points"):
        load(files, world_window=1)
    assert load(files, world_window=1, allow_window_mismatch=True).config.world_window == 1
    ckpt = write_tiny_world_checkpoint(tmp_path / "m1", world_rollout_temporal_window=1)
    with pytest.raises(WindowMismatchError, match="latent_suffix='m2'"):
        vlaworld.load_policy(ckpt, vlm=files["vlm"], world_encoder=files["vjepa"])


def test_non_finite_memory_is_dropped_per_row_and_reported(files):
    none = load(files, memory="none")
    p = load(files)
    batch, noise = libero_batch(), torch.randn(2, 6, 10)
    memory = torch.randn(2, K, D)
    memory[0, 1, 3] = float("nan")
    out = p.predict_chunk(batch, noise=noise, memory=memory)
    plain = none.predict_chunk(batch, noise=noise)
    assert torch.equal(out[0], plain[0]) and not torch.allclose(out[1], plain[1])
    assert [s["memory_finite"] for s in p.last_chunk_stats] == [False, True]


def test_diagnostics_are_opt_in(files):
    p = load(files)
    p.predict_chunk(libero_batch())
    assert set(p.diagnostics()) == {"gate"}
    p.record_diagnostics = True
    p.predict_chunk(libero_batch())
    d = p.diagnostics()
    assert 0 <= d["attn_entropy_ratio"] <= 1 and abs(sum(d["attn_per_k"]) - 1) < 1e-5 and len(d["attn_per_k"]) == K


def test_strict_errors_and_refusals(files, tmp_path):
    ckpt = shutil.copytree(files["open"], tmp_path / "broken")
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["prophet.output_proj.weight"]
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="prophet.output_proj.weight"):
        vlaworld.load_policy(ckpt, vlm=files["vlm"], world_encoder=files["vjepa"])

    stale = shutil.copytree(files["open"], tmp_path / "stale")
    tensors = load_file(stale / "model.safetensors")
    tensors["world_encoder.backbone.encoder.layernorm.weight"] = torch.ones(24)
    save_file(tensors, stale / "model.safetensors")
    assert vlaworld.load_policy(stale, vlm=files["vlm"], world_encoder=files["vjepa"]).gate > 0

    for field, value, match in [("world_prefix_tokens", 2, "fusion ablation"),
                                ("world_memory_mode_rollout", "oracle", "silently ran"),
                                ("world_inject_suffix_in", True, "fusion ablation")]:
        bad = shutil.copytree(files["open"], tmp_path / f"bad_{field}")
        cfg = json.loads((bad / "config.json").read_text())
        cfg[field] = value
        (bad / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=match):
            vlaworld.load_policy(bad, vlm=files["vlm"], world_encoder=files["vjepa"])
    with pytest.raises(ConfigError, match="choose one of"):
        load(files, memory="oracle")


def test_missing_world_encoder_names_repo_and_flag(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="--world-encoder"):
        vlaworld.load_policy(files["open"], vlm=files["vlm"])
    assert vlaworld.load_policy(files["open"], vlm=files["vlm"], memory="zero").world_frames_needed == 0


def test_round_trip_keeps_world_weights(files, tmp_path):
    p = load(files)
    p.save_pretrained(tmp_path / "out")
    a, b = load_file(tmp_path / "out" / "model.safetensors"), load_file(files["open"] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "out" / "policy_preprocessor.json").read_bytes() == (files["open"] / "policy_preprocessor.json").read_bytes()


def test_prophet_cosine_per_horizon_against_later_latents(files):
    """With diagnostics on, act() scores each prediction against z_{t+k} - z_t as the rollout reaches t+k."""
    p = load(files)
    p.record_diagnostics = True
    p.reset()
    batches = episode_frames(8)
    for b in batches:
        p.act(b)
    got = p.diagnostics()["prophet_cosine_per_k"]
    assert len(got) == K and all(c is not None and -1 <= c <= 1 for c in got)

    # The same numbers written out: per-step latents of clamped clips, predictions at steps 0, 3, 6.
    frames = [torch.from_numpy(b["observation.images.image"]) for b in batches]
    clip = lambda s: torch.stack([frames[max(0, j)] for j in range(s - M + 1, s + 1)], 1)  # noqa: E731
    z = [p.encode_world(clip(s)) for s in range(8)]
    sums = [0.0] * K
    counts = [0] * K
    for t in (0, 3, 6):
        z_hist = torch.stack([z[max(0, s)] for s in range(t - T + 1, t + 1)], 1)
        delta = p.predict_memory(z_hist) - z[t][:, None]
        for k in range(1, K + 1):
            if t + k < 8:
                sums[k - 1] += float(torch.nn.functional.cosine_similarity(delta[:, k - 1], z[t + k] - z[t], dim=-1).sum())
                counts[k - 1] += 2
    expected = [s / c for s, c in zip(sums, counts)]
    assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_forced_low_precision_runs_the_whole_path(files, dtype):
    p = load(files, dtype=dtype)
    assert all(t.dtype == getattr(torch, dtype) for t in p.model.state_dict().values())
    out = p.predict_chunk(libero_batch(), noise=torch.randn(2, 6, 10))
    ref = load(files, dtype="float32").predict_chunk(libero_batch(), noise=torch.randn(2, 6, 10))
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and out.shape == ref.shape


def test_horizon_cosine_by_hand():
    """cos(predicted change, observed change) per k, from the observed latent at the prediction's step."""
    from vlaworld.world.diagnostics import HorizonCosine

    h = HorizonCosine(2)
    z0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    h.observed(0, z0)
    delta = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[float("nan"), 0.0], [1.0, 0.0]]])  # [B=2, K=2, D=2]
    h.predicted(0, delta)
    with pytest.raises(ValueError, match="before that step's latent"):
        h.predicted(1, delta)
    h.observed(1, z0 + torch.tensor([[2.0, 0.0], [1.0, 1.0]]))  # k=1: row 0 cos 1; row 1 NaN, not scored
    assert h.summary() == [pytest.approx(1.0), None] and h.counts() == [1, 0]
    h.observed(2, z0 + torch.tensor([[1.0, 1.0], [0.0, -3.0]]))  # k=2: row 0 cos(e2, (1,1)); row 1 cos(e1, -e2) = 0
    assert h.summary() == pytest.approx([1.0, (2**-0.5 + 0.0) / 2]) and h.counts() == [1, 2]
    assert h.overall() == pytest.approx((1.0 + 2**-0.5) / 3)
