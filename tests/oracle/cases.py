"""The checkpoints and inputs both LeRobot generations are asked about (shared by tests and make_refs_061).

Each case is a SmolVLAConfig for LeRobot's ``save_policy``; ``load_vlm_weights`` and the VLM config's
sub-config dtypes decide how LeRobot builds (and so runs) the model, which is what the numerics
profiles must reproduce:
- ``fp32``: load_vlm_weights=false, no dtypes in the VLM config -> everything float32 (transformers
  4.57 then shifts the vision position ids);
- ``vlm-weights-bf16``: load_vlm_weights=true -> VLM and expert bf16 (exact ids in both);
- ``bf16-text-config``: load_vlm_weights=false with ``text_config.torch_dtype=bfloat16`` -> text model and
  expert bf16, vision float32.
``real-*`` are SmolVLM2-500M's shapes with random weights (LIBERO's two 256² cameras, chunk 50).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import vlaworld

from tests.support import lerobot_layout as layout
from tests.oracle import Request, oracle_threads, run, write_hf_cache
from tests.support.tiny_checkpoint import VLM_REPO, libero_batch
from tests.support.tiny_models import TEST_SCHEDULE
from vlaworld import debug

VLM_BF16_TEXT = "tiny-org/TinySmolVLM-bf16-text"
VLM_REAL = "test-org/SmolVLM2-500M-random"  # SmolVLM2-500M-Video-Instruct's config.json, no real weights
WEIGHT_SEED = 7

_TINY_IN, _TINY_OUT = layout.features(image_shape=(3, 16, 16))
TINY = dict(  # the debug size with the tests' schedule
    **TEST_SCHEDULE, **debug.POLICY_FIELDS, vlm_model_name=VLM_REPO, device="cpu",
    input_features=_TINY_IN, output_features=_TINY_OUT,
)
_REAL_IN, _REAL_OUT = layout.features()
REAL = dict(
    chunk_size=50, n_action_steps=10, max_state_dim=32, max_action_dim=32, resize_imgs_with_padding=[512, 512],
    tokenizer_max_length=48, pad_language_to="max_length", num_steps=10, num_vlm_layers=16,
    vlm_model_name=VLM_REAL, device="cpu", input_features=_REAL_IN, output_features=_REAL_OUT,
)
TINY_CASES = {
    "fp32": TINY | dict(load_vlm_weights=False),
    "vlm-weights-bf16": TINY | dict(load_vlm_weights=True),
    "bf16-text-config": TINY | dict(load_vlm_weights=False, vlm_model_name=VLM_BF16_TEXT),
}
REAL_CASES = {
    "real-fp32": REAL | dict(load_vlm_weights=False),
    "real-vlm-weights-bf16": REAL | dict(load_vlm_weights=True),
}
QUEUE_STEPS = {"tiny": 7, "real": 12}  # past the second chunk boundary (n_action_steps 3 / 10)


def stats() -> dict:
    """Dataset stats as JSON: every feature, as lerobot-train passes dataset.meta.stats."""
    return {k: {n: v.tolist() for n, v in d.items()} for k, d in layout.dataset_stats(seed=3).items()}


def write_vlms(hf_home: Path, scratch: Path, real: bool = False) -> Path:
    """The VLM repos the cases name, in a Hugging Face cache under ``hf_home`` (offline lookups)."""
    write_hf_cache(hf_home, VLM_REPO, debug.write_vlm(scratch / "plain", weights_seed=1))
    write_hf_cache(hf_home, VLM_BF16_TEXT,
                   debug.write_vlm(scratch / "bf16", sub_config_dtypes={"text_config": "bfloat16"}))
    if real:
        write_hf_cache(hf_home, VLM_REAL, write_real_vlm(scratch / "real"))
    return hf_home


def write_real_vlm(directory: Path) -> Path:
    """SmolVLM2-500M's config with the tiny tokenizer, and a weights file that ``from_pretrained`` accepts.

    ``load_vlm_weights=true`` needs a weights file; the policy checkpoint then overwrites every VLM tensor
    SmolVLA uses, so one tensor suffices (transformers initialises the missing ones and says so).
    """
    import json

    from safetensors.torch import save_file

    from vlaworld.bench.stack import REAL_VLM_JSON

    debug.write_vlm(directory)
    (directory / "config.json").write_text(json.dumps(REAL_VLM_JSON, indent=2))
    save_file({"model.text_model.norm.weight": torch.ones(960)}, directory / "model.safetensors",
              metadata={"format": "pt"})
    return directory


def inputs(kind: str) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """(batch for vlaworld, noise per chunk for both, tasks): 2 episodes, cameras at the case's size."""
    cfg = TINY if kind == "tiny" else REAL
    size = cfg["input_features"]["observation.images.image"]["shape"][-1]
    g = torch.Generator().manual_seed(5)
    batch = libero_batch(bsz=2, seed=5)
    for key in ("observation.images.image", "observation.images.image2"):
        batch[key] = torch.randint(0, 256, (2, size, size, 3), generator=g, dtype=torch.uint8).numpy()
    shape = (2, cfg["chunk_size"], cfg["max_action_dim"])
    g = torch.Generator().manual_seed(11)
    noise = {"chunk": torch.randn(shape, generator=g)}
    noise |= {f"queue_{k}": torch.randn(shape, generator=g) for k in range(QUEUE_STEPS[kind] // cfg["n_action_steps"] + 1)}
    return batch, noise, list(batch["task"])


def oracle_tensors(batch: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v)) for k, v in batch.items() if k != "task"}


