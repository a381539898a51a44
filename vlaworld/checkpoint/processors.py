"""LeRobot's processor files (``policy_{pre,post}processor*``) read and written with exact fidelity.

LeRobot ≥ 0.4 keeps normalisation stats and the tokenizer settings beside the weights, in two
pipelines that ``DataProcessorPipeline._save_pretrained`` (``processor/pipeline.py`` L340-395 @v0.4.4)
writes as ``{"name", "steps": [{"registry_name", "config", "state_file"?}]}`` with ``json.dump(...,
indent=2)`` and one ``<pipeline>_step_<i>_<registry_name>.safetensors`` per stateful step (flat keys
``<feature>.<stat>``, float32). Steps are found by ``registry_name``, never by index: the world plugin
inserts ``world_latents_from_cache`` after ``to_batch_processor``, so the normaliser moves from step 5
to step 6. Unknown steps are refused unless known to be no-ops at inference (``_ROLES``).

Raw step entries are kept verbatim, so ``write_processors`` reproduces LeRobot's bytes. Older
checkpoints (lerobot < 0.4) keep the stats inside ``model.safetensors``: see ``extract_legacy_stats``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vlaworld.checkpoint.files import CheckpointError, inside, read_json, read_safetensors
from vlaworld.checkpoint.normalization import (
    EPS,
    STATS_NEEDED,
    NormalizerSpec,
    Stats,
    flatten_stats,
    unflatten_stats,
)
from vlaworld.config.features import Feature

PREPROCESSOR = "policy_preprocessor"  # POLICY_PREPROCESSOR_DEFAULT_NAME (utils/constants.py L56)
POSTPROCESSOR = "policy_postprocessor"

# registry_name -> role. Every step LeRobot's SmolVLA pipelines (processor_smolvla.py L69-91) and the
# world plugin (processor_smolvla_world.py L29-74) save. "noop" steps do nothing at rollout:
# to_batch only unsqueezes unbatched inputs; world_latents_from_cache only acts when the batch carries
# the dataset's `index` (training), it has no config and no state.
_ROLES: dict[str, str] = {
    "rename_observations_processor": "rename", "to_batch_processor": "noop", "world_latents_from_cache": "noop",
    "smolvla_new_line_processor": "newline", "tokenizer_processor": "tokenizer", "device_processor": "device",
    "normalizer_processor": "normalizer", "unnormalizer_processor": "unnormalizer"}
_ALLOWED = {"pre": set(_ROLES.values()) - {"unnormalizer"}, "post": {"unnormalizer", "device", "noop"}}


@dataclass(frozen=True, kw_only=True)
class Step:
    """One pipeline step: its JSON entry exactly as read, and its state tensors (flat keys)."""

    entry: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def registry_name(self) -> str:
        return self.entry["registry_name"]

    @property
    def config(self) -> dict[str, Any]:
        return self.entry.get("config", {})


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]

    def find(self, registry_name: str) -> Step | None:
        """The step with this registry name (at most one is allowed), or None."""
        found = [s for s in self.steps if s.registry_name == registry_name]
        if len(found) > 1:
            raise CheckpointError(f"{self.name}: {len(found)} '{registry_name}' steps; expected one.")
        return found[0] if found else None


@dataclass(frozen=True, kw_only=True)
class TokenizerSpec:
    """``TokenizerProcessorStep.get_config`` (tokenizer_processor.py L219-241 @v0.4.2)."""

    tokenizer_name: str | None
    max_length: int
    padding: str
    padding_side: str
    truncation: bool
    task_key: str = "task"
    local_dir: Path | None = None  # lerobot ≥ 0.6 saves the tokenizer beside the checkpoint ("artifacts")


@dataclass(frozen=True, kw_only=True)
class ProcessorSpec:
    """Both pipelines, plus the views of them that inference needs."""

    preprocessor: Pipeline
    postprocessor: Pipeline

    @cached_property
    def normalizer(self) -> NormalizerSpec | None:
        return _normalizer_view(self.preprocessor.find("normalizer_processor"))

    @cached_property
    def unnormalizer(self) -> NormalizerSpec | None:
        return _normalizer_view(self.postprocessor.find("unnormalizer_processor"))

    @property
    def tokenizer(self) -> TokenizerSpec | None:
        step = self.preprocessor.find("tokenizer_processor")
        if step is None:
            return None
        c, artifacts = step.config, step.entry.get("artifacts", {})
        local = artifacts.get("tokenizer_name")
        return TokenizerSpec(
            tokenizer_name=c.get("tokenizer_name"), max_length=int(c.get("max_length", 512)),
            padding=c.get("padding", "max_length"), padding_side=c.get("padding_side", "right"),
            truncation=bool(c.get("truncation", True)), task_key=c.get("task_key", "task"),
            local_dir=Path(local) if local else None)  # relative to the checkpoint directory

    @property
    def rename_map(self) -> dict[str, str]:
        step = self.preprocessor.find("rename_observations_processor")
        return dict(step.config.get("rename_map", {})) if step else {}

    @property
    def appends_newline(self) -> bool:
        """Whether the task text gets a trailing newline (processor_smolvla.py L106-136)."""
        return self.preprocessor.find("smolvla_new_line_processor") is not None

    @property
    def float_dtype(self) -> str | None:
        """``device_processor`` float_dtype: inputs are cast to it before normalising (None: unchanged)."""
        step = self.preprocessor.find("device_processor")
        return step.config.get("float_dtype") if step else None

    def with_stats(self, pre: Stats | None = None, post: Stats | None = None) -> ProcessorSpec:
        """The same pipelines with the (un)normaliser stats replaced (as LeRobot's ``hotswap_stats``)."""
        return ProcessorSpec(preprocessor=_swap(self.preprocessor, "normalizer_processor", pre),
                             postprocessor=_swap(self.postprocessor, "unnormalizer_processor", post))


def _swap(pipe: Pipeline, name: str, stats: Stats | None) -> Pipeline:
    if stats is None:
        return pipe
    steps = tuple(replace(s, state=flatten_stats(stats)) if s.registry_name == name else s
                  for s in pipe.steps)
    if not any(s.registry_name == name for s in steps):
        raise CheckpointError(f"{pipe.name} has no '{name}' step to take the new stats.")
    return replace(pipe, steps=steps)


def _normalizer_view(step: Step | None) -> NormalizerSpec | None:
    if step is None:
        return None
    c = step.config
    feats = {k: Feature(type=str(v["type"]), shape=tuple(int(d) for d in v["shape"]))
             for k, v in c.get("features", {}).items()}
    keys, norm_map = c.get("normalize_observation_keys"), dict(c.get("norm_map", {}))
    unknown = {k: v for k, v in norm_map.items() if v != "IDENTITY" and v not in STATS_NEEDED}
    if unknown:
        raise CheckpointError(f"{step.registry_name}: unknown normalization modes {unknown}; "
                              f"known: IDENTITY, {', '.join(STATS_NEEDED)}.")
    return NormalizerSpec(features=feats, norm_map=norm_map,
                          stats=unflatten_stats(step.state), eps=float(c.get("eps", EPS)),
                          normalize_observation_keys=tuple(keys) if keys is not None else None)


# ---------------------------------------------------------------------------------------- reading --

def has_processors(ckpt_dir: str | Path) -> bool:
    """True for a lerobot ≥ 0.4 checkpoint (processor JSONs present); False means the legacy layout."""
    return (Path(ckpt_dir) / f"{PREPROCESSOR}.json").is_file()


def read_processors(ckpt_dir: str | Path) -> ProcessorSpec:
    """Parse both processor JSONs of ``ckpt_dir`` and load their state files."""
    ckpt = Path(ckpt_dir)
    pipes = []
    for name in (PREPROCESSOR, POSTPROCESSOR):
        path = ckpt / f"{name}.json"
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing. A lerobot >= 0.4 checkpoint has both {PREPROCESSOR}.json and "
                f"{POSTPROCESSOR}.json; a lerobot < 0.4 one has neither (its stats are in model.safetensors).")
        pipes.append(_read_pipeline(ckpt, path, post=name == POSTPROCESSOR))
    spec = ProcessorSpec(preprocessor=pipes[0], postprocessor=pipes[1])
    _ = spec.normalizer, spec.unnormalizer, spec.tokenizer  # validate now: duplicates, unknown modes
    return spec


