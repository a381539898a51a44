"""A checkpoint's config decides every module's shape in one place (vlaworld.checkpoint.architecture).

The plugin's defaults, as tests/support/lerobot_layout.py transcribes them from its source, give the
LIBERO checkpoints' modules (the named configs in the models); a tiny config gives modules of exactly
the widths its fields name; a config that cannot be built is refused naming the file.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.support import lerobot_layout as layout
from tests.support.tiny_checkpoint import WORLD_OVERRIDES, tiny_config_json

from vlaworld.bench.stack import REAL_VLM_JSON
from vlaworld.checkpoint.architecture import architecture
from vlaworld.config import ConfigError, PolicyConfig
from vlaworld.models import prophet as P
from vlaworld.models import world_inject as W
from vlaworld.models.smolvla import VLMConfig
from vlaworld import debug


def test_the_plugins_defaults_give_the_libero_modules():
    config = PolicyConfig.from_lerobot(layout.smolvla_world_config())  # every world field at its default
    arch = architecture(config, VLMConfig.from_hf(REAL_VLM_JSON))
    assert arch.smolvla.layout.width == 720  # 960 x 0.75
    assert arch.world_inject == W.CONFIGS["smolvla-libero"]
    assert arch.prophet == P.CONFIGS["vjepa2-vitg"]


def test_a_tiny_config_gives_modules_of_its_own_widths():
    json = tiny_config_json(world=True, **WORLD_OVERRIDES)
    arch = architecture(PolicyConfig.from_lerobot(json), VLMConfig.from_hf(debug.VLM_JSON))
    width = int(debug.VLM_JSON["text_config"]["hidden_size"] * json["expert_width_multiplier"])
    d, k = json["world_latent_dim"], json["future_offset"]
    assert (arch.world_inject.width, arch.world_inject.memory_dim, arch.world_inject.n_heads) == (
        width, d, json["world_inject_num_heads"])
    assert (arch.prophet.latent_dim, arch.prophet.hidden_dim, arch.prophet.horizon, arch.prophet.n_layers,
            arch.prophet.n_heads) == (d, d, k, json["prophet_layers"], json["prophet_heads"])
    model = arch.build()
    inject, prophet = model.model.world_inject, model.prophet  # LeRobot names: model.world_inject, prophet
    assert inject.future_proj.weight.shape == (width, d)  # memory (D) -> the expert's width (W)
    assert prophet.config == arch.prophet and inject.config == arch.world_inject
    assert prophet.query_slots.shape == (1, k, d) and len(prophet.encoder.layers) == json["prophet_layers"]


def test_no_predictor_no_prophet_and_plain_smolvla_no_world_modules():
    json = tiny_config_json(world=True, **WORLD_OVERRIDES, enable_world_predictor=False)
    arch = architecture(PolicyConfig.from_lerobot(json), VLMConfig.from_hf(debug.VLM_JSON))
    assert arch.prophet is None and arch.world_inject is not None
    plain = architecture(PolicyConfig.from_lerobot(tiny_config_json()), VLMConfig.from_hf(debug.VLM_JSON))
    assert plain.world_inject is None and plain.prophet is None


def test_a_config_that_cannot_be_built_is_refused_naming_the_file():
    json = tiny_config_json(world=True, **{**WORLD_OVERRIDES, "world_inject_num_heads": 5})  # width 48 % 5
    with pytest.raises(ConfigError, match=r"ckpt/config.json describes a model that cannot be built.*divisible"):
        architecture(PolicyConfig.from_lerobot(json), VLMConfig.from_hf(debug.VLM_JSON), source="ckpt/config.json")


def test_model_configs_have_no_defaults_for_what_a_checkpoint_decides():
    """A width the checkpoint decides has one source: its config.json (no silent LIBERO default)."""
    for cls, decided in ((W.WorldInjectConfig, ("width", "memory_dim", "n_heads")),
                         (P.ProphetConfig, ("latent_dim", "hidden_dim", "horizon", "n_layers", "n_heads"))):
        defaults = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        assert not defaults & set(decided), f"{cls.__name__} defaults {sorted(defaults & set(decided))}"


def test_the_models_debug_rows_are_the_debug_sizes_parts():
    """One debug size: the demo (and the benchmark's 'debug') is built from vlaworld.debug, and each
    model's CONFIGS['debug'] row is the matching part of it."""
    from vlaworld import demo
    from vlaworld.bench.stack import bench_config
    from vlaworld.models import siglip, vjepa2

    policy = PolicyConfig.from_lerobot(demo.config_json())
    arch = architecture(policy, VLMConfig.from_hf(debug.VLM_JSON))
    assert arch.world_inject == W.CONFIGS["debug"] and arch.prophet == P.CONFIGS["debug"]
    assert siglip.ImageEncoderConfig.from_hf(debug.VLM_JSON) == siglip.CONFIGS["debug"]
    assert vjepa2.VJEPA2Config.from_hf(debug.VJEPA_JSON) == vjepa2.CONFIGS["debug"]
    assert bench_config("debug").architecture == arch
    tests_size = architecture(PolicyConfig.from_lerobot(tiny_config_json(world=True, **WORLD_OVERRIDES)),
                              VLMConfig.from_hf(debug.VLM_JSON))
    assert tests_size.world_inject == arch.world_inject and tests_size.prophet == arch.prophet
    assert tests_size.smolvla.layout == arch.smolvla.layout  # the tests differ in schedule only
    assert dataclasses.replace(tests_size.smolvla.head, chunk_size=50, num_steps=10) == arch.smolvla.head
