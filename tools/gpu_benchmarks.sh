#!/usr/bin/env bash
# The GPU benchmarks in one go (docs/benchmarks.md records their output): IFIA-IG batched vs the bs-1 loop,
# then the robustness ladder in fp32 vs bf16 autocast on the shipped ResNet-18 and a WRN-28-10.
# Usage: PYTHONPATH=. tools/gpu_benchmarks.sh [OUT_DIR]   (each log lands in OUT_DIR, default ./gpu-bench)
set -u
out=${1:-gpu-bench}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
timeout 150 python3 tools/bench_bf16.py --model pyautoattack-resnet18 --n 500 --ladder standard --eps 0.001 2>&1 | tee "$out/bf16_resnet18.txt"
timeout 120 python3 tools/bench_bf16.py --model Wang2023Better_WRN-28-10 --n 500 --ladder apgd-ce 2>&1 | tee "$out/bf16_wrn28.txt"
timeout 220 python3 tools/bench_ifia.py --device cuda --n 64 --reference-n 16 --steps 2 --ig-steps 100 2>&1 | tee "$out/ifia.txt"
