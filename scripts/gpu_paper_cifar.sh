#!/usr/bin/env bash
# He et al. 2015's CIFAR-10 table (Table 6, Figure 6) with the paper-cifar recipe, as much of it as
# fits in LIMIT_SECONDS, resumable: run it again (same OUT) and it continues exactly where it stopped.
#
#   bash scripts/gpu_paper_cifar.sh LIMIT_SECONDS [OUT]        (repo root; OUT: runs/paper-cifar10)
#
# Order: the whole table at the first seed, then at the next, ...; within a seed plain20/resnet20,
# then depth 56, 32, 44, then resnet110, and plain110 last (the paper trained it but did not draw
# it in Figure 6: "higher than 60 %"). Each step is one `resnets degradation --recipe paper-cifar`
# over the models so far, so finished runs are loaded, not trained again, and a run cut off
# continues from its checkpoint. Before the limit the run gets SIGINT (`timeout --signal=INT`):
# the trainer finishes its step, writes a checkpoint and exits; a SIGKILL follows only if it has
# not stopped KILL_AFTER seconds later. Then the status page is written from OUT.
#
# On a GPU of the device tool the data and the state travel (64 MiB a call; ../shared does not):
#   here, once:    bash scripts/gpu_stage_cifar.sh pack              (.gpu/cifar-1..3, ~47 MB each)
#   calls 1 to 3:  carry [".gpu/cifar-N"], command: bash scripts/gpu_stage_cifar.sh unpack .gpu/cifar-N
#   call 4, each within 30 s of the last (the machine keeps /tmp only while warm), carrying
#   [".gpu/paper-state.tgz"] where an earlier GPU run left one (finished runs' weights: ~32 MB a seed):
#     DATA_DIR=/tmp/cifar10 STATE=.gpu/paper-state.tgz PACK=$OUT/paper-state.tgz SPLIT=15M SEEDS=1 \
#     bash scripts/gpu_paper_cifar.sh 450 /tmp/paper-cifar10          (the call's timeout_s: 570)
#   SEEDS=1 until seed 0's table is done: its finished weights (~32 MB) travel in the state, and a second
#   seed's would not fit in one call beside the tree.
#   then join the returned pieces here (cat paper-state.tgz.part-* > .gpu/paper-state.tgz: the device
#   tool returns files of at most 16 MiB) for the next GPU run, and unpack it apart from the CPU's study
#   (mkdir -p runs/gpu && tar xzf .gpu/paper-state.tgz -C runs/gpu) to write its status page here.
#
# Environment (all optional):
#   DATA_DIR=../shared/data  SEEDS=2  DEPTHS="20 56 32 44 110"  PLAIN_LAST="110"
#   PAGE=docs/paper-cifar10/report.md  KILL_AFTER=60  STATUS_SECONDS=60  MIN_SECONDS=120
#   PYTHON=python3 (.venv/bin/python where it exists)  PACK=FILE.tgz (OUT without what resume does not need)
#   SPLIT=SIZE (with PACK: FILE.tgz cut into FILE.tgz.part-aa, -ab, ... of at most SIZE, e.g. 15M)
#   STATE=FILE.tgz (a PACK of an earlier run whose folder has OUT's name: unpacked beside OUT first)
#   PRECISION=fp32|bf16 (default: the recipe's own, auto: the faster measured on this machine; a study
#   keeps the precision it started with, so give it only for a fresh OUT)
#   ITERATIONS=N and EXTRA_ARGS="..." for a smoke run on a CPU (e.g. ITERATIONS=4 EXTRA_ARGS="--dataset
#   digits"); either one moves the default PAGE to OUT/status.md, so a smoke run never writes docs/.
set -u
limit=${1:?usage: bash scripts/gpu_paper_cifar.sh LIMIT_SECONDS [OUT]}
out=${2:-runs/paper-cifar10}
start=$(date +%s)
deadline=$((start + limit))
data=${DATA_DIR:-../shared/data}
seeds=${SEEDS:-2}
read -r -a depths <<< "${DEPTHS:-20 56 32 44 110}"
read -r -a plain_last <<< "${PLAIN_LAST-110}"
kill_after=${KILL_AFTER:-60}
reserve=$((kill_after + ${STATUS_SECONDS:-60}))  # the checkpoint on SIGINT, then the status page
extra=()
[ -n "${PRECISION:-}" ] && extra+=(--precision "$PRECISION")
[ -n "${ITERATIONS:-}" ] && extra+=(--iterations "$ITERATIONS")
[ -n "${EXTRA_ARGS:-}" ] && read -r -a more <<< "$EXTRA_ARGS" && extra+=("${more[@]}")
if [ -n "${ITERATIONS:-}${EXTRA_ARGS:-}" ]; then page=${PAGE:-$out/status.md}; else page=${PAGE:-docs/paper-cifar10/report.md}; fi
py=${PYTHON:-}
[ -z "$py" ] && { [ -x .venv/bin/python ] && py=.venv/bin/python || py=python3; }
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RESNETS_OFFLINE=1
if [ -n "${STATE:-}" ] && [ -f "$STATE" ] && [ -e "$out" ]; then
  echo "$out exists (a warm machine's earlier call): continuing from it, not from $STATE"
