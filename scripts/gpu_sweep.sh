#!/usr/bin/env bash
# The sweep's speed table on a GPU (issue 22), run through the device tool: first the training
# step of N fused members against one member's step (resnet20 and resnet56, batch 128, N = 1..16),
# then whole commands: N separate `resnets train` runs against one `resnets sweep` (auto, and
# --fuse yes) of resnet56 on 32x32 synthetic images (CIFAR-sized; the official batches do not
# travel), 100 steps each. Usage (repo root): bash scripts/gpu_sweep.sh OUTDIR
# The steps' limits (90 + 90 + 240 + 120 s) fit one device call (600 s); each writes its own JSON, the
# issue's N = 16 before N = 4, so a cut loses the least; six files come back (the device tool takes 8).
set -u
out=${1:-gpu-sweep}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RESNETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for model in resnet20 resnet56; do
  timeout 90 python3 benchmarks/sweep.py --json "$out/fusion-$model.json" fusion --device cuda \
      --model "$model" --sizes 1 2 4 8 16 2>&1 | tee -a "$out/sweep.txt"
done
train_args="--device cuda --dataset synthetic --image-size 32 --iterations 100 --final-eval-only"
for n in 16 4; do
  timeout $((n == 16 ? 240 : 120)) python3 benchmarks/sweep.py --json "$out/speedup-resnet56-n$n.json" speedup \
      --model resnet56 --sizes "$n" --train-args "$train_args" 2>&1 | tee -a "$out/sweep.txt"
done
