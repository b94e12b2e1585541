#!/usr/bin/env bash
# The GPU check of activation checkpointing, run through the device tool: peak CUDA memory and
# step time of resnet110/1202 and preact_resnet1001, batch 128, with and without checkpointing.
# Usage (repo root, a CUDA machine with torch): bash scripts/gpu_memory.sh OUTDIR
set -u
out=${1:-gpu-memory}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
timeout 400 python3 benchmarks/memory.py --device cuda --steps 5 \
    --models resnet110 resnet1202 preact_resnet1001 --json "$out/memory.json" 2>&1 | tee "$out/memory.txt"
