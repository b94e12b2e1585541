#!/usr/bin/env bash
# The remedies study on CIFAR-10 on a GPU machine (run through the device tool). Two scales:
# - the default: PNGs of a seeded 10,000-image training subset and the 10,000 test images in
#   .gpu/cifar10k.tgz (made by scripts/cifar_png_subset.py; one call carries it), learning rates
#   searched on 1,000 held-out training images;
# - FULL=1: the design on all of CIFAR-10, 45k to train and 5k held out, from the official
#   batches staged in /tmp/cifar10 by the three calls of scripts/gpu_stage_cifar.sh (docs/gpu-runbook.md).
# Every arm at depths 20 and 56, the whole lr grid at seed 0 (the study's default search), then 3 seeds
# at the chosen rate, 15 epochs. The study resumes: where .gpu/remedies-state.tgz (the OUTDIR/remedies.tgz
# of the previous GPU run at the same scale) exists, it continues from it; each finished run keeps its
# member.json, errors.json and metrics, so the weights need not travel.
# Usage (repo root): [FULL=1] bash scripts/gpu_remedies.sh OUTDIR      (LIMIT=seconds, default 520)
set -u
out=${1:-gpu-remedies}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RESNETS_OFFLINE=1
if [ "${FULL:-0}" = 1 ]; then
  [ -f /tmp/cifar10/cifar-10-batches-py/test_batch ] || { echo "FULL=1: stage CIFAR-10 first (gpu_stage_cifar.sh)"; exit 2; }
  data=(--dataset cifar10 --data-dir /tmp/cifar10 --val-split 5000)
else
  tar xzf .gpu/cifar10k.tgz -C /tmp
  data=(--dataset imagefolder --data-dir /tmp/cifar10k --val-split 1000)
fi
[ -f .gpu/remedies-state.tgz ] && tar xzf .gpu/remedies-state.tgz -C /tmp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
timeout "${LIMIT:-520}" python3 -m resnets remedies "${data[@]}" \
    --arms all --depths 20 56 --lrs 0.025 0.05 0.1 0.2 0.4 --search first-seed \
    --seeds 3 --epochs 15 --batch-size 128 --device cuda --quiet --out /tmp/remedies 2>&1 \
    | tee "$out/log.txt"
echo "wall $(($(date +%s) - start)) s" | tee -a "$out/log.txt"
# A run cut off mid-way travels without its checkpoint, so it starts again next time: drop it whole.
for run in /tmp/remedies/*/*/; do [ -f "$run/member.json" ] || rm -rf "$run"; done
# A finished member's weights stay behind once its arm's errors.json holds what they measured; before
# that (the arm's other seeds still training) the next run needs them to measure it.
skip=(--exclude='checkpoint*' --exclude='*.lock')
for run in /tmp/remedies/*/*/; do
  [ -f "$run/errors.json" ] && skip+=("--exclude=${run#/tmp/}model.safetensors")
done
tar czf "$out/remedies.tgz" "${skip[@]}" -C /tmp remedies
ls -l "$out/remedies.tgz"
