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
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from vlaworld.statedict import CheckpointError

PREPROCESSOR = "policy_preprocessor"  # POLICY_PREPROCESSOR_DEFAULT_NAME (utils/constants.py L56)
POSTPROCESSOR = "policy_postprocessor"
EPS = 1e-8  # _NormalizationMixin.eps default (normalize_processor.py L94)

# registry_name -> role. Every step LeRobot's SmolVLA pipelines (processor_smolvla.py L69-91) and the
# world plugin (processor_smolvla_world.py L29-74) save. "noop" steps do nothing at rollout:
# to_batch only unsqueezes unbatched inputs; world_latents_from_cache only acts when the batch carries
# the dataset's `index` (training), it has no config and no state.
_ROLES: dict[str, str] = {
    "rename_observations_processor": "rename", "to_batch_processor": "noop", "world_latents_from_cache": "noop",
    "smolvla_new_line_processor": "newline", "tokenizer_processor": "tokenizer", "device_processor": "device",
    "normalizer_processor": "normalizer", "unnormalizer_processor": "unnormalizer"}
_ALLOWED = {"pre": set(_ROLES.values()) - {"unnormalizer"}, "post": {"unnormalizer", "device", "noop"}}
_NEEDED = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"),
           "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}  # L325-394
Stats = dict[str, dict[str, torch.Tensor]]  # {"observation.state": {"mean": t, "std": t, ...}}


