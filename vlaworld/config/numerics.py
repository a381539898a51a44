"""Numerics profiles: which LeRobot generation's arithmetic a policy reproduces (SPEC §5).

LeRobot 0.4.x runs transformers 4.57, LeRobot >= 0.5 transformers 5, and one checkpoint gives different
actions under them (``reference/model_facts.md`` §1.4):

- Vision position ids. transformers 4.55.1-4.57.x bucketise SmolVLM's patch coordinates in the pixels'
  dtype (huggingface/transformers#41190, fixed in 5.0 by #41374): in float32 every row and column index
  k >= 1 lands in bucket k-1, so the ids read [0, 0, 1, ..., n-2] per axis; in bf16/fp16 they are exact.
  transformers 5 always gives arange.
- Runtime dtypes. LeRobot decides them by how it builds the modules, not by the dtypes stored in the
  checkpoint (loading copies the file's tensors into the parameters, keeping the parameters' dtype).
  ``SmolVLMWithExpertModel`` (smolvlm_with_expert.py L76-138 @v0.4.4, unchanged in 0.6.1):
  ``load_vlm_weights`` true -> ``from_pretrained(vlm, torch_dtype="bfloat16")``, which sets the config
  and every sub-config to bf16, so the VLM and the expert (``AutoModel.from_config`` of the text config)
  run in bf16; false -> ``SmolVLMForConditionalGeneration(config)``, whose vision tower and text model
  are built by ``_from_config`` in their sub-config's own ``dtype``/``torch_dtype`` (float32 when
  absent), the connector and lm_head in torch's default float32, and the expert in the text config's
  dtype. The cross-attention k/v projections, the state/action projections and the world modules are
  plain ``nn.Linear`` made afterwards: float32. (Checked against the real LeRobot in
  tests/test_oracle_lerobot.py.)
- The LIBERO state vector is computed with LeRobot's own float32 torch formula in both generations
  (``vlaworld.envs.observation``), so it is not a profile choice.

This module is torch-free: dtypes are named, and the model applies them (``vlaworld.load``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlaworld.errors import VlaworldError

PROFILES: tuple[str, ...] = ("lerobot-0.4", "lerobot-0.6")
DEFAULT_PROFILE = "lerobot-0.4"  # the team trains and evaluates with LeRobot 0.4.2
FLOAT_DTYPES = ("float32", "bfloat16", "float16")


class NumericsError(VlaworldError, ValueError):
    """An unknown profile, or a VLM config whose dtype the profile cannot resolve."""


@dataclass(frozen=True, kw_only=True)
class RuntimeDtypes:
    """The dtype each part of SmolVLA runs in (names of torch dtypes)."""

    vision: str
    connector: str
    text: str
    lm_head: str
    expert: str
    # Cross-attention k/v, state/action projections and world modules: float32 in every LeRobot.
    projections: str = "float32"

    def as_dict(self) -> dict[str, str]:
        return {
            "vision": self.vision, "connector": self.connector, "text": self.text, "lm_head": self.lm_head,
            "expert": self.expert, "projections": self.projections,
        }

    @classmethod
    def uniform(cls, dtype: str) -> RuntimeDtypes:
        """Everything in one dtype (an explicit ``dtype=`` override)."""
        return cls(vision=dtype, connector=dtype, text=dtype, lm_head=dtype, expert=dtype, projections=dtype)


@dataclass(frozen=True, kw_only=True)
class NumericsProfile:
    """One LeRobot generation: the transformers semantics it runs and how it builds its modules."""

    name: str
    lerobot: str  # the LeRobot releases it reproduces
    transformers: str  # the transformers line they run
    shifted_fp32_position_ids: bool  # transformers 4.55.1-4.57.x vision position ids

    def runtime_dtypes(self, load_vlm_weights: bool, vlm_config: dict[str, Any]) -> RuntimeDtypes:
        """The dtypes LeRobot runs a checkpoint in, from its ``load_vlm_weights`` and the VLM config.json.

        Identical for both generations: transformers 4.57 and 5 apply sub-config dtypes the same way in
        ``_from_config`` and ``from_pretrained(torch_dtype=...)`` (checked against both LeRobots).
        """
        if load_vlm_weights:
            return RuntimeDtypes(vision="bfloat16", connector="bfloat16", text="bfloat16",
                                 lm_head="bfloat16", expert="bfloat16")
        vision = config_dtype(vlm_config.get("vision_config") or {}, "vision_config")
        text = config_dtype(vlm_config.get("text_config") or {}, "text_config")
        return RuntimeDtypes(vision=vision, connector="float32", text=text, lm_head="float32", expert=text)


PROFILE_TABLE: dict[str, NumericsProfile] = {
    "lerobot-0.4": NumericsProfile(
        name="lerobot-0.4", lerobot="0.4.x", transformers="4.57", shifted_fp32_position_ids=True
    ),
    "lerobot-0.6": NumericsProfile(
        name="lerobot-0.6", lerobot=">= 0.5", transformers="5.x", shifted_fp32_position_ids=False
    ),
}


def profile(name: str | None) -> NumericsProfile:
    """The named profile (None: the default); an unknown name is an error listing the choices."""
    name = DEFAULT_PROFILE if name is None else name
    if name not in PROFILE_TABLE:
        raise NumericsError(
            f"numerics={name!r}: choose one of {', '.join(PROFILES)} (the LeRobot generation whose actions "
            f"to reproduce: lerobot-0.4 for LeRobot 0.4.x / transformers 4.57, lerobot-0.6 for LeRobot >= 0.5 / "
            "transformers 5)"
        )
    return PROFILE_TABLE[name]


def config_dtype(sub_config: dict[str, Any], where: str) -> str:
    """A sub-config's dtype as transformers reads it: ``dtype``, else ``torch_dtype``, else float32."""
    value = sub_config.get("dtype")
    if value is None:
        value = sub_config.get("torch_dtype")
    if value is None:
        return "float32"  # torch's default dtype when _from_config finds none
    if value not in FLOAT_DTYPES:
        raise NumericsError(
            f"VLM config.json {where}.dtype={value!r}: LeRobot would build that part in it; vlaworld runs "
            f"{', '.join(FLOAT_DTYPES)}"
        )
    return value