def references(python: Path, cases: dict[str, dict], kind: str, hf_home: Path, root: Path, **run_kwargs) -> dict:
    """Per case: the checkpoint LeRobot wrote under ``root``, its runtime dtypes and weight digest, and its
    outputs for ``inputs(kind)``; plus the batch and noise given."""
    batch, noise, tasks = inputs(kind)
    saves = [Request("save_policy", {"dir": str(root / name), "config": cfg, "seed": WEIGHT_SEED, "stats": stats()})
             for name, cfg in cases.items()]
    predicts = [Request("predict", {"dir": str(root / name), "tasks": tasks, "queue_steps": QUEUE_STEPS[kind]},
                        {"inputs": oracle_tensors(batch), "noise": noise}) for name in cases]
    results = run(python, saves + predicts, hf_home=hf_home, **run_kwargs)
    n = len(cases)
    return {name: {"dir": root / name, "saved": results[i][0], "meta": results[n + i][0], "out": results[n + i][1]}
            for i, name in enumerate(cases)} | {"batch": batch, "noise": noise}


@oracle_threads()
def check_against(reference: dict, case: str, numerics: str, atol: float) -> None:
    """vlaworld's chunk and act() queue on the reference's checkpoint and inputs, within ``atol`` (with the
    oracle's thread count)."""
    ref = reference[case]
    policy = vlaworld.load_policy(ref["dir"], numerics=numerics)
    ours = {k: str(v.dtype).removeprefix("torch.") for k, v in policy.model.state_dict().items()}
    assert ours == ref["meta"]["runtime_dtypes"]  # each part runs in the dtype LeRobot built it in
    batch, noise = reference["batch"], reference["noise"]
    chunk = policy.predict_chunk(batch, noise=noise["chunk"])
    torch.testing.assert_close(chunk, ref["out"]["chunk"], rtol=0, atol=atol)
    policy.reset()
    n = policy.config.n_action_steps
    queue = [policy.act(batch, noise=noise[f"queue_{s // n}"]) for s in range(len(ref["out"]["queue"]))]
    np.testing.assert_allclose(np.stack(queue), ref["out"]["queue"].numpy(), rtol=0, atol=atol)
