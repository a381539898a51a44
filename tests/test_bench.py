"""The benchmark's pieces: timing statistics, FLOP counts, render schedules, world-encoder calls per env
step, and the JSON the CLI prints. Behaviour only: no wall-clock thresholds."""

from __future__ import annotations

import json

import pytest
import torch

from vlaworld.bench import cli
from vlaworld.bench.chunk import speedups
from vlaworld.bench.diagnostics_cost import DiagnosticsCostConfig
from vlaworld.bench.diagnostics_cost import eval_command as diag_eval_command
from vlaworld.bench.env_rate import EnvRateConfig, eval_command
from vlaworld.bench.flops import count_stage_flops, floor_ms
from vlaworld.bench.lazy_render import LazyRenderConfig, schedule, world_frames
from vlaworld.bench.names import ALL_STAGES
from vlaworld.bench.stack import bench_config, build_stack
from vlaworld.bench.timing import measure, summarize
from vlaworld.eval.worker import Render
from vlaworld.bench.world_calls import expected_clips_per_env_step, world_calls_table


@pytest.fixture(scope="module", autouse=True)
def demo_cache(tmp_path_factory):
    """The demo policy files in a private cache (the world-calls part loads them)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLAWORLD_CACHE", str(tmp_path_factory.mktemp("demo_cache")))
    yield
    mp.undo()


# ------------------------------------------------------------------------------------ timing
def test_summarize_reports_median_mean_extremes_and_spread():
    s = summarize([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (s.median, s.min, s.max, s.n) == (3.0, 1.0, 100.0, 5)
    assert s.mean == pytest.approx(22.0)
    assert s.stdev == pytest.approx(43.6176, rel=1e-4)
    assert summarize([7.0]).stdev == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_measure_times_the_first_call_apart_then_warms_up_then_repeats():
    calls = []
    m = measure(lambda: calls.append(1), "cpu", warmup=3, repeats=4)
    assert len(calls) == 3 + 4
    assert m.stats.n == 4
    assert m.first_call_ms >= 0 and m.cpu_ms >= 0
    assert set(m.as_dict()) >= {"median", "mean", "min", "max", "stdev", "n", "first_call_ms", "cpu_ms"}
    with pytest.raises(ValueError):
        measure(lambda: None, "cpu", warmup=0, repeats=1)


def test_speedups_divide_eager_by_each_mode():
    lat = {"eager": {"1": {"total": {"median": 10.0}, "vision": {"median": 4.0}}},
           "compiled": {"1": {"total": {"median": 5.0}, "max_abs_diff_vs_eager": {"total": 0.0}}}}
    assert speedups(lat) == {"compiled": {"1": {"total": 2.0}}}


# ------------------------------------------------------------------------------------ model and FLOPs
def test_random_stack_has_an_open_gate_unit_norms_and_finite_outputs():
    stack = build_stack(bench_config("debug"), "cpu", torch.float32)
    assert stack.world is not None and stack.world.active
    norms = [p for n, p in stack.model.named_parameters() if n.endswith("norm.weight") or ".norm1.weight" in n]
    assert norms and all(bool((p == 1).all()) for p in norms)


def test_flops_are_linear_in_batch_and_the_totals_add_up():
    cfg = bench_config("debug")
    one, three = count_stage_flops(cfg, 1), count_stage_flops(cfg, 3)
    assert all(three[k] == 3 * one[k] for k in one)
    assert one["total_smolvla"] == one["vision"] + one["prefix"] + one["denoise_smolvla"]
    assert one["total"] > one["total_smolvla"] > 0 and one["world_encoder"] > 0
    assert floor_ms(2 * 10**12, 1.0) == pytest.approx(2000.0)
    assert floor_ms(10, None) is None


def test_real_size_flops_match_the_published_estimates():
    """model_facts §4: ~0.21 TFLOP per camera in vision, ~1.1 TFLOP per 4-frame V-JEPA clip (T=4 clips)."""
    real = count_stage_flops(bench_config("real"), 1)
    assert real["vision"] / 2 == pytest.approx(0.21e12, rel=0.05)
    assert real["world_encoder"] / 4 == pytest.approx(1.1e12, rel=0.05)


# ------------------------------------------------------------------------------------ world calls
def test_world_encoder_clips_per_env_step_by_memory_mode():
    table = world_calls_table([5, 10], modes=("pred", "shuffle", "none", "zero", "random"), chunks=2)
    assert table["pred"] == {"5": pytest.approx(3 / 5), "10": pytest.approx(0.3)}  # the demo's T = 3 latents
    assert table["shuffle"]["10"] == pytest.approx(0.3)
    for mode in ("none", "zero", "random"):
        assert table[mode] == {"5": 0.0, "10": 0.0}
    assert expected_clips_per_env_step("pred", 4, 10) == pytest.approx(0.4)
    assert expected_clips_per_env_step("random", 4, 10) == 0.0


# ------------------------------------------------------------------------------------ env side
def test_render_schedules_render_boundaries_and_world_frames_only():
    cfg = LazyRenderConfig(n_action_steps=10, steps=30)
    assert world_frames("pred", cfg) == 7 and world_frames("none", cfg) == 0
    none = schedule(cfg, 0)
    assert [t for t, f in enumerate(none, start=1) if f] == [10, 20, 30]
    assert all(f is Render.ALL for f in none if f)
    pred = schedule(cfg, 7)
    assert pred[3:9] == [Render.WORLD] * 6 and pred[9] is Render.ALL and pred[:3] == [Render.NONE] * 3
    assert sum(f is Render.WORLD for f in pred) == 18
    assert all(f is Render.ALL for f in schedule(cfg, None))


def test_env_rate_runs_the_evaluator_with_the_scripted_policy():
    cmd = eval_command(EnvRateConfig(n_envs=3, episodes=2, max_steps=40), 3, "/tmp/x")
    joined = " ".join(cmd)
    assert "-m vlaworld.eval --policy scripted" in joined
    assert "--n-envs 3" in joined and "--episodes 2" in joined and "--max-steps 40" in joined
    assert "--max-steps" not in eval_command(EnvRateConfig(n_envs=2), 2, "/tmp/x")  # the suite's limit


def test_diagnostics_cost_runs_the_demo_policy_with_and_without_the_flag():
    cfg = DiagnosticsCostConfig(n_envs=2, episodes=3, max_steps=30)
    plain = " ".join(diag_eval_command(cfg, "/tmp/x", diagnostics=False))
    diag = diag_eval_command(cfg, "/tmp/y", diagnostics=True)
    assert "-m vlaworld.eval --ckpt demo --memory pred" in plain and "--diagnostics" not in plain
    assert diag[-1] == "--diagnostics" and "--episodes 3 --max-steps 30 --n-envs 2" in " ".join(diag)


# ------------------------------------------------------------------------------------ CLI
def _run_cli(capsys, *argv: str) -> dict:
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_prints_the_spec_json_for_a_tiny_problem(capsys):
    out = _run_cli(capsys, "--config", "debug", "--batch", "1", "2", "--parts", "chunk", "flops", "world",
                   "--repeats", "1", "--n-action-steps", "10")
    for key in ("chunk_latency_ms", "world_encoder_calls_per_env_step", "env_steps_per_s", "env_steps_per_s_single",
                "compile", "flops"):
        assert key in out
    assert out["env_steps_per_s"] is None  # the env part was not asked for
    assert out["compile"]["modes"] == ["eager"] and out["compile"]["requested"] is False
    eager = out["chunk_latency_ms"]["eager"]
    assert set(eager) == {"1", "2"}
    assert set(eager["1"]) == set(ALL_STAGES)
    assert eager["2"]["total"]["median"] > 0 and eager["2"]["total"]["n"] == 1
    assert out["world_encoder_calls_per_env_step"]["pred"]["10"] == pytest.approx(0.3)
    assert out["world_encoder_calls_per_env_step"]["none"]["10"] == 0.0
    assert out["flops"]["per_chunk"]["2"]["total"] == 2 * out["flops"]["per_chunk"]["1"]["total"]
    assert out["model"]["world"] == {"m": 2, "T": 3, "K": 4, "D": 24}


@pytest.mark.slow
def test_compiled_chunks_match_eager(capsys):
    out = _run_cli(capsys, "--config", "debug", "--batch", "2", "--parts", "chunk", "--compile", "--repeats", "1",
                   "--stages", "total_smolvla", "total")
    diffs = out["chunk_latency_ms"]["compiled"]["2"]["max_abs_diff_vs_eager"]
    assert diffs["total_smolvla"] < 1e-4 and diffs["total"] < 1e-4
    assert set(out["compile"]["speedup_vs_eager"]["compiled"]["2"]) == {"total_smolvla", "total"}


@pytest.mark.slow
@pytest.mark.libero
def test_cli_env_parts_report_rates_and_lazy_render_speedups(capsys):
    out = _run_cli(capsys, "--config", "debug", "--parts", "env", "render", "--n-envs", "2", "--env-episodes", "4",
                   "--env-max-steps", "20", "--render-steps", "10")
    assert out["env_steps_per_s"] > 0 and out["env_steps_per_s_single"] > 0
    assert out["env"]["n_envs"] == 2 and out["env"]["multi_run"]["env_steps"] > 0
    assert out["env"]["multi_run"]["worker_setup_s_mean"] > 0 and out["env"]["scaling_steady"] > 0
    per_mode = out["lazy_render"]["per_mode"]
    assert per_mode["none"]["rendered_fraction"] == pytest.approx(0.1)
    assert per_mode["pred"]["rendered_fraction"] == pytest.approx(0.7)
    assert per_mode["pred"]["world_camera_only_fraction"] == pytest.approx(0.6)


def test_cli_served_part_reports_rates_and_percentiles_per_client_count(capsys):
    out = _run_cli(capsys, "--config", "debug", "--parts", "served", "--served-clients", "1", "3",
                   "--served-requests", "2")
    served = out["served"]
    assert served["in_process"]["latency_ms"]["n"] == 2 and served["in_process"]["requests_per_s"] > 0
    assert set(served["in_process"]["batched_rows_per_s"]) == {"3"}
    assert set(served["clients"]) == {"1", "3"}
    one, three = served["clients"]["1"], served["clients"]["3"]
    assert (one["requests"], three["requests"]) == (2, 6)
    assert one["mean_batch"] == 1.0 and 1.0 <= three["mean_batch"] <= 3.0
    for row in (one, three):
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and row["vs_in_process"] > 0
    assert served["request"]["world_frames"] == 4 and served["request"]["bytes"] > 4 * 256 * 256 * 3  # m + T - 1


@pytest.mark.slow
@pytest.mark.libero
def test_cli_diagnostics_part_reports_the_cost_and_equal_outcomes(capsys):
    out = _run_cli(capsys, "--config", "debug", "--parts", "diagnostics", "--n-envs", "1", "--diag-episodes", "1",
                   "--diag-max-steps", "12")
    cost = out["diagnostics_cost"]
    assert cost["outcomes_identical"] is True and cost["env_steps_per_s_ratio"] > 0
    assert cost["without"]["world_encoder_calls_per_env_step"] == pytest.approx(6 / 12)  # T=3 clips at steps 0 and 10
    assert cost["with"]["world_encoder_calls_per_env_step"] == pytest.approx((6 + 13) / 12)  # + a clip per observation
    assert cost["with"]["rendered_fraction"] == 1.0 and cost["without"]["rendered_fraction"] < 1.0
