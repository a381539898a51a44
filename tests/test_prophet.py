"""Prophet and gated world injection against torch's own modules configured as the research plugin does.

The references are built from the same building blocks the plugin uses (``nn.TransformerEncoderLayer``
with ``norm_first=True, batch_first=True``, dropout 0; ``nn.MultiheadAttention(batch_first=True)``), their
state dicts are loaded strictly into vlaworld's modules, and outputs must agree to 1e-5 in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlaworld.models import prophet as P
from vlaworld.models import world_inject as W
from vlaworld.checkpoint.strict import load_strict

TOL = 1e-5


class RefProphet(nn.Module):
    """The plugin's Prophet wiring (world_modality/model.py L41-100), from torch modules."""

    def __init__(self, cfg: P.ProphetConfig) -> None:
        super().__init__()
        self.horizon = cfg.horizon
        self.input_proj = nn.Linear(cfg.latent_dim, cfg.hidden_dim)
        self.query_slots = nn.Parameter(0.02 * torch.randn(1, cfg.horizon, cfg.hidden_dim))
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.hidden_dim, nhead=cfg.n_heads, dim_feedforward=4 * cfg.hidden_dim,
            dropout=0.0, batch_first=True, norm_first=True,
        )
        # The plugin keeps enable_nested_tensor=True, which torch turns off for norm_first layers anyway
        # (and which only matters with a padding mask); False here just avoids the warning.
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.n_layers, enable_nested_tensor=False)
        self.output_proj = nn.Linear(cfg.hidden_dim, cfg.latent_dim)

    def forward(self, z_hist: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.input_proj(z_hist), self.query_slots.expand(z_hist.shape[0], -1, -1)], dim=1)
        return self.output_proj(self.encoder(x)[:, -self.horizon :])


class RefInject(nn.Module):
    """The plugin's GatedCrossAttention (model.py L103-141), without its host-side skips."""

    def __init__(self, cfg: W.WorldInjectConfig) -> None:
        super().__init__()
        self.future_proj = nn.Linear(cfg.memory_dim, cfg.width)
        self.cross_attn = nn.MultiheadAttention(cfg.width, cfg.n_heads, batch_first=True)
        self.gate = nn.Parameter(torch.tensor(0.0))

    def forward(self, h: torch.Tensor, mem: torch.Tensor, need_weights: bool = False):
        kv = self.future_proj(mem)
        ctx, attn = self.cross_attn(h, kv, kv, need_weights=need_weights, average_attn_weights=False)
        return h + torch.tanh(self.gate) * ctx, ctx, attn


def _prophet_pair(seed: int = 0) -> tuple[RefProphet, P.Prophet]:
    torch.manual_seed(seed)
    cfg = P.config_from_name("debug")
    ref = RefProphet(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped name or order would show
        for name, p in ref.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    mine = P.Prophet(cfg).eval()
    load_strict(mine, ref.state_dict(), source="reference Prophet")
    return ref, mine


def _inject_pair(gate: float, seed: int = 0) -> tuple[RefInject, W.GatedCrossAttention]:
    torch.manual_seed(seed)
    cfg = W.config_from_name("debug")
    ref = RefInject(cfg).eval()
    with torch.no_grad():
        ref.gate.fill_(gate)
        ref.cross_attn.in_proj_bias.normal_(0.0, 0.1)
        ref.cross_attn.out_proj.bias.normal_(0.0, 0.1)
    mine = W.GatedCrossAttention(cfg).eval()
    load_strict(mine, ref.state_dict(), source="reference GatedCrossAttention")
    return ref, mine


def test_prophet_keys_and_shapes_match_torch_modules():
    ref, mine = _prophet_pair()
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in mine.state_dict().items()}
    assert "encoder.layers.1.self_attn.in_proj_weight" in mine.state_dict()
    assert not any(k.startswith("encoder.norm") for k in mine.state_dict())


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad_fastpath", "autograd"])
def test_prophet_matches_reference(grad):
    ref, mine = _prophet_pair()
    z = torch.randn(3, 4, mine.config.latent_dim)
    with torch.set_grad_enabled(grad):  # under no_grad torch may take the fused encoder fast path
        want, got = ref(z), mine(z)
    assert got.shape == (3, mine.config.horizon, mine.config.latent_dim)
    assert (got - want).abs().max().item() <= TOL


