"""What a sweep saves: N separate `resnets train` runs against one `resnets sweep`, same members, one run.

    python benchmarks/sweep.py speedup [--model resnet20] [--epochs 4] [--sizes 1 2 4 8 16]
    python benchmarks/sweep.py halving [--models plain56 resnet56] [--lrs 0.0125 0.025 0.05 0.1 0.2]
    python benchmarks/sweep.py fusion [--model resnet20] [--sizes 2 4 8 16] [--device cuda] [--batch-size 128]

speedup: for each N, the summed wall time of N separate `resnets train` commands (lr varied over
a grid, seeds beyond it) divided by the wall time of the `resnets sweep` command making the same N
members. halving: per model, the full grid of lrs x 3 seeds as separate runs, against
`resnets sweep --prune halving` over the same grid: the speed-up and whether both choose the same
lr (mean validation error over seeds). Every command is timed whole, start-up included, on
warm caches (the fast-path trial and the digits arrays are measured before the timing starts).
fusion: the training step of N members fused (training/fused.py) against one member's step, on
synthetic 3x32x32 batches: the speed-up is N x fused steps/s over one member's steps/s, with the
aggregate images/s (the trial `--fuse auto` runs on a GPU).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resnets.training.autotune import device_name

RECIPE = ["--dataset", "digits", "--schedule", "onecycle", "--batch-size", "128", "--quiet"]
GRID = [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 0.0125, 1.6]  # lrs in the order members take them


def _run(args: list[str]) -> float:
    """Wall seconds of one `resnets` command (it must succeed)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "resnets", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"resnets {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - t0