elif [ -n "${STATE:-}" ] && [ -f "$STATE" ]; then
  top=$(tar tzf "$STATE" | head -n 1 | cut -d/ -f1)
  if [ "$top" != "$(basename "$out")" ]; then
    echo "gpu_paper_cifar.sh: $STATE holds $top/, not $(basename "$out")/: give OUT that name" >&2
    exit 2
  fi
  mkdir -p "$(dirname "$out")" && tar xzf "$STATE" -C "$(dirname "$out")" && echo "continuing from $STATE"
fi
if [ -z "${ITERATIONS:-}${EXTRA_ARGS:-}" ] && [ "$(ls "$data/cifar-10-batches-py" 2> /dev/null | wc -l)" -lt 7 ]; then
  echo "gpu_paper_cifar.sh: $data/cifar-10-batches-py is not complete (on a GPU: redo the unpack calls)" >&2
  exit 3
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

# The models of each step: every step adds a depth (its plain net and ResNet), the PLAIN_LAST
# depths' plain nets come after all the ResNets.
stages=()
models=()
for d in "${depths[@]}"; do
  case " ${plain_last[*]} " in *" $d "*) models+=("resnet$d") ;; *) models+=("plain$d" "resnet$d") ;; esac
  stages+=("${models[*]}")
done
for d in "${plain_last[@]}"; do
  case " ${depths[*]} " in *" $d "*) models+=("plain$d"); stages+=("${models[*]}") ;; esac
done

status=0
stopped=""
for ((n = 1; n <= seeds; n++)); do
  for stage in "${stages[@]}"; do
    left=$((deadline - $(date +%s) - reserve))
    if [ "$left" -lt "${MIN_SECONDS:-120}" ]; then
      stopped="time limit: ${left} s left before the reserve, under MIN_SECONDS"
      break 2
    fi
    read -r -a step_models <<< "$stage"
    echo "== seeds 1..$n: ${step_models[*]} (at most $left s)"
    # --foreground: a Ctrl-C at the terminal reaches the run too (it checkpoints), not only the timer's.
    timeout --foreground --signal=INT --kill-after="$kill_after" "$left" \
      "$py" -m resnets degradation --recipe paper-cifar --dataset cifar10 --data-dir "$data" \
      --models "${step_models[@]}" --seeds "$n" --out "$out" --quiet "${extra[@]}"
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then  # SIGINT at the limit (137: it needed the SIGKILL)
      stopped="time limit: stopped with a checkpoint (exit $rc)"
      break 2
    elif [ "$rc" -ne 0 ]; then
      stopped="resnets degradation failed (exit $rc)"
      status=$rc
      break 2
    fi
  done
done
echo "${stopped:-the whole table is done} after $(($(date +%s) - start)) s"
all=()
read -r -a all <<< "${stages[${#stages[@]} - 1]}"
if ! "$py" scripts/paper_cifar_status.py "$out" --page "$page" --seeds "$seeds" --models "${all[@]}"; then
  [ "$status" -eq 0 ] && status=1
fi
if [ -n "${PACK:-}" ]; then
  # What the next run needs: finished runs without their checkpoints (the weights and the measurements
  # stand), runs in training with their newest checkpoint only.
  skip=("--exclude=*.lock" "--exclude=.*.tmp")
  for run in "$out"/*/; do
    run=${run%/}
    if [ -f "$run/model.safetensors" ]; then
      skip+=("--exclude=$(basename "$out")/$(basename "$run")/checkpoint")
    else
      for old in $(ls "$run"/checkpoint/step-*.pt 2> /dev/null | sort -r | tail -n +2); do
        skip+=("--exclude=$(basename "$out")/$(basename "$run")/checkpoint/$(basename "$old")")
      done
    fi
  done
  tar czf "$PACK" "${skip[@]}" -C "$(dirname "$out")" "$(basename "$out")" && echo "packed $out into $PACK"
  if [ -n "${SPLIT:-}" ] && [ -f "$PACK" ]; then
    split -b "$SPLIT" "$PACK" "$PACK.part-" && rm "$PACK" && ls -l "$PACK".part-*
  fi
fi
exit "$status"
