#!/usr/bin/env bash
# The remedies study on CIFAR-10 on a GPU machine (run through the device tool), from PNGs of a
# seeded 10,000-image training subset and the 10,000 test images in .gpu/cifar10k.tgz
# (made by scripts/cifar_png_subset.py; the official batches are too big to travel).
# Usage (repo root): bash scripts/gpu_remedies.sh OUTDIR
set -u
out=${1:-gpu-remedies}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
tar xzf .gpu/cifar10k.tgz -C /tmp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
timeout "${LIMIT:-520}" python3 -m resnets remedies --dataset imagefolder --data-dir /tmp/cifar10k \
    --depths 56 --epochs 10 --batch-size 256 --lr 0.1 --device cuda --quiet --out /tmp/remedies 2>&1 \
    | tee "$out/log.txt"
echo "wall $(($(date +%s) - start)) s" | tee -a "$out/log.txt"
tar czf "$out/remedies.tgz" --exclude='*.safetensors' --exclude='checkpoint' -C /tmp remedies
