"""`resnets remedies`: the remedies a deep plain net might try, against identity shortcuts."""

from __future__ import annotations

import argparse

from ..experiments.remedies import SEARCHES, RemediesConfig
from .study import command_line, config_from, field_default, recipe_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `resnets remedies`."""
    p = sub.add_parser(
        "remedies", help="deep plain net + other remedies vs identity shortcuts: train, test, report"
    )
    recipe_flags(p, RemediesConfig)
    default = {name: field_default(RemediesConfig, name) for name in ("depths", "seeds", "out", "lrs")}
    p.add_argument("--depths", type=int, nargs="+", default=default["depths"],
                   help="depths of every arm: the shallowest is the yardstick (default "
                   f"{' '.join(map(str, default['depths']))})")  # fmt: skip
    p.add_argument("--arms", nargs="+",
                   help="arms to run, or 'all' (default: one per group, see --list)")  # fmt: skip
    p.add_argument("--lrs", type=float, nargs="+", default=default["lrs"],
                   help="the learning-rate grid each arm is tuned on (default "
                   f"{' '.join(f'{lr:g}' for lr in default['lrs'])})")  # fmt: skip
    p.add_argument("--search", choices=SEARCHES, default=field_default(RemediesConfig, "search"),
                   help="first-seed (default): the whole grid at seed 0; halving: successive halving of the "
                   "grid at seed 0 (cheaper on a wide grid, but its early rungs fall in the one-cycle "
                   "warm-up, where a rate that later diverges can look best)")  # fmt: skip
    p.add_argument("--val-split", type=int,
                   help="training images held out to choose each arm's learning rate on (default: 5000 on "
                   "CIFAR, a fifth of the training set else)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=default["seeds"],
                   help=f"seeds per arm and depth at its chosen rate (default {default['seeds']})",
                   )  # fmt: skip
    p.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                   help="a screen: every arm at the deepest depth, one learning rate, one seed")  # fmt: skip
    p.add_argument("--out", default=default["out"], help=f"study folder (default {default['out']})")
    p.add_argument("--list", action="store_true", help="list the arms and exit")
    p.set_defaults(func=run_remedies_command)


def _list_arms() -> None:
    from ..experiments.remedy_arms import ARMS, REPRESENTATIVES

    width = max(len(a.name) for a in ARMS)
    group = None
    for arm in ARMS:
        if arm.group != group:
            group = arm.group
            print(f"{group}:")
        mark = "*" if arm.name in REPRESENTATIVES else " "
        print(f" {mark}{arm.name:<{width}}  {'resnetN' if arm.residual else 'plainN '}  {arm.line()}")
    print("* run by default, one per group: " + "; ".join(f"{k}: {v}" for k, v in REPRESENTATIVES.items()))


def run_remedies_command(args: argparse.Namespace) -> int:
    """Search, train and test every arm at every depth, then write the report."""
    if args.list:
        _list_arms()
        return 0
    from ..experiments.remedies import ARM_NAMES, run_remedies
    from ..report.remedies import depth_table, write_remedies_report
    from ..report.remedies_verdict import judge, verdict

    arms = args.arms or field_default(RemediesConfig, "arms")
    if arms == ["all"] or (args.quick and not args.arms):
        arms = list(ARM_NAMES)
    cfg = config_from(RemediesConfig, args, arms=arms).validate()
    study = run_remedies(cfg, progress=not args.quiet)
    paths = write_remedies_report(study, command_line(args))
    header, rows, _ = depth_table(study, judge(study))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    for line in verdict(study):
        print("• " + line.replace("**", ""))
    print(f"report: {paths['html']}  ({paths['markdown'].name}, {paths['summary'].name})")
    return 0