@dataclass(frozen=True, kw_only=True)
class Feature:
    """A LeRobot ``PolicyFeature``: ``type`` is a FeatureType name (VISUAL, STATE, ACTION, ENV...)."""

    type: str
    shape: tuple[int, ...]


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
class NormalizerSpec:
    """A (un)normaliser step: per-feature modes by feature type, eps, stats as float32."""

    features: dict[str, Feature]
    norm_map: dict[str, str]  # FeatureType name -> NormalizationMode name
    stats: Stats
    eps: float = EPS
    normalize_observation_keys: tuple[str, ...] | None = None

    def mode(self, key: str) -> str:
        """The mode LeRobot applies to ``key``: IDENTITY for unknown types and for missing stats (L305-307)."""
        ft = self.features.get(key)
        if ft is None or key not in self.stats:
            return "IDENTITY"
        if self.normalize_observation_keys is not None and ft.type != "ACTION":
            if key not in self.normalize_observation_keys:  # L255-256
                return "IDENTITY"
        return self.norm_map.get(ft.type, "IDENTITY")

    def apply(self, key: str, x: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
        return normalize(x, self.stats.get(key, {}), self.mode(key), eps=self.eps, inverse=inverse)


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
    unknown = {k: v for k, v in norm_map.items() if v != "IDENTITY" and v not in _NEEDED}
    if unknown:
        raise CheckpointError(f"{step.registry_name}: unknown normalization modes {unknown}; "
                              f"known: IDENTITY, {', '.join(_NEEDED)}.")
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
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
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
            state_path = ckpt / entry["state_file"]
            if not state_path.is_file():
                raise CheckpointError(f"{path.name} step {i} ({name}) names {state_path}, which is missing.")
            state = load_file(state_path)
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


def flatten_stats(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """``{"f": {"mean": ...}}`` -> ``{"f.mean": float32 tensor}`` (``_NormalizationMixin.state_dict`` L154-169)."""
    return {f"{k}.{s}": torch.as_tensor(v, dtype=torch.float32).cpu()
            for k, sub in stats.items() for s, v in sub.items()}


def unflatten_stats(flat: Mapping[str, torch.Tensor]) -> Stats:
    """Inverse of ``flatten_stats``: the stat is after the last dot (``load_state_dict`` L205-210)."""
    out: Stats = {}
    for key, t in flat.items():
        feat, _, stat = key.rpartition(".")
        out.setdefault(feat, {})[stat] = t.to(torch.float32)
    return out


# ---------------------------------------------------------------------------------- normalisation --

def _stat(stats: Mapping[str, torch.Tensor], name: str, mode: str, x: torch.Tensor) -> torch.Tensor:
    if name not in stats:
        raise CheckpointError(f"{mode} normalisation needs '{name}', the stats have {sorted(stats)}.")
    return stats[name].to(device=x.device, dtype=x.dtype)  # LeRobot moves stats to x's dtype (L318-321)


def normalize(x: torch.Tensor, stats: Mapping[str, torch.Tensor], mode: str, *, eps: float = EPS,
              inverse: bool = False, legacy_min_max: bool = False) -> torch.Tensor:
    """LeRobot ``_apply_transform`` (normalize_processor.py L305-397 @v0.4.4), computed in x's dtype.

    MEAN_STD: (x-mean)/(std+eps), inverse x*std+mean (no eps, L336-338). MIN_MAX: 2(x-min)/d-1, inverse
    (x+1)/2*d+min, with d=max-min and d=eps only where d==0 (L349-360); QUANTILES / QUANTILE10 the same
    on q01/q99, q10/q90. ``legacy_min_max``: lerobot < 0.4's 2(x-min)/(max-min+1e-8)-1 (policies/
    normalize.py L173-181 @78b866116^). Checked bit-identical to LeRobot 0.4.4 in fp32/bf16/fp64.
    """
    if mode == "IDENTITY":
        return x
    if mode not in _NEEDED:
        raise CheckpointError(f"Unsupported normalization mode {mode!r}; known: IDENTITY, {', '.join(_NEEDED)}.")
    lo_name, hi_name = _NEEDED[mode]
    lo, hi = _stat(stats, lo_name, mode, x), _stat(stats, hi_name, mode, x)
    if mode == "MEAN_STD":
        return x * hi + lo if inverse else (x - lo) / (hi + eps)
    span = hi - lo
    if legacy_min_max and mode == "MIN_MAX":
        return (x + 1) / 2 * span + lo if inverse else (x - lo) / (span + 1e-8) * 2 - 1
    span = torch.where(span == 0, torch.tensor(eps, device=x.device, dtype=x.dtype), span)
    return (x + 1) / 2 * span + lo if inverse else 2 * (x - lo) / span - 1


def unnormalize(x: torch.Tensor, stats: Mapping[str, torch.Tensor], mode: str, *, eps: float = EPS,
                legacy_min_max: bool = False) -> torch.Tensor:
    """The inverse of ``normalize`` (LeRobot's ``UnnormalizerProcessorStep``)."""
    return normalize(x, stats, mode, eps=eps, inverse=True, legacy_min_max=legacy_min_max)


@dataclass(frozen=True, kw_only=True)
class StatsCheck:
    """Whether ``stats`` can normalise ``features``. status: ok | missing | unmatched | partial."""

    status: Literal["ok", "missing", "unmatched", "partial"]
    needed: tuple[str, ...]  # features whose mode is not IDENTITY
    missing: tuple[str, ...]  # needed features without usable stats
    stats_keys: tuple[str, ...]
    message: str


def check_stats(features: Mapping[str, Feature], norm_map: Mapping[str, str], stats: Stats) -> StatsCheck:
    """Classify ``stats`` for ``features`` (SPEC §4).

    ``missing``: no usable stats (none at all, or only incomplete / never-set ones) -> refuse to run (it
    gave 0 % success). ``unmatched``: stats keyed by none of the needed features (lerobot/smolvla_base's
    ``so100-blue.buffer.action``) -> warn loudly and use identity, as LeRobot silently does (L306).
    ``partial``: some needed features lack usable stats. A stat that does not broadcast to its feature's
    shape is a CheckpointError.
    """
    needed = tuple(k for k, f in features.items() if norm_map.get(f.type, "IDENTITY") != "IDENTITY")
    missing = []
    for key in needed:
        mode = norm_map[features[key].type]
        sub = stats.get(key, {})
        names = _NEEDED.get(mode, ())
        if not all(n in sub and bool(torch.isfinite(sub[n]).all()) for n in names):
            missing.append(key)  # absent, incomplete, or legacy's +inf "never set" (normalize.py L57-60)
            continue
        for n in names:
            try:
                torch.broadcast_shapes(tuple(sub[n].shape), features[key].shape)
            except RuntimeError as e:
                raise CheckpointError(f"Stat '{key}.{n}' has shape {tuple(sub[n].shape)}, which does not "
                                      f"fit feature {key} of shape {features[key].shape}.") from e
    keys = tuple(sorted(stats))
    modes = {k: norm_map[features[k].type] for k in missing}
    if not missing:
        status, msg = "ok", "ok"
    elif stats and not any(k in stats for k in needed):
        status, msg = "unmatched", (f"Normalisation stats are keyed {list(keys)[:6]}, matching none of "
                                    f"{list(needed)}: these features will NOT be normalised (identity).")
    elif len(missing) == len(needed):
        status, msg = "missing", (f"No usable normalisation stats for {modes} (absent, incomplete or never "
                                  "set); pass --stats FILE (a dataset's meta/stats.json).")
    else:
        status, msg = "partial", f"No usable stats for {modes}; the stats have {list(keys)}."
    return StatsCheck(status=status, needed=needed, missing=tuple(missing), stats_keys=keys, message=msg)


# ------------------------------------------------------------------------------ --stats and legacy --

def load_stats_file(path: str | Path) -> Stats:
    """Stats from ``--stats FILE``: safetensors with flat ``<feature>.<stat>`` keys (a processor state
    file), or LeRobot's dataset ``meta/stats.json`` ``{feature: {stat: nested list}}`` (datasets/utils.py
    ``write_stats`` L295-303); a dataset root directory means its ``meta/stats.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "meta" / "stats.json"
    if not p.is_file():
        raise CheckpointError(f"Stats file {p} does not exist.")
    if p.suffix == ".safetensors":
        return unflatten_stats(load_file(p))
    if p.suffix != ".json":
        raise CheckpointError(f"{p}: --stats takes a .safetensors or a .json file.")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is not valid JSON ({e}).") from e
    out: Stats = {}
    for feat, sub in raw.items() if isinstance(raw, dict) else ():
        if not isinstance(sub, dict):
            raise CheckpointError(f"{p}: '{feat}' should map stat names to lists, got {type(sub).__name__}.")
        try:
            out[feat] = {s: torch.tensor(v, dtype=torch.float32) for s, v in sub.items()}
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{p}: '{feat}' has a non-numeric stat ({e}).") from e
    if not out:
        raise CheckpointError(f"{p}: expected {{feature: {{stat: list}}}} as in a dataset's meta/stats.json.")
    return out


# Module names of lerobot < 0.4 (policies/normalize.py @78b866116^ L148-149, modeling_smolvla.py).
LEGACY_MODULES = ("normalize_inputs", "normalize_targets", "unnormalize_outputs")


@dataclass(frozen=True, kw_only=True)
class LegacyStats:
    """Stats from ``normalize_inputs.buffer_<feature with . -> _>.<stat>`` keys of model.safetensors."""

    inputs: Stats
    targets: Stats
    outputs: Stats
    consumed: tuple[str, ...]  # every tensor key under the three modules: drop them from the weights
    unmatched: tuple[str, ...]  # consumed buffer names that match no feature (e.g. per-dataset prefixes)

    @property
    def pre(self) -> Stats:
        """What the preprocessor normalises with (inputs, then targets for the action)."""
        return {**self.targets, **self.inputs}

    @property
    def post(self) -> Stats:
        """What the postprocessor unnormalises with (outputs, falling back to targets)."""
        return {**self.targets, **self.outputs}


def extract_legacy_stats(tensors: Mapping[str, torch.Tensor], features: Mapping[str, Feature]) -> LegacyStats:
    """Pull lerobot < 0.4 normalisation buffers out of a weight dict, matched to ``features`` by name.

    A buffer is ``"buffer_" + key.replace(".", "_")`` (normalize.py L149). Per-dataset variants
    (``normalize_inputs.so100_buffer_observation_state.mean``) and any other name are consumed but
    reported in ``unmatched``; the mapping back is by feature name because "_" -> "." is ambiguous
    (LeRobot's own migration turns ``wrist_image`` into ``wrist.image``, migrate_policy_normalization.py L107).
    """
    by_buffer = {"buffer_" + k.replace(".", "_"): k for k in features}
    groups: dict[str, Stats] = {m: {} for m in LEGACY_MODULES}
    consumed, unmatched = [], set()
    for key, t in tensors.items():
        module, _, rest = key.partition(".")
        if module not in groups:
            continue
        consumed.append(key)
        buffer, _, stat = rest.rpartition(".")
        if buffer in by_buffer:
            groups[module].setdefault(by_buffer[buffer], {})[stat] = t.to(torch.float32)
        else:
            unmatched.add(f"{module}.{buffer}")
    return LegacyStats(inputs=groups["normalize_inputs"], targets=groups["normalize_targets"],
                       outputs=groups["unnormalize_outputs"], consumed=tuple(consumed),
                       unmatched=tuple(sorted(unmatched)))
