#!/usr/bin/env bash
# Issue 26 on a GPU: `resnets train --recipe fast94` beside airbench94 (Keller Jordan's, MIT licence),
# the same CIFAR-10 on the same GPU in the same call. airbench is a peer to run, never to copy into
# the project: it travels in the git-ignored .gpu/airbench (copied there from ../shared/peers/airbench)
# and runs from a scratch folder outside the repository.
#
#   here, once:  bash scripts/gpu_stage_cifar.sh pack && cp -r ../shared/peers/airbench .gpu/airbench
#   calls 1 to 3 as in scripts/gpu_paper_cifar.sh (unpack .gpu/cifar-N into /tmp/cifar10), then call 4,
#   carrying [".gpu/airbench"]:  bash scripts/gpu_airbench.sh $OUT [RUNS]       (RUNS: 3 of each)
#   (limits: airbench 150 s, each fast94 run 120 s: 510 s at RUNS=3, inside one call's 600)
#
# airbench94: one warm-up run on random labels (its own), then RUNS timed runs; its table's
# total_time_seconds is its training and test-time-augmented evaluation, timed with CUDA events.
# Ours: RUNS seeds of the whole command, timed from outside (start-up, the fast-path trial and any
# compile included), and the training steps alone (metrics.jsonl "time").
set -u
out=${1:?usage: bash scripts/gpu_airbench.sh OUTDIR [RUNS]}
runs=${2:-3}
data=${DATA_DIR:-/tmp/cifar10}
peer=${PEER:-.gpu/airbench}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RESNETS_OFFLINE=1
if [ "$(ls "$data/cifar-10-batches-py" 2> /dev/null | wc -l)" -ne 7 ]; then
  echo "gpu_airbench.sh: $data/cifar-10-batches-py is not complete: redo the unpack calls" >&2
  exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    | tee -a "$out/gpu.txt"

# airbench reads cifar10/{train,test}.pt ({"images": uint8 N x 32 x 32 x 3, "labels", "classes"}):
# written from the official batches by our own reader, in a scratch folder with a copy of the script.
scratch=/tmp/airbench-run
mkdir -p "$scratch/cifar10"
cp "$peer/airbench94.py" "$scratch/"
python3 - "$data" "$scratch/cifar10" << 'EOF'
import sys, torch
from resnets.data import load_dataset
data = load_dataset("cifar10", sys.argv[1])
for split, name in ((data.train, "train"), (data.test, "test")):
    images = split.images.permute(0, 2, 3, 1).contiguous()  # N x 32 x 32 x 3, uint8
    torch.save({"images": images, "labels": split.labels.long(), "classes": list(data.classes)},
               f"{sys.argv[2]}/{name}.pt")
EOF
[ -f "$scratch/cifar10/train.pt" ] && [ -f "$scratch/cifar10/test.pt" ] || exit 3
(cd "$scratch" && timeout 150 python3 - "$runs" << 'EOF'
import sys, torch
import airbench94 as ab
ab.print_columns(ab.logging_columns_list, is_head=True)
ab.main("warmup")
accs = torch.tensor([ab.main(run) for run in range(int(sys.argv[1]))])
print("airbench94 mean %.4f std %.4f over %d runs" % (accs.mean(), accs.std(), len(accs)))
EOF
) 2>&1 | tee "$out/airbench94.txt"

for ((seed = 0; seed < runs; seed++)); do
  rm -rf "/tmp/fast94-s$seed"  # a warm machine may hold an earlier call's run
  start=$(date +%s.%N)
  timeout 120 python3 -m resnets train --recipe fast94 --device cuda --data-dir "$data" --seed "$seed" \
      --out "/tmp/fast94-s$seed" --quiet 2>&1 | tee -a "$out/fast94.txt"
  end=$(date +%s.%N)
  python3 - "/tmp/fast94-s$seed" "$start" "$end" << 'EOF' | tee -a "$out/fast94.txt"
import json, sys
run, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
last = [json.loads(line) for line in open(f"{run}/metrics.jsonl") if line.strip()][-1]
resolved = json.load(open(f"{run}/config.json"))["resolved"]
print(f"fast94 {run}: test error {100 * last['test_error']:.2f} %, whole command {end - start:.1f} s, "
      f"training steps {last['time']:.1f} s, {resolved['precision']}, compile {resolved['compile']}, "
      f"CUDA graphs {resolved.get('cuda_graphs')}")
EOF
done
