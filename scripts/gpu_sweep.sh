#!/usr/bin/env bash
# The sweep's speed table on a GPU (issue 22), run through the device tool: first the training
# step of N fused members against one member's step (resnet20 and resnet56, batch 128, N = 1..16),
# then whole commands: N separate `resnets train` runs against one `resnets sweep` (auto, and
# --fuse yes) of resnet56 on 32x32 synthetic images (CIFAR-sized; the official batches do not
# travel), 100 steps each. Usage (repo root): bash scripts/gpu_sweep.sh OUTDIR
set -u
out=${1:-gpu-sweep}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for model in resnet20 resnet56; do
  timeout 150 python3 benchmarks/sweep.py --json "$out/fusion-$model.json" fusion --device cuda \
      --model "$model" --sizes 1 2 4 8 16 2>&1 | tee "$out/fusion-$model.txt"
done
timeout 330 python3 benchmarks/sweep.py --json "$out/speedup-resnet56.json" speedup --model resnet56 \
    --sizes 4 16 --train-args "--device cuda --dataset synthetic --image-size 32 --iterations 100 --final-eval-only" \
    2>&1 | tee "$out/speedup-resnet56.txt"
