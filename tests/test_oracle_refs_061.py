"""vlaworld against LeRobot 0.6.1's recorded answers (tests/oracle/refs/lerobot-0.6.1).

LeRobot 0.6.1 (transformers 5.5, Python >= 3.12, torch < 2.12) cannot be installed here on every run;
``tests/oracle/make_refs_061.py`` ran the real LeRobot 0.6.1 once and kept its checkpoint files (weights
regenerated from a seed and checked against its digest), its outputs and its LIBERO env's states.
``numerics="lerobot-0.6"`` and ``init_protocol="lerobot-0.6.1"`` must reproduce them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import vlaworld
from tests.oracle import REFS_061, THREADS, weights
from tests.oracle import cases as C

pytestmark = pytest.mark.oracle
LIBERO_REFS = sorted((REFS_061 / "libero").glob("*.json"))


def materialize(case_dir: Path, dst: Path) -> Path:
    """The checkpoint directory LeRobot 0.6.1 wrote: its files, and its weights regenerated (digest checked)."""
    shutil.copytree(case_dir, dst, ignore=shutil.ignore_patterns("weights.json", "meta.json", "outputs.safetensors"))
    spec = json.loads((case_dir / "weights.json").read_text())
    tensors = {k: torch.empty(shape, dtype=getattr(torch, dtype)) for k, (shape, dtype) in spec["tensors"].items()}
    weights.fill(tensors, spec["seed"])
    assert weights.digest(tensors) == spec["digest"], f"regenerated weights differ from LeRobot 0.6.1's ({case_dir})"
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def recorded(kind: str, cases: dict, root: Path) -> dict:
    """The reference in the shape cases.check_against takes."""
    batch, noise, _ = C.inputs(kind)
    out = {"batch": batch, "noise": noise}
    for name in cases:
        src = REFS_061 / kind / name
        out[name] = {"dir": materialize(src, root / name), "meta": json.loads((src / "meta.json").read_text()),
                     "out": load_file(src / "outputs.safetensors")}
    return out


@pytest.fixture(scope="module")
def tiny_061(tmp_path_factory):
    return recorded("tiny", C.TINY_CASES, tmp_path_factory.mktemp("tiny061"))


def test_references_were_made_by_lerobot_061():
    manifest = json.loads((REFS_061 / "manifest.json").read_text())
    assert manifest["versions"]["lerobot"] == "0.6.1"
    assert manifest["versions"]["transformers"].startswith("5.")
    assert manifest["threads"] == THREADS  # check_against computes with the same count


@pytest.mark.parametrize("case", list(C.TINY_CASES))
def test_tiny_chunk_and_queue_equal_lerobot_061(tiny_061, oracle_hf_home, monkeypatch, case):
    monkeypatch.setenv("HF_HOME", str(oracle_hf_home))
    C.check_against(tiny_061, case, "lerobot-0.6", atol=1e-5)


def test_fp32_vision_under_the_other_profile_differs(tiny_061, oracle_hf_home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(oracle_hf_home))
    policy = vlaworld.load_policy(tiny_061["fp32"]["dir"], numerics="lerobot-0.4")
    chunk = policy.predict_chunk(tiny_061["batch"], noise=tiny_061["noise"]["chunk"])
    assert (chunk - tiny_061["fp32"]["out"]["chunk"]).abs().max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("case", list(C.REAL_CASES))
def test_real_size_chunk_and_queue_equal_lerobot_061(oracle_hf_home, monkeypatch, tmp_path, case):
    monkeypatch.setenv("HF_HOME", str(oracle_hf_home))
    C.check_against(recorded("real", {case: C.REAL_CASES[case]}, tmp_path), case, "lerobot-0.6", atol=1e-3)


def replay_env(ref_json: Path) -> tuple[dict, dict, list[dict]]:
    """vlaworld's env under init_protocol lerobot-0.6.1, driven by the recorded actions."""
    from vlaworld import envs

    meta = json.loads(ref_json.read_text())
    tensors = load_file(ref_json.with_suffix(".safetensors"))
    task = int(ref_json.stem.rsplit("task", 1)[1])
    actions = tensors["actions"].numpy()  # (steps, episodes, 7)
    states, frames = [], []
    for e in range(actions.shape[1]):
        env = envs.make("libero_spatial", task, init_protocol="lerobot-0.6.1")
        try:
            obs, _ = env.reset(options={"episode": e})
            ep_states, ep_frames = [obs["observation.state"]], [obs]
            for a in actions[:, e]:
                obs, *_ = env.step(a)
                ep_states.append(obs["observation.state"])
                ep_frames.append(obs)
        finally:
            env.close()
        states.append(np.stack(ep_states))
        frames.append([{k: hashlib.sha256(np.ascontiguousarray(o[k]).tobytes()).hexdigest()
                        for k in ("observation.images.image", "observation.images.image2")} for o in ep_frames])
    return meta, tensors | {"ours": torch.from_numpy(np.stack(states))}, frames


@pytest.mark.libero
@pytest.mark.parametrize("ref_json", LIBERO_REFS, ids=lambda p: p.stem)
def test_lerobot_061_env_protocol(ref_json):
    meta, tensors, frames = replay_env(ref_json)
    assert meta["image_size"] == 360
    assert torch.equal(tensors["ours"], tensors["states"])  # bit for bit, every step of every episode
    mesa = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libegl-mesa0"], capture_output=True, text=True)
    if meta["mesa"] and mesa.stdout.strip() != meta["mesa"]:
        pytest.skip(f"frames were rendered with Mesa {meta['mesa']}, this machine has {mesa.stdout.strip() or 'none'}: "
                    "states compared, pixels not")
    cams = {"image": "observation.images.image", "image2": "observation.images.image2"}
    for e, episode in enumerate(frames):
        for step, hashes in enumerate(episode):
            for cam, key in cams.items():
                assert hashes[key] == meta["image_sha256"][step][cam][e], (e, step, cam)
