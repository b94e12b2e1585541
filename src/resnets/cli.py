"""The `resnets` command: one subcommand per task, user errors as one line and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import ResnetsError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ResnetsError(f"{message} (see `{self.prog} --help`)")


def cmd_models(args: argparse.Namespace) -> int:
    """Print the model table: name, family, depth, parameters and FLOPs."""
    from .models import get_spec, list_models, summarize

    names = list_models(args.pattern)
    if not names and not any(c in args.pattern for c in "*?["):
        get_spec(args.pattern)  # raises with the closest names
    if not names:
        raise ResnetsError(f"no model matches {args.pattern!r}; try `resnets models` for all")
    rows = [summarize(n) for n in names]
    if args.json:
        keys = (
            "name",
            "family",
            "depth",
            "residual",
            "shortcut",
            "params",
            "flops",
            "macs",
            "input_size",
        )
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
            _si(r.params), _si(r.macs), "x".join(map(str, r.input_size)),
        )  # fmt: skip
    Console(width=max(100, Console().width)).print(table)
    return 0


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="resnets", description="Deep residual networks and their plain twins.")
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list the networks with depth, parameters and FLOPs")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'plain*' or 'resnet?0'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except ResnetsError as e:
        print(f"resnets: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("resnets: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
