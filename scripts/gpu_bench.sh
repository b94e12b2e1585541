#!/usr/bin/env bash
# The GPU checks run through the device tool: throughput tables with torchvision beside ours,
# and peak memory of the deepest nets with and without activation checkpointing.
# Usage (repo root, a CUDA machine with torch and torchvision):
#   bash scripts/gpu_bench.sh OUTDIR [all|throughput|memory]
set -u
out=${1:-gpu-bench}
what=${2:-all}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/gpu.txt"
if [ "$what" != memory ]; then
  # 1. The batches (CIFAR 128, ImageNet 16), eager only, torchvision's nets on the same path.
  timeout 150 python3 benchmarks/throughput.py --seconds 1 --skip-compile --torchvision \
      --json "$out/issue_batches.json" 2>&1 | tee "$out/issue_batches.txt"
  # 2. GPU-sized batches with torch.compile: resnet50 (ours and torchvision's) at 256, resnet20 at 1024.
  timeout 240 python3 benchmarks/throughput.py --models resnet50 --imagenet-batch 256 --seconds 1 --torchvision \
      --json "$out/resnet50_b256.json" 2>&1 | tee "$out/resnet50_b256.txt"
  timeout 120 python3 benchmarks/throughput.py --models resnet20 --cifar-batch 1024 --seconds 1 \
      --json "$out/resnet20_b1024.json" 2>&1 | tee "$out/resnet20_b1024.txt"
  # 3. The CUDA training path end to end (fused SGD, bf16 auto, channels-last) on the built-in digits.
  timeout 60 python3 -m resnets train --device cuda --epochs 5 --out /tmp/gpu-run --quiet 2>&1 | tee "$out/train.txt"
  python3 -c "import json; d=json.load(open('/tmp/gpu-run/config.json'))['resolved']; print(d['precision'], d['compile'])" | tee -a "$out/train.txt"
fi
if [ "$what" != throughput ]; then
  # 4. resnet110/1202 and preact_resnet1001, batch 128, fp32, with and without checkpointing.
  timeout 400 python3 benchmarks/memory.py --device cuda --steps 5 \
      --models resnet110 resnet1202 preact_resnet1001 --json "$out/memory.json" 2>&1 | tee "$out/memory.txt"
fi