def _read_pipeline(ckpt: Path, path: Path, *, post: bool) -> Pipeline:
    raw = read_json(path)
    if not isinstance(raw.get("steps"), list):
        raise CheckpointError(f"{path}: expected {{'name': ..., 'steps': [...]}} as LeRobot writes it.")
    steps = []
    for i, entry in enumerate(raw["steps"]):
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path.name} step {i} is not a JSON object: {entry!r}")
        name = entry.get("registry_name")
        role = _ROLES.get(name or "")
        allowed = _ALLOWED["post" if post else "pre"]
        if role not in allowed:
            what = name or entry.get("class", "<no registry_name>")
            raise CheckpointError(
                f"{path.name} step {i} '{what}' is not a step vlaworld can reproduce or knows to do nothing "
                f"at inference here (allowed: {sorted(k for k, r in _ROLES.items() if r in allowed)}). Remove "
                "it from the JSON only if it does nothing at inference, or add support for it.")
        state: dict[str, torch.Tensor] = {}
        if "state_file" in entry:
            state_path = inside(ckpt, str(entry["state_file"]), f"{path} step {i} ({name}) state_file")
            if not state_path.is_file():
                raise CheckpointError(f"{path.name} step {i} ({name}) names {state_path}, which is missing.")
            state = read_safetensors(state_path)
        steps.append(Step(entry=entry, state=state))
    return Pipeline(name=str(raw.get("name", path.stem)), steps=tuple(steps))


