"""The real LeRobot as a test oracle: run inside a side environment, never imported by vlaworld's tests.

Usage (``tests/oracle/__init__.py`` does this): ``PYTHON harness.py REQUEST.json``, where the side
environment's PYTHON has LeRobot (0.4.4 or 0.6.1) and the transformers version that release requires.
The request names a command and its files; tensors travel as safetensors, everything else as JSON.
Nothing here re-implements LeRobot: each command drives LeRobot's own classes as ``lerobot-train`` and
``lerobot-eval`` do. Two stand-ins, both outside the numerical path: ``AutoProcessor`` becomes the VLM
tokenizer (``SmolVLMWithExpertModel`` only reads ``processor.tokenizer``; the real processor needs
torchvision's video ops, and PyPI's torchvision cannot load beside a CPU torch), and in 0.4.4
environments an import-only ``torchvision`` (``tests/oracle/shim``) satisfies module-level imports.

Commands:
  save_policy     SmolVLAPolicy(config) with seeded weights (weights.py) + its processors, saved as
                  lerobot-train saves them
  predict         from_pretrained + saved processors: predict_action_chunk and a select_action queue
  position_ids    transformers' SmolVLMVisionEmbeddings position ids per side and pixel dtype
  axis_angle      LiberoProcessorStep._quat2axisangle on a batch of quaternions
  rollout         lerobot-eval's rollout() on LIBERO with per-chunk seeded noise
  env_reference   LeRobot's LIBERO env under its defaults: states and frame hashes for fixed actions
  plugin_chunk    the world plugin's first chunk (plugin.py on top of LeRobot's SmolVLA, HF V-JEPA 2 fp16)
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import weights  # noqa: E402  (tests/oracle/weights.py: torch only)


def _patch_processor() -> None:
    """``AutoProcessor.from_pretrained(vlm)`` -> an object holding the VLM's tokenizer (all SmolVLA reads)."""
    from transformers import AutoTokenizer

    import lerobot.policies.smolvla.smolvlm_with_expert as swe

    class TokenizerOnlyProcessor:
        @staticmethod
        def from_pretrained(model_id, *args, **kwargs):
            return types.SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(model_id))

    swe.AutoProcessor = TokenizerOnlyProcessor


def _features(d: dict):
    from lerobot.configs.types import FeatureType, PolicyFeature

    return {k: PolicyFeature(type=FeatureType[v["type"]], shape=tuple(v["shape"])) for k, v in d.items()}


def _smolvla_config(kwargs: dict):
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    kwargs = dict(kwargs)
    kwargs["input_features"] = _features(kwargs["input_features"])
    kwargs["output_features"] = _features(kwargs["output_features"])
    if "resize_imgs_with_padding" in kwargs:
        kwargs["resize_imgs_with_padding"] = tuple(kwargs["resize_imgs_with_padding"])
    return SmolVLAConfig(**kwargs)


def save_policy(req: dict) -> dict:
    """A tiny or real-size SmolVLA written by LeRobot itself (config, weights, both processor pipelines)."""
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    cfg = _smolvla_config(req["config"])
    policy = SmolVLAPolicy(cfg)
    weights.fill(policy.state_dict(), req["seed"])
    out = Path(req["dir"])
    policy.save_pretrained(out)
    stats = {k: {s: torch.tensor(v, dtype=torch.float32) for s, v in d.items()} for k, d in req["stats"].items()}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    state = policy.state_dict()
    return {
        "digest": weights.digest(state),
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
        "shapes": {k: list(v.shape) for k, v in state.items()},
    }


def _load_policy(path: str):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    cfg = PreTrainedConfig.from_pretrained(path)
    cfg.device = "cpu"
    policy = SmolVLAPolicy.from_pretrained(path, config=cfg)
    pre, post = make_pre_post_processors(
        cfg, pretrained_path=path, preprocessor_overrides={"device_processor": {"device": "cpu"}}
    )
    return policy, pre, post


def _observation(inputs: dict[str, torch.Tensor], tasks: list[str]) -> dict:
    """uint8 [B,H,W,3] cameras -> float [B,3,H,W] / 255 as preprocess_observation does; state as float32."""
    batch: dict = {}
    for key, value in inputs.items():
        if key.startswith("observation.images."):
            img = value.permute(0, 3, 1, 2).contiguous().type(torch.float32)
            img /= 255
            batch[key] = img
        else:
            batch[key] = value.to(torch.float32)
    batch["task"] = list(tasks)
    return batch


def predict(req: dict) -> dict:
    """predict_action_chunk (unnormalised by the postprocessor) and a select_action queue."""
    policy, pre, post = _load_policy(req["dir"])
    inputs = load_file(req["inputs"])
    noise = load_file(req["noise"])  # "chunk": [B, T, max_action_dim]; "queue_k": noise of the k-th chunk
    out: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        batch = pre(_observation(inputs, req["tasks"]))
        out["chunk"] = post(policy.predict_action_chunk(batch, noise=noise["chunk"]))
        policy.reset()
        n = policy.config.n_action_steps
        actions = []
        for step in range(req["queue_steps"]):
            batch = pre(_observation(inputs, req["tasks"]))
            action = policy.select_action(batch, noise=noise[f"queue_{step // n}"])
            actions.append(post(action))
        out["queue"] = torch.stack(actions)  # [steps, B, action_dim]
    vision = policy.model.vlm_with_expert.get_vlm_model().vision_model
    save_file({k: v.contiguous() for k, v in out.items()}, req["out"])
    state = policy.state_dict()
    return {
        "vision_dtype": str(vision.dtype).removeprefix("torch."),
        "runtime_dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
    }


