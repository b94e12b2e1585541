#!/usr/bin/env bash
# A job scheduler's view of `--resume`: the same command line, SIGKILLed at random moments and
# re-run until it exits 0, then once more on the finished run; the weights must be bit-equal to
# an unbroken run's. Usage: bash scripts/preemption_demo.sh [WORKDIR]   (needs `make setup`)
set -u
work=${1:-$(mktemp -d)}
resnets=${RESNETS:-.venv/bin/resnets}
py=${PYTHON:-.venv/bin/python}
args=(train --model resnet20 --dataset digits --batch-size 32 --iterations 120 --checkpoint-every 3
      --eval-every 30 --ema 0.9 --quiet)
export OMP_NUM_THREADS=1  # identical numerics in every process
grep -m1 "model name" /proc/cpuinfo; "$py" -c "import platform; print(platform.platform())"

"$resnets" "${args[@]}" --out "$work/straight" >/dev/null || exit 1
for start in fresh finished; do
  run="$work/killed-$start"
  if [ "$start" = finished ]; then cp -r "$work/straight" "$run"; fi
  kills=0
  while :; do
    "$resnets" "${args[@]}" --out "$run" --resume >"$work/out.txt" 2>"$work/err.txt" &
    pid=$!
    # A random moment between 0.5 and 4 s: a wall-clock kill is fine here, this is no test.
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.5, 4.0), 2))')"
    if kill -9 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      kills=$((kills + 1))
      continue
    fi
    wait "$pid"; rc=$?
    [ "$rc" = 0 ] || { echo "exit $rc: $(cat "$work/err.txt")"; exit 1; }
    break
  done
  echo "$start directory: $kills kills, then exit 0: $(cat "$work/out.txt")"
  [ -s "$work/err.txt" ] && echo "  stderr: $(tr '\n' ' ' <"$work/err.txt")"
  "$py" - "$work/straight/model.safetensors" "$run/model.safetensors" <<'EOF' || exit 1
import sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
same = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
print(f"  weights bit-equal to the unbroken run's: {same}")
sys.exit(0 if same else 1)
EOF
done
