"""FLOPs per chunk stage (counted, not estimated) and the latency floor they imply.

The stages run once on the meta device under ``torch.utils.flop_counter.FlopCounterMode``: no memory,
no arithmetic, and the count covers every matmul, convolution and attention the code actually issues
(attention on meta goes through countable ops). A FLOP is a multiply or an add (2 per MAC). The floor
is FLOPs / peak: the latency if every FLOP ran at the device's dense peak. The peak is the vendor's
nominal dense number for known GPUs and a measured large-GEMM rate (what this device sustains) always.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlaworld.bench.stack import BenchConfig
from vlaworld.bench.timing import measure
from vlaworld.models.flow_matching import PrefixInputs
from vlaworld.models.vjepa2 import VJEPA2Encoder

# Vendor dense (no sparsity) peaks in TFLOP/s: (bf16/fp16 tensor, fp32 non-tensor). Name substrings,
# most specific first, matched against torch.cuda.get_device_name().
NOMINAL_PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 66.9),  # SXM
    ("H200", 989.4, 66.9),
    ("A100", 312.0, 19.5),
    ("L40S", 362.1, 91.6),
    ("MI300X", 1307.4, 163.4),
)


def count_stage_flops(config: BenchConfig, bsz: int) -> dict[str, int]:
    """FLOPs of each stage of one chunk at batch ``bsz`` (world stages: the T clips and the Prophet)."""
    pol = config.policy
    w = pol.world
    n_cam = len(pol.image_features)
    width, height = pol.resize_imgs_with_padding
    out: dict[str, int] = {}
    with torch.device("meta"), torch.no_grad():
        model = config.architecture.build()
        encoder = VJEPA2Encoder(config.encoder)
        head = model.model
        inputs = PrefixInputs(
            images=tuple(torch.zeros(bsz, 3, height, width) for _ in range(n_cam)),
            image_masks=tuple(torch.ones(bsz, dtype=torch.bool) for _ in range(n_cam)),
            tokens=torch.zeros(bsz, config.language_tokens, dtype=torch.long),
            token_masks=torch.ones(bsz, config.language_tokens, dtype=torch.bool),
            state=torch.zeros(bsz, pol.max_state_dim),
        )
        out["vision"] = _count(lambda: head.embed_images(torch.cat(inputs.images)))
        whole_prefix = _count(lambda: head.encode_prefix(inputs))
        out["prefix"] = whole_prefix - out["vision"]
        prefix = head.encode_prefix(inputs)
        size = config.encoder.crop_size
        clips = torch.zeros(bsz * w.context_frames, w.temporal_window, 3, size, size)
        out["world_encoder"] = _count(lambda: encoder.encode(clips))
        z_hist = torch.zeros(bsz, w.context_frames, w.world_latent_dim)
        out["prophet"] = _count(lambda: model.prophet(z_hist))
        memory = torch.zeros(bsz, w.future_offset, w.world_latent_dim)
        noise = torch.zeros(bsz, pol.chunk_size, pol.max_action_dim)
        out["denoise"] = _count(lambda: head.sample_actions(prefix, noise, memory))
        out["denoise_smolvla"] = _count(lambda: head.sample_actions(prefix, noise, None))
    out["total_smolvla"] = out["vision"] + out["prefix"] + out["denoise_smolvla"]
    out["total"] = out["vision"] + out["prefix"] + out["world_encoder"] + out["prophet"] + out["denoise"]
    return out


def _count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def nominal_peak_tflops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The vendor's dense peak for this GPU and dtype, or None (CPUs, unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, half, single in NOMINAL_PEAK_TFLOPS:
        if key in name:
            return half if dtype in (torch.bfloat16, torch.float16) else single
    return None


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Sustained TFLOP/s of an n×n×n GEMM in ``dtype`` (median of ``repeats``)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    m = measure(lambda: a @ b, device, warmup=2, repeats=repeats)
    return 2 * n**3 / (m.stats.median * 1e-3) / 1e12


def floor_ms(flops: int, tflops: float | None) -> float | None:
    """Milliseconds ``flops`` take at ``tflops`` TFLOP/s (None when the peak is unknown)."""
    return None if not tflops else flops / (tflops * 1e12) * 1e3