def position_ids(req: dict) -> dict:
    """The ids SmolVLMVisionEmbeddings adds for full images, captured at its position_embedding."""
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig
    from transformers.models.smolvlm.modeling_smolvlm import SmolVLMVisionEmbeddings

    result = {}
    for side in req["sides"]:
        for dtype_name in req["dtypes"]:
            dtype = getattr(torch, dtype_name)
            patch = 2
            emb = SmolVLMVisionEmbeddings(SmolVLMVisionConfig(hidden_size=8, patch_size=patch, image_size=side * patch))
            emb.to(dtype)
            seen = []
            emb.position_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
            pixels = torch.zeros(1, 3, side * patch, side * patch, dtype=dtype)
            mask = torch.ones(1, side, side, dtype=torch.bool)
            emb(pixels, mask)
            result[f"{side}/{dtype_name}"] = seen[0][0].tolist()
    return result


def axis_angle(req: dict) -> dict:
    from lerobot.processor.env_processor import LiberoProcessorStep

    quats = load_file(req["inputs"])["quat"]
    save_file({"axis_angle": LiberoProcessorStep()._quat2axisangle(quats).contiguous()}, req["out"])
    return {}


def plugin_chunk(req: dict) -> dict:
    """The research plugin's first chunk of an episode: LeRobot's SmolVLA, the plugin's world parts (plugin.py)
    and transformers' VJEPA2Model in float16 with SDPA, as ``_build_world_memory_rollout`` loads it."""
    import dataclasses
    import tempfile

    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from transformers import VJEPA2Model

    import plugin

    ckpt = Path(req["dir"])
    raw = json.loads((ckpt / "config.json").read_text())
    smolvla_fields = {f.name for f in dataclasses.fields(SmolVLAConfig)}
    world = {k: v for k, v in raw.items() if k not in smolvla_fields and k != "type"}
    with tempfile.TemporaryDirectory() as tmp:  # the SmolVLA part as a plain smolvla config.json
        cfg_json = {k: v for k, v in raw.items() if k in smolvla_fields or k == "type"} | {"type": "smolvla"}
        (Path(tmp) / "config.json").write_text(json.dumps(cfg_json))
        cfg = PreTrainedConfig.from_pretrained(tmp)
    cfg.device = "cpu"
    policy = SmolVLAPolicy(cfg).eval()
    tensors = load_file(ckpt / "model.safetensors")
    policy.load_state_dict({k: v for k, v in tensors.items() if k.startswith("model.")
                            and not k.startswith("model.world_inject.")}, strict=True)
    d = int(world["world_latent_dim"])
    prophet = plugin.Prophet(d, d, int(world["future_offset"]), int(world.get("prophet_layers", 2)),
                             int(world.get("prophet_heads", 8))).eval()
    prophet.load_state_dict({k.removeprefix("prophet."): v for k, v in tensors.items() if k.startswith("prophet.")})
    inject = plugin.GatedCrossAttention(policy.model.vlm_with_expert.expert_hidden_size,
                                        int(world.get("world_inject_num_heads", 8)), d,
                                        track_stats=bool(world.get("log_attn_stats", True))).eval()
    inject.load_state_dict({k.removeprefix("model.world_inject."): v for k, v in tensors.items()
                            if k.startswith("model.world_inject.")})
    backbone = VJEPA2Model.from_pretrained(req["world_encoder"], torch_dtype=torch.float16,
                                           attn_implementation="sdpa").eval()
    # The plugin's saved preprocessor holds a step LeRobot cannot rebuild (it evaluates with the init
    # policy's processors): LeRobot's own SmolVLA processors with this checkpoint's stats instead.
    steps = json.loads((ckpt / "policy_preprocessor.json").read_text())["steps"]
    state_file = next(s["state_file"] for s in steps if s.get("registry_name") == "normalizer_processor")
    flat = load_file(ckpt / state_file)
    stats: dict = {}
    for key, value in flat.items():
        feature, stat = key.rsplit(".", 1)
        stats.setdefault(feature, {})[stat] = value
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    inputs = load_file(req["inputs"])
    noise = load_file(req["noise"])["chunk"]
    with torch.inference_mode():
        batch = pre(_observation(inputs, req["tasks"]))
        images, _ = policy.prepare_images(batch)
        memory = plugin.first_memory(images[0], backbone, prophet, world)
        policy.model.action_out_proj = plugin.InjectThenProject(policy.model.action_out_proj, inject, memory)
        chunk = post(policy.predict_action_chunk(batch, noise=noise))
    save_file({"chunk": chunk.contiguous(), "memory": memory.contiguous()}, req["out"])
    return {"window": plugin.rollout_window(world), "gate": float(torch.tanh(inject.gate))}


COMMANDS = {
    "save_policy": save_policy, "predict": predict, "position_ids": position_ids, "axis_angle": axis_angle,
    "plugin_chunk": plugin_chunk,
}


def run(req: dict) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(int(req.get("threads", torch.get_num_threads())))  # bf16 GEMMs depend on it
    if req["command"] in ("rollout", "env_reference"):
        import rollout  # tests/oracle/rollout.py: imports the simulator only when asked

        result = getattr(rollout, req["command"])(req)
    else:
        result = COMMANDS[req["command"]](req)
    Path(req["response"]).write_text(json.dumps(result))


def main() -> None:
    req = json.loads(Path(sys.argv[1]).read_text())
    requests = req["requests"] if req["command"] == "batch" else [req]
    if any(r["command"] in ("save_policy", "predict", "rollout", "plugin_chunk") for r in requests):
        _patch_processor()
    for r in requests:
        run(r)


if __name__ == "__main__":
    main()
