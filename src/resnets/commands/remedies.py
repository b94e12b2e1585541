"""`resnets remedies`: the remedies a deep plain net might try, against identity shortcuts."""

from __future__ import annotations

import argparse
import shlex

from .study import recipe_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `resnets remedies`."""
    p = sub.add_parser(
        "remedies", help="deep plain net + other remedies vs identity shortcuts: train, report"
    )
    recipe_flags(p, epochs=9, seed=False)
    p.add_argument("--depths", type=int, nargs="+", default=[56], help="depths of the nets (default 56)")
    p.add_argument("--arms", nargs="+", help="run only these arms (default all; see --list)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per arm, for the mean and spread (default 1)")
    p.add_argument("--out", default="runs/remedies", help="study folder (default runs/remedies)")
    p.add_argument("--list", action="store_true", help="list the arms and exit")
    p.set_defaults(func=run_remedies_command)


def _list_arms() -> None:
    from ..experiments.remedies import ARMS

    width = max(len(a.name) for a in ARMS)
    group = None
    for arm in ARMS:
        if arm.group != group:
            group = arm.group
            print(f"{group}:")
        print(f"  {arm.name:<{width}}  {'resnetN' if arm.residual else 'plainN '}  {arm.what}")


def run_remedies_command(args: argparse.Namespace) -> int:
    """Train every arm at every depth and seed, then write the report."""
    if args.list:
        _list_arms()
        return 0
    from ..experiments.remedies import ARM_NAMES, RemediesConfig, run_remedies
    from ..report.remedies import table, verdict, write_remedies_report

    cfg = RemediesConfig(
        dataset=args.dataset, data_dir=args.data_dir, depths=args.depths, arms=args.arms or list(ARM_NAMES),
        seeds=args.seeds, out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        schedule=args.schedule, weight_decay=args.weight_decay, precision=args.precision,
        channels_last=args.channels_last, train_subset=args.train_subset, device=args.device,
    ).validate()  # fmt: skip
    results = run_remedies(cfg, progress=not args.quiet)
    paths = write_remedies_report(results, cfg, "resnets " + shlex.join(args.argv))
    header, rows, _ = table(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    for line in verdict(results):
        print("• " + line.replace("**", ""))
    print(f"report: {paths['html']}  ({paths['markdown'].name}, {paths['summary'].name})")
    return 0
