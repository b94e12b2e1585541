#!/usr/bin/env bash
# airbench94_muon's optimiser settings on `--recipe fast94-muon`, one at a time and then together (issue 26).
#
#   bash scripts/muon_ablation.sh OUT [SEEDS] [ARMS]  # SEEDS defaults to "0" (e.g. "0 1 2"); ARMS to all six,
#                                                     # or a list such as "base no-lookahead+filter-norm"
#   environment: DATA_DIR=../shared/data (CIFAR-10 in its official format)
#                PYTHON=python3 (.venv/bin/python where it exists)
#                RECIPE=fast94-muon (or fast-muon: it has no lookahead, so skip that arm there)
#                EXTRA="" flags every arm adds, e.g. "--width 1 --epochs 7"
#
# Each arm is one `resnets train` run per seed in OUT/ARM-sSEED. A finished run (its
# model.safetensors written) is skipped and a killed one resumed, so the script can be stopped
# and started again across sittings (with the same RECIPE and EXTRA); OUT/times.txt gets each sitting's wall time per run
# (start-up included; a resumed run's line says so). At ~12 min per run on 2 CPU cores, run it
# alone on the machine. The summary at the end lists each finished run's test error and PFLOP.
set -euo pipefail
OUT=${1:?usage: muon_ablation.sh OUT [SEEDS]}
SEEDS=${2:-0}
RECIPE=${RECIPE:-fast94-muon}
EXTRA=${EXTRA:-}
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
DATA_DIR=${DATA_DIR:-../shared/data}
mkdir -p "$OUT"

# arm name -> the flags it adds to the recipe (fast94-muon: 11 epochs, width 0.75, batch 1024)
declare -A ARMS=(
  [base]=""
  [linear]="--schedule linear"                # decay from the first step, no warm-up ramp
  [no-lookahead]="--no-lookahead"
  [filter-norm]="--muon-filter-norm"          # filters held at norm sqrt(out), no decay on them
  [ns3]="--muon-ns-steps 3"
  [all]="--schedule linear --no-lookahead --muon-filter-norm --muon-ns-steps 3"
)
read -r -a ORDER <<< "${3:-base linear no-lookahead filter-norm ns3 all}"
# an arm may join others with "+" (e.g. no-lookahead+filter-norm): their flags together
flags_of() {
  local part flags=""
  local -a parts
  IFS=+ read -r -a parts <<< "$1"
  for part in "${parts[@]}"; do
    [[ -v "ARMS[$part]" ]] || { echo "muon_ablation.sh: unknown arm '$part' (known: ${!ARMS[*]})" >&2; return 2; }
    flags+=" ${ARMS[$part]}"
  done
  echo "$flags"
}
for arm in "${ORDER[@]}"; do
  flags_of "$arm" > /dev/null || exit 2
done

for seed in $SEEDS; do
  for arm in "${ORDER[@]}"; do
    run="$OUT/$arm-s$seed"
    if [[ -f "$run/model.safetensors" ]]; then
      echo "$arm seed $seed: done"
      continue
    fi
    resume=()
    what="whole command"
    if [[ -f "$run/config.json" ]]; then
      resume=(--resume)
      what="resumed part only"
    fi
    start=$(date +%s)
    # shellcheck disable=SC2086  # the arm's flags are meant to split
    "$PYTHON" -m resnets train --recipe "$RECIPE" $EXTRA $(flags_of "$arm") --seed "$seed" --data-dir "$DATA_DIR" \
      --out "$run" --quiet "${resume[@]}"
    echo "$arm seed $seed: $(( $(date +%s) - start )) s, $what" | tee -a "$OUT/times.txt"
  done
done

echo "run test_error train_pflop"
for run in "$OUT"/*-s*; do
  [[ -f "$run/model.safetensors" ]] || continue  # unfinished: its last row is not a result
  "$PYTHON" - "$run" <<'PY'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
print(run.name, row.get("test_error"), row.get("train_pflop"))
PY
done
