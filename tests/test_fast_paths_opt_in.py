"""Fast paths are explicit choices: CUDA graphs are off unless asked for, and neural-only flags are
refused where they cannot apply."""

import pytest

import vlaworld
from tests.tiny_checkpoint import write_tiny_checkpoint, write_tiny_vlm
from vlaworld.eval.cli import main


def test_cuda_graphs_are_opt_in_and_need_cuda(tmp_path):
    vlm, ckpt = write_tiny_vlm(tmp_path / "vlm"), write_tiny_checkpoint(tmp_path / "ckpt")
    policy = vlaworld.load_policy(ckpt, vlm=vlm, dtype="float32")
    assert policy.config.cuda_graphs is False and policy.config.compile is False
    with pytest.raises(ValueError, match="cuda_graphs=True needs device='cuda'"):
        vlaworld.load_policy(ckpt, vlm=vlm, dtype="float32", cuda_graphs=True)


@pytest.mark.parametrize("flags", [["--cuda-graphs"], ["--compile"], ["--memory", "pred"], ["--numerics", "lerobot-0.6"],
                                   ["--world-preprocess", "legacy"]])
def test_scripted_policy_refuses_neural_flags(tmp_path, capsys, flags):
    assert main(["--policy", "scripted", "--suite", "libero_spatial", "--out", str(tmp_path / "run"), *flags]) == 2
    assert f"{flags[0]} applies to neural policies" in capsys.readouterr().err
    assert not (tmp_path / "run" / "episodes.jsonl").exists()
