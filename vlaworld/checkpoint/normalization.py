"""Normalisation statistics of LeRobot checkpoints: the transforms, the checks, the ``--stats`` file
and the lerobot < 0.4 buffers inside ``model.safetensors``.

The processor files (``vlaworld.checkpoint.processors``) carry the stats; this module says what they
mean. Formulas cite LeRobot's ``normalize_processor.py`` @v0.4.4.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from vlaworld.checkpoint.files import CheckpointError, read_safetensors
from vlaworld.config.features import Feature

log = logging.getLogger(__name__)

EPS = 1e-8  # _NormalizationMixin.eps default (normalize_processor.py L94)
STATS_NEEDED = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"),
           "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}  # L325-394
Stats = dict[str, dict[str, torch.Tensor]]  # {"observation.state": {"mean": t, "std": t, ...}}


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
    if mode not in STATS_NEEDED:
        raise CheckpointError(f"Unsupported normalization mode {mode!r}; known: IDENTITY, {', '.join(STATS_NEEDED)}.")
    lo_name, hi_name = STATS_NEEDED[mode]
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
        names = STATS_NEEDED.get(mode, ())
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


def require_stats(
    step: NormalizerSpec | None,
    features: Mapping[str, Feature],
    norm_map: Mapping[str, str],
    *,
    where: str,
    purpose: str,
) -> None:
    """Refuse unless ``step`` can (un)normalise every one of ``features`` its modes touch (SPEC §8).

    ``where`` names the file the stats came from, ``purpose`` what they are for ("unnormalise the
    actions"). Missing, incomplete or non-finite stats were how evaluations silently scored 0 % (actions
    in normalised units) or NaN: each is an error naming the feature and the fix. A zero or negative std
    is only a warning (LeRobot divides by std + 1e-8), named too.
    """
    modes = {k: norm_map.get(f.type, "IDENTITY") for k, f in features.items()}
    needed = {k: m for k, m in modes.items() if m != "IDENTITY"}
    if not needed:
        return
    fix = ("Running without them gave 0 % success before (actions in normalised units); vlaworld refuses. "
           "Pass --stats FILE (stats=... in load_policy): the training dataset's meta/stats.json.")
    if step is None:
        raise CheckpointError(f"{where}: no step to {purpose}, but {needed} need one. {fix}")
    problems = []
    for key, mode in needed.items():
        sub = step.stats.get(key)
        if key not in step.features:
            problems.append(f"'{key}' is not among the step's features {sorted(step.features)}")
        elif not sub:
            problems.append(f"no stats for '{key}' (the file has {sorted(step.stats)[:6] or 'none'})")
        else:
            for name in STATS_NEEDED[mode]:
                if name not in sub:
                    problems.append(f"'{key}.{name}' is missing ({mode} needs {', '.join(STATS_NEEDED[mode])})")
                elif not bool(torch.isfinite(sub[name]).all()):
                    problems.append(f"'{key}.{name}' has non-finite values")
    if problems:
        raise CheckpointError(f"{where}: cannot {purpose}: {'; '.join(problems)}. {fix}")
    check_stats({k: features[k] for k in needed}, norm_map, step.stats)  # shapes must fit their features
    for key, mode in needed.items():
        if mode == "MEAN_STD" and bool((step.stats[key]["std"] <= 0).any()):
            log.warning("%s: the std of '%s' has zero or negative entries (%s); LeRobot divides by std + %g, "
                        "so those dimensions are blown up", where, key, step.stats[key]["std"].tolist(), step.eps)


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
        return unflatten_stats(read_safetensors(p))
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