def test_prophet_ignores_history_order():
    # The plugin's Prophet has no positional embedding: a documented property, reproduced on purpose.
    _, mine = _prophet_pair()
    z = torch.randn(2, 4, mine.config.latent_dim)
    with torch.no_grad():
        assert torch.allclose(mine(z), mine(z.flip(1)), atol=1e-6)


def test_predict_memory_delta_adds_current_latent():
    _, mine = _prophet_pair()
    z = torch.randn(2, 4, mine.config.latent_dim)
    with torch.no_grad():
        pred = mine(z)
        assert torch.equal(P.predict_memory(mine, z, delta=False), pred)
        assert torch.equal(P.predict_memory(mine, z, delta=True), z[:, -1:] + pred)


def test_horizon_cosine():
    a = torch.randn(2, 3, 5)
    assert torch.allclose(P.horizon_cosine(a, 2 * a), torch.ones(2, 3))
    assert torch.allclose(P.horizon_cosine(a, -a), -torch.ones(2, 3))


def test_real_size_layout_on_meta():
    with torch.device("meta"):
        prophet = P.Prophet(P.config_from_name("vjepa2-vitg"))
        inject = W.GatedCrossAttention(W.config_from_name("smolvla-libero"))
    sd = prophet.state_dict()
    assert len(sd) == 5 + 2 * 12
    assert sd["query_slots"].shape == (1, 8, 1408)
    assert sd["encoder.layers.0.self_attn.in_proj_weight"].shape == (3 * 1408, 1408)
    assert sd["encoder.layers.0.linear1.weight"].shape == (4 * 1408, 1408)
    assert {k: tuple(v.shape) for k, v in inject.state_dict().items()} == {
        "future_proj.weight": (720, 1408), "future_proj.bias": (720,),
        "cross_attn.in_proj_weight": (2160, 720), "cross_attn.in_proj_bias": (2160,),
        "cross_attn.out_proj.weight": (720, 720), "cross_attn.out_proj.bias": (720,),
        "gate": (),
    }


@pytest.mark.parametrize("record", [False, True], ids=["sdpa", "explicit_softmax"])
def test_inject_matches_reference(record):
    ref, mine = _inject_pair(gate=0.7)
    mine.record_stats = record
    h = torch.randn(2, 5, mine.config.width)
    mem = torch.randn(2, 4, mine.config.memory_dim)
    with torch.no_grad():
        want = ref(h, mem)[0]
        got = mine(h, mem)
    assert (got - want).abs().max().item() <= TOL
    assert (mine.last_stats is not None) == record
    assert mine.gate_value() == pytest.approx(math.tanh(0.7))


def test_recording_stats_never_changes_the_output():
    """Diagnostics must not move actions: the output is bitwise the same with and without them."""
    _, mine = _inject_pair(gate=0.7)
    h = torch.randn(3, 5, mine.config.width)
    mem = torch.randn(3, 4, mine.config.memory_dim)
    mem[1, 0, 0] = float("nan")
    with torch.no_grad():
        plain = mine(h, mem)
        mine.record_stats = True
        recorded = mine(h, mem)
    assert torch.equal(plain.view(torch.int32), recorded.view(torch.int32))
    rows = mine.last_stats.rows()
    assert [r["applied"] for r in rows] == [True, False, True]
    s = mine.last_stats
    assert rows[2]["attn_entropy_ratio"] == pytest.approx(s.entropy_ratio[2].item())
    assert rows[0]["attn_per_k"] == pytest.approx(s.per_k[0].tolist()) and set(rows[1]) == {"applied"}