# ---------------------------------------------------------------------------------------- writing --

def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name.lower())  # pipeline.py L347


def pipeline_json(pipe: Pipeline) -> dict[str, Any]:
    """The dict LeRobot dumps: step entries in order, ``state_file`` renamed for the step's index."""
    steps = []
    for i, step in enumerate(pipe.steps):
        # LeRobot's key order: registry_name, config, state_file (L362-389); 0.6's "artifacts" follow.
        head = {k: v for k, v in step.entry.items() if k in ("registry_name", "class", "config")}
        tail = {k: v for k, v in step.entry.items() if k not in head and k != "state_file"}
        state = {"state_file": f"{_sanitize(pipe.name)}_step_{i}_{step.registry_name}.safetensors"}
        steps.append({**head, **(state if step.state else {}), **tail})
    return {"name": pipe.name, "steps": steps}


def write_processors(out_dir: str | Path, spec: ProcessorSpec) -> list[Path]:
    """Write both pipelines as ``DataProcessorPipeline.save_pretrained`` does; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pipe in (spec.preprocessor, spec.postprocessor):
        doc = pipeline_json(pipe)
        for step, entry in zip(pipe.steps, doc["steps"]):
            if step.state:
                state = {k: v.detach().to("cpu").contiguous() for k, v in step.state.items()}
                save_file(state, out / entry["state_file"])
                written.append(out / entry["state_file"])
        path = out / f"{_sanitize(pipe.name)}.json"
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)  # pipeline.py L394-395: no trailing newline
        written.append(path)
    return written


def smolvla_spec(*, input_features: Mapping[str, Feature], output_features: Mapping[str, Feature],
                 norm_map: Mapping[str, str], tokenizer_name: str, max_length: int = 48,
                 padding: str = "longest", stats: Stats | None = None, post_stats: Stats | None = None,
                 rename_map: Mapping[str, str] | None = None, device: str = "cpu",
                 world: bool = False) -> ProcessorSpec:
    """The pipelines ``make_smolvla_pre_post_processors`` builds (processor_smolvla.py L69-91), e.g. to
    save a legacy checkpoint in the current layout. ``world`` adds the plugin's step after to_batch."""
    def entry(name: str, config: dict[str, Any]) -> dict[str, Any]:
        return {"registry_name": name, "config": config}

    def norm(name: str, feats: Mapping[str, Feature], st: Stats | None) -> Step:
        config = {"eps": EPS, "features": {k: {"type": f.type, "shape": list(f.shape)} for k, f in feats.items()},
                  "norm_map": dict(norm_map)}  # _NormalizationMixin.get_config L231-240
        return Step(entry=entry(name, config), state=flatten_stats(st or {}))

    tokenizer = {"max_length": max_length, "task_key": "task", "padding_side": "right", "padding": padding,
                 "truncation": True, "tokenizer_name": tokenizer_name}
    pre = [entry("rename_observations_processor", {"rename_map": dict(rename_map or {})}),
           entry("to_batch_processor", {})] + ([entry("world_latents_from_cache", {})] if world else []) + [
           entry("smolvla_new_line_processor", {}), entry("tokenizer_processor", tokenizer),
           entry("device_processor", {"device": device, "float_dtype": None})]
    pre_steps = (*(Step(entry=e) for e in pre),
                 norm("normalizer_processor", {**input_features, **output_features}, stats))
    post_steps = (norm("unnormalizer_processor", output_features, stats if post_stats is None else post_stats),
                  Step(entry=entry("device_processor", {"device": "cpu", "float_dtype": None})))
    return ProcessorSpec(preprocessor=Pipeline(name=PREPROCESSOR, steps=pre_steps),
                         postprocessor=Pipeline(name=POSTPROCESSOR, steps=post_steps))
