"""``world_preprocess="legacy"`` against the research plugin's rollout, rebuilt on the real LeRobot 0.4.4.

The plugin is not on PyPI: tests/oracle/plugin.py restates its world parts from its source, on top of
LeRobot 0.4.4's own SmolVLA and transformers 4.57.6's ``VJEPA2Model`` in float16 (as the plugin loads
it). The first chunk of an episode must agree within 1e-3; the default preprocessing must not.
"""

from __future__ import annotations

import pytest
import torch

import vlaworld
from tests.oracle import Request, oracle_threads, python_044, run, write_hf_cache
from tests.oracle.cases import oracle_tensors
from tests.support.tiny_checkpoint import VLM_REPO, libero_batch, write_tiny_world_checkpoint
from vlaworld import debug

pytestmark = pytest.mark.oracle
transformers = pytest.importorskip("transformers")


def write_hf_vjepa(directory):
    """A tiny V-JEPA 2 saved by transformers itself (24 wide, as the tiny world checkpoints expect)."""
    cfg = transformers.VJEPA2Config(
        hidden_size=24, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, patch_size=64, crop_size=256,
        tubelet_size=2, frames_per_clip=4, pred_hidden_size=48, pred_num_attention_heads=2,  # (head_dim 24: 4.57 fails below 6)
        pred_num_hidden_layers=1, pred_num_mask_tokens=2,
    )
    torch.manual_seed(0)
    model = transformers.VJEPA2Model(cfg).eval()
    with torch.no_grad():  # weights large enough that half-precision effects show
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name and name.endswith("weight")
                    else torch.randn_like(p) * (0.1 if p.ndim == 1 else p[0].numel() ** -0.5))
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    hf = root / "hf"
    write_hf_cache(hf, VLM_REPO, debug.write_vlm(root / "vlm"))
    vjepa = write_hf_vjepa(root / "vjepa")
    ckpt = write_tiny_world_checkpoint(root / "ckpt", gate=0.5)
    batch = libero_batch(bsz=2, seed=4)
    noise = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(9))
    [(meta, out)] = run(python_044(), [Request(
        "plugin_chunk", {"dir": str(ckpt), "world_encoder": str(vjepa), "tasks": batch["task"]},
        {"inputs": oracle_tensors(batch), "noise": {"chunk": noise}},
    )], hf_home=hf)
    return {"hf": hf, "vjepa": vjepa, "ckpt": ckpt, "batch": batch, "noise": noise, "meta": meta, "out": out}


def chunk(plugin, monkeypatch, preprocess: str) -> tuple[torch.Tensor, vlaworld.Policy]:
    monkeypatch.setenv("HF_HOME", str(plugin["hf"]))
    policy = vlaworld.load_policy(plugin["ckpt"], world_encoder=plugin["vjepa"], world_preprocess=preprocess,
                                  numerics="lerobot-0.4")
    with oracle_threads():
        return policy.predict_chunk(plugin["batch"], noise=plugin["noise"]), policy


def test_legacy_first_chunk_equals_the_plugins_rollout(plugin, monkeypatch):
    ours, policy = chunk(plugin, monkeypatch, "legacy")
    assert plugin["meta"]["window"] == 2 and abs(plugin["meta"]["gate"]) > 0.1  # the world path is live
    assert policy.config.runtime_dtypes["world_encoder"] == "float16"
    _, memory = policy.world.last_latents
    torch.testing.assert_close(memory, plugin["out"]["memory"], rtol=0, atol=1e-3)
    torch.testing.assert_close(ours, plugin["out"]["chunk"], rtol=0, atol=1e-3)


def test_default_preprocessing_is_not_the_plugins_rollout(plugin, monkeypatch):
    ours, _ = chunk(plugin, monkeypatch, "default")
    assert (ours - plugin["out"]["chunk"]).abs().max() > 1e-3