def test_closed_gate_returns_input_bitwise():
    ref, mine = _inject_pair(gate=0.0)
    h = torch.randn(2, 5, mine.config.width)
    h[0, 0, :3] = -0.0  # signed zeros survive too (h + 0 * ctx would turn them into +0)
    mem = torch.randn(2, 4, mine.config.memory_dim)
    with torch.no_grad():
        out = mine(h, mem)
    assert torch.equal(out.view(torch.int32), h.view(torch.int32))
    assert not mine.is_open()


def test_nonfinite_memory_leaves_only_its_row_untouched():
    ref, mine = _inject_pair(gate=0.5)
    h = torch.randn(3, 5, mine.config.width)
    mem = torch.randn(3, 4, mine.config.memory_dim)
    mem[1, 2, 0] = float("nan")
    with torch.no_grad():
        out = mine(h, mem)
        want = ref(h, mem)[0]
    assert torch.equal(out[1], h[1])
    rows = [0, 2]
    assert (out[rows] - want[rows]).abs().max().item() <= TOL


def test_stats_match_plugin_definitions():
    ref, mine = _inject_pair(gate=0.3)
    mine.record_stats = True
    h = torch.randn(2, 5, mine.config.width)
    mem = torch.randn(2, 4, mine.config.memory_dim)
    with torch.no_grad():
        mine(h, mem)
        _, ctx, attn = ref(h, mem, need_weights=True)  # (B, nh, S, K)
    s = mine.last_stats
    k = mem.shape[1]
    assert s.applied.all()
    assert torch.allclose(s.per_k.sum(dim=-1), torch.ones(2), atol=1e-6)
    assert ((s.entropy_ratio >= 0) & (s.entropy_ratio <= 1)).all()
    p = attn.clamp_min(1e-8)  # the plugin's formulas, over the whole batch (model.py L145-156)
    summ = s.summary()
    assert summ["attn_entropy"] == pytest.approx((-(p * p.log()).sum(-1)).mean().item(), abs=1e-5)
    assert summ["attn_entropy_ratio"] == pytest.approx(summ["attn_entropy"] / math.log(k), abs=1e-6)
    assert summ["attn_pmax"] == pytest.approx(p.max(-1).values.mean().item(), abs=1e-5)
    assert summ["attn_per_k"] == pytest.approx(p.mean(dim=(0, 1, 2)).tolist(), abs=1e-5)
    assert summ["ctx_norm"] == pytest.approx(ctx.norm(dim=-1).mean().item(), rel=1e-5)
    assert summ["gate"] == pytest.approx(math.tanh(0.3))


def test_uniform_attention_has_entropy_ratio_one():
    _, mine = _inject_pair(gate=0.3)
    mine.record_stats = True
    with torch.no_grad():
        mine.future_proj.weight.zero_()  # every memory slot gives the same key: uniform attention
        mine(torch.randn(1, 5, mine.config.width), torch.randn(1, 4, mine.config.memory_dim))
    assert mine.last_stats.entropy_ratio.item() == pytest.approx(1.0, abs=1e-6)
    assert mine.last_stats.per_k[0].tolist() == pytest.approx([0.25] * 4, abs=1e-6)


def test_configs_are_frozen_keyword_only_and_validated():
    with pytest.raises(TypeError):
        P.ProphetConfig(16)  # type: ignore[misc]
    with pytest.raises(ValueError, match="divisible"):
        W.WorldInjectConfig(width=10, memory_dim=12, n_heads=3)
    with pytest.raises(KeyError, match="Did you mean 'debug'"):
        P.config_from_name("debg")
    cfg = P.ProphetConfig(latent_dim=32, hidden_dim=32, horizon=4, n_layers=2, n_heads=4)
    assert (cfg.hidden_dim, cfg.horizon, cfg.ffn_dim) == (32, 4, 128)
    with pytest.raises(AttributeError):
        cfg.horizon = 2  # type: ignore[misc]


def test_shape_errors_are_clear():
    _, mine = _inject_pair(gate=0.3)
    with pytest.raises(ValueError, match="world memory must be"):
        mine(torch.randn(2, 5, mine.config.width), torch.randn(2, 4, 7))
