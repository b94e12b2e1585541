"""`resnets remedies`: the remedies a deep plain net might try, against identity shortcuts."""

from __future__ import annotations

import argparse

from ..experiments.remedies import RemediesConfig
from .study import command_line, config_from, field_default, recipe_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `resnets remedies`."""
    p = sub.add_parser(
        "remedies", help="deep plain net + other remedies vs identity shortcuts: train, report"
    )
    recipe_flags(p, RemediesConfig)
    depths, seeds, out = (field_default(RemediesConfig, name) for name in ("depths", "seeds", "out"))
    p.add_argument("--depths", type=int, nargs="+", default=depths,
                   help=f"depths of the nets (default {' '.join(map(str, depths))})")  # fmt: skip
    p.add_argument("--arms", nargs="+", help="run only these arms (default all; see --list)")
    p.add_argument("--seeds", type=int, default=seeds,
                   help=f"seeds per arm, for the mean and spread (default {seeds})")  # fmt: skip
    p.add_argument("--out", default=out, help=f"study folder (default {out})")
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
    from ..experiments.remedies import run_remedies
    from ..report.remedies import table, write_remedies_report
    from ..report.remedies_verdict import verdict

    arms = args.arms or field_default(RemediesConfig, "arms")
    cfg = config_from(RemediesConfig, args, arms=arms).validate()
    results = run_remedies(cfg, progress=not args.quiet)
    paths = write_remedies_report(results, cfg, command_line(args))
    header, rows, _ = table(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    for line in verdict(results):
        print("• " + line.replace("**", ""))
    print(f"report: {paths['html']}  ({paths['markdown'].name}, {paths['summary'].name})")
    return 0
