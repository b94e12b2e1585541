"""The `resnets` command: one subcommand per task, user errors as one line and exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .commands import data, deploy, models, remedies, study, sweep, train
from .errors import ResnetsError
from .training.errors import Interrupted

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that points to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ResnetsError(f"{message} (see `{self.prog} --help`)")


def one_line(message: str) -> str:
    """The message with newlines and other control characters escaped, so it stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="resnets", description="Deep residual networks and their plain twins.")
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models.add_parser(sub)
    train.add_parsers(sub)
    sweep.add_parser(sub)
    study.add_parsers(sub)
    remedies.add_parser(sub)
    deploy.add_parsers(sub)
    data.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except Interrupted as e:
        print(f"resnets: {one_line(str(e))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ResnetsError as e:
        print(f"resnets: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a file system refusing a read or write the code did not foresee
        where = f"{e.filename}: " if e.filename else ""
        print(f"resnets: error: {one_line(f'{where}{e.strerror or e}')}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print("resnets: error: out of memory; lower --batch-size or use a smaller model", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print("resnets: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
