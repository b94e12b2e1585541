"""`resnets models`: the zoo as a table or JSON."""

from __future__ import annotations

import argparse
import json

from ..errors import ResnetsError
from ..models import get_spec, list_models, summarize


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `resnets models`."""
    p = sub.add_parser("models", help="list the networks with depth, parameters and FLOPs")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'plain*' or 'resnet?0'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the model table: name, family, depth, parameters and FLOPs."""
    names = list_models(args.pattern)
    if not names and not any(c in args.pattern for c in "*?["):
        get_spec(args.pattern)  # raises with the closest names
    if not names:
        raise ResnetsError(f"no model matches {args.pattern!r}; try `resnets models` for all")
    rows = [summarize(n) for n in names]
    if args.json:
        keys = ("name", "family", "depth", "residual", "shortcut", "params", "flops", "macs", "input_size")
        print(json.dumps([{k: getattr(r, k) for k in keys} for r in rows], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="resnets models",
        caption="FLOPs: multiply-adds of one image at the input size, as the paper counts "
        "(torch.utils.flop_counter / 2)",
    )
    for col, justify in [("name", "left"), ("family", "left"), ("depth", "right"),
                         ("shortcuts", "left"), ("params", "right"), ("FLOPs", "right"),
                         ("input", "left")]:  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r.name, r.family, str(r.depth), r.shortcut,
            si(r.params), si(r.macs), "x".join(map(str, r.input_size)),
        )  # fmt: skip
    Console(width=max(100, Console().width)).print(table)
    return 0


def si(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
