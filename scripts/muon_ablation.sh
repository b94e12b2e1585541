#!/usr/bin/env bash
# airbench94_muon's optimiser settings on `--recipe fast94-muon`, one at a time and then together (issue 26).
#
#   bash scripts/muon_ablation.sh OUT [SEEDS]        # SEEDS defaults to "0"; e.g. "0 1 2"
#
# Each arm is one `resnets train` run per seed in OUT/ARM-sSEED, timed whole by the shell (start-up
# included). A finished run (its model.safetensors written) is
# skipped and a killed one resumed, so the script can be stopped and started again across
# sittings. At ~12 min per run on 2 CPU cores, run it alone on the machine. The summary at the
# end lists each arm's test error and PFLOP from the runs' last metrics rows.
set -euo pipefail
OUT=${1:?usage: muon_ablation.sh OUT [SEEDS]}
SEEDS=${2:-0}
RESNETS=${RESNETS:-.venv/bin/resnets}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"

# arm name -> the flags it adds to --recipe fast94-muon (11 epochs, width 0.75, batch 1024)
declare -A ARMS=(
  [base]=""
  [linear]="--schedule linear"                # decay from the first step, no warm-up ramp
  [no-lookahead]="--no-lookahead"
  [filter-norm]="--muon-filter-norm"          # filters held at norm sqrt(out), no decay on them
  [ns3]="--muon-ns-steps 3"
  [all]="--schedule linear --no-lookahead --muon-filter-norm --muon-ns-steps 3"
)
ORDER=(base linear no-lookahead filter-norm ns3 all)

for seed in $SEEDS; do
  for arm in "${ORDER[@]}"; do
    run="$OUT/$arm-s$seed"
    if [[ -f "$run/model.safetensors" ]]; then
      echo "$arm seed $seed: done"
      continue
    fi
    resume=()
    [[ -f "$run/config.json" ]] && resume=(--resume)
    start=$(date +%s)
    # shellcheck disable=SC2086  # the arm's flags are meant to split
    "$RESNETS" train --recipe fast94-muon ${ARMS[$arm]} --seed "$seed" --data-dir "$DATA" \
      --out "$run" --quiet "${resume[@]}"
    echo "$arm seed $seed: $(( $(date +%s) - start )) s whole command" | tee -a "$OUT/times.txt"
  done
done

echo "arm seed test_error train_pflop"
for run in "$OUT"/*-s*; do
  [[ -f "$run/metrics.jsonl" ]] || continue
  tail -n 1 "$run/metrics.jsonl" | python3 -c \
    "import json, sys; r = json.loads(sys.stdin.read()); print('$(basename "$run")', r['test_error'], r['train_pflop'])"
done