def _members(n: int) -> list[tuple[float, int]]:
    """(lr, seed) of N members: the lr grid first, then more seeds of it."""
    return [(GRID[i % len(GRID)], i // len(GRID)) for i in range(n)]


def speedup(
    model: str, epochs: int, sizes: list[int], root: Path, extra: list[str] | None = None
) -> list[dict]:
    """Separate runs vs one sweep for each N (and, with ``extra``, other train flags: a GPU, a dataset)."""
    length = (
        ["--epochs", str(epochs)] if not any(a in (extra or []) for a in ("--iterations", "--epochs")) else []
    )
    common = ["--model", model, *length, *RECIPE, *(extra or [])]
    _run(["train", *common, "--out", str(root / "warm")])  # fills the trial cache: both sides start warm
    rows = []
    for n in sizes:
        members = _members(n)
        separate = sum(
            _run(["train", *common, "--lr", str(lr), "--seed", str(seed), "--out", str(root / f"sep{n}-{i}")])
            for i, (lr, seed) in enumerate(members)
        )  # fmt: skip
        lrs = sorted({lr for lr, _ in members}, key=GRID.index)
        seeds = max(seed for _, seed in members) + 1
        if len(lrs) * seeds != n:  # the sweep is a full grid: only sizes that make one are compared
            continue
        grid = ["sweep", *common, "--lr", *map(str, lrs), "--seeds", str(seeds)]
        one = _run([*grid, "--processes", "1", "--fuse", "no", "--out", str(root / f"one{n}")])
        swept = _run([*grid, "--out", str(root / f"sw{n}")])  # the measured choice (cached trial)
        workers = json.loads((root / f"sw{n}" / "workers.json").read_text())
        fused = _run([*grid, "--fuse", "yes", "--out", str(root / f"fu{n}")]) if n > 1 else None
        rows.append({"members": n, "separate_s": round(separate, 1), "one_process_s": round(one, 1),
                     "one_process_speedup": round(separate / one, 2), "auto_processes": workers["processes"],
                     "auto_fused": bool(workers.get("fused")), "auto_s": round(swept, 1),
                     "speedup": round(separate / swept, 2),
                     "fused_s": round(fused, 1) if fused else None,
                     "fused_speedup": round(separate / fused, 2) if fused else None})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _grid_run(args: list[str], out: Path) -> float:
    """One separate run's wall time; with --root, a run finished by an earlier call is not run again."""
    record = out / "wall_s.txt"
    if record.exists():
        return float(record.read_text())
    seconds = _run(args)
    record.write_text(f"{seconds}\n")
    return seconds


def _val_errors(folder: Path) -> float:
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return metrics[-1]["val_error"]


def halving(models: list[str], lrs: list[float], seeds: int, epochs: int, val: int, root: Path) -> list[dict]:
    """The full grid as separate runs against the pruned sweep: time and the lr each chooses."""
    rows = []
    for model in models:
        common = ["--model", model, "--val-split", str(val), "--weight-decay", "5e-4", *RECIPE]
        _run(["train", *common, "--iterations", "2", "--out", str(root / f"warm-{model}"), "--resume"])
        common += ["--epochs", str(epochs)]
        grid, t_grid = {}, 0.0
        for lr in lrs:
            for seed in range(seeds):
                out = root / f"grid-{model}-{lr}-{seed}"
                t_grid += _grid_run(
                    ["train", *common, "--lr", str(lr), "--seed", str(seed), "--out", str(out)], out
                )
                grid.setdefault(lr, []).append(_val_errors(out))
        means = {lr: statistics.fmean(v) for lr, v in grid.items()}
        full_choice = min(means, key=means.get)
        out = root / f"halving-{model}"
        t_sweep = _run(["sweep", *common, "--lr", *map(str, lrs), "--seeds", str(seeds), "--prune", "halving",
                        "--out", str(out)])  # fmt: skip
        chosen = json.loads((out / "sweep.json").read_text())["chosen"]
        step = abs(lrs.index(chosen["lr"]) - lrs.index(full_choice))
        rows.append({
            "model": model, "grid_runs": len(lrs) * seeds, "grid_s": round(t_grid, 1),
            "halving_s": round(t_sweep, 1), "speedup": round(t_grid / t_sweep, 2), "grid_choice": full_choice,
            "halving_choice": chosen["lr"], "grid_steps_apart": step,
            "val_error_at_grid_choice": round(means[full_choice], 4),
            "val_error_at_halving_choice": round(means[chosen["lr"]], 4),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def fusion(model: str, sizes: list[int], device: str, batch: int) -> list[dict]:
    """Fused steps of N members against one member's steps, for each N."""
    from resnets.experiments.sweep_fusion import measure
    from resnets.training import TrainConfig

    base = TrainConfig(model=model, batch_size=batch, device=device)
    rows = []
    for n in sizes:
        figures = measure(base, n, (3, 32, 32), 10, __import__("torch").device(device))
        speed = n * figures["fused_steps_per_s"] / figures["alone_steps_per_s"]
        rows.append({"model": model, "batch": batch, "members": n, **figures, "speedup": round(speed, 2),
                     "fused_images_per_s": round(n * batch * figures["fused_steps_per_s"])})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speedup")
    s.add_argument("--model", default="resnet20")
    s.add_argument("--epochs", type=int, default=4)
    s.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    s.add_argument("--train-args", default="", help='more flags for every run, e.g. "--device cuda"')
    h = sub.add_parser("halving")
    h.add_argument("--models", nargs="+", default=["plain56", "resnet56"])
    h.add_argument("--lrs", type=float, nargs="+", default=[0.0125, 0.025, 0.05, 0.1, 0.2])
    h.add_argument("--seeds", type=int, default=3)
    h.add_argument("--epochs", type=int, default=9)
    h.add_argument("--val-split", type=int, default=300)
    f = sub.add_parser("fusion")
    f.add_argument("--model", default="resnet20")
    f.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    f.add_argument("--device", default="cpu")
    f.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument(
        "--root", help="keep the runs here (halving: finished grid runs are reused) instead of a temp dir"
    )
    args = p.parse_args()
    print(f"machine: {device_name(__import__('torch').device('cpu'))}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        root = Path(args.root or tmp)
        if args.part == "speedup":
            rows = speedup(args.model, args.epochs, args.sizes, root, args.train_args.split())
        elif args.part == "fusion":
            rows = fusion(args.model, args.sizes, args.device, args.batch_size)
        else:
            for old in root.glob("halving-*"):  # the sweep itself is always timed afresh
                shutil.rmtree(old)
            rows = halving(args.models, args.lrs, args.seeds, args.epochs, args.val_split, root)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
