"""`resnets sweep`: one net at several learning rates, weight decays and seeds; every train flag applies."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ResnetsError
from . import train as train_command

SWEPT = ("lr", "weight_decay", "seed", "out", "resume", "quiet")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `resnets sweep`: train's flags, with --lr/--weight-decay taking lists and --seeds a count."""
    p = sub.add_parser(
        "sweep", help="train one net at several lrs/decays/seeds, each a run of its own; report",
        argument_default=train_command.S, conflict_handler="resolve",
    )  # fmt: skip
    train_command.add_train_flags(p)
    p.add_argument("--lr", type=float, nargs="+", help="peak learning rates to sweep (default: the recipe's)")
    p.add_argument(
        "--weight-decay", type=float, nargs="+", help="weight decays to sweep (default: the recipe's)"
    )
    p.add_argument(
        "--seeds", type=int, default=1, help="seeds per setting: --seed, --seed+1, ... (default 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--prune", default="none", choices=["none", "halving", "first-seed"],
                   help="none (default): every member in full; halving: successive halving of the lr/decay "
                   "grid on --val-split images at the first seed; first-seed: the whole grid at the first "
                   "seed. With either, only the chosen setting gets the other seeds")  # fmt: skip
    p.add_argument(
        "--eta", type=int, default=2, help="halving keeps 1/eta of the candidates per rung (default 2)"
    )
    p.add_argument("--processes", default="auto", metavar="N|auto",
                   help="CPU: one-thread processes training members side by side (default auto: "
                   "measured on this machine, kept on resume)")  # fmt: skip
    p.add_argument("--fuse", default="auto", choices=["auto", "yes", "no"],
                   help="train members that differ only in lr, decay and seed as one fused net (one "
                   "pass of every kernel for all; default auto: where a trial on this device finds it "
                   "faster, kept on resume)")  # fmt: skip
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="train the I-th of N slices of the members (0-based; an array job)")  # fmt: skip
    p.add_argument("--collect", action="store_true", default=False,
                   help="write sweep.json and the report from the members' folders; no training")  # fmt: skip
    p.add_argument(
        "--out", default="runs/sweep", help="sweep folder; one run folder per member (default runs/sweep)"
    )
    p.add_argument("--resume", action="store_true", default=False, help="continue the sweep in --out")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    p.set_defaults(func=run_sweep_command)


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return int(index), int(count)
    except ValueError:
        raise ResnetsError(f"--shard takes I/N (e.g. 0/4), got {text!r}") from None


def _processes(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ResnetsError(f"--processes takes a number or auto, got {text!r}") from None


def run_sweep_command(args: argparse.Namespace) -> int:
    """Train the members (or collect them), write sweep.json and the report, print the table."""
    from ..experiments.sweep import SweepConfig, collect, run_sweep

    out = args.out
    if args.collect:
        result = collect(out)
        if not result.complete:
            missing = "some members are not finished yet"
            raise ResnetsError(f"{out}: {missing}; run the remaining shards (or --resume) first")
        return _finish(out, args)
    if args.seeds < 1:
        raise ResnetsError(f"--seeds must be a positive integer, got {args.seeds}")
    given = {k: v for k, v in vars(args).items() if k not in ("lr", "weight_decay")}
    for key in ("seeds", "prune", "eta", "shard", "collect", "seed", "processes", "fuse"):
        given.pop(key, None)
    base, _, _ = train_command.config_from_args(argparse.Namespace(**{**given, "resume": False, "out": out}))
    lrs = list(getattr(args, "lr", None) or [base.lr])
    decays = list(getattr(args, "weight_decay", None) or [base.weight_decay])
    cfg = SweepConfig(
        base, lrs, decays, list(range(args.seed, args.seed + args.seeds)), out, args.prune, args.eta,
        _shard(args.shard), _processes(args.processes), args.fuse,
    ).validate()  # fmt: skip
    result = run_sweep(cfg, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    if not result.complete:
        index, count = cfg.shard
        print(f"resnets: shard {index}/{count} done; sweep.json is written when the last shard ends "
              f"(or by `resnets sweep --out {out} --collect`)", file=sys.stderr)  # fmt: skip
        return 0
    return _finish(out, args)


def _finish(out: str, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..report.sweep import table, write_sweep_report
    from .study import command_line

    record = json.loads((Path(out) / "sweep.json").read_text())
    paths = write_sweep_report(Path(out), record, command_line(args))
    header, rows, _ = table(record["members"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    chosen = record.get("chosen")
    if chosen:
        print(f"chosen: lr {chosen['lr']:g}, weight decay {chosen['weight_decay']:g} "
              f"(mean val error {100 * chosen['val_error_mean']:.2f} % "
              f"over {chosen['seeds']} seed(s))")  # fmt: skip
    print(f"sweep.json and report: {paths['html']}")
    return 0
