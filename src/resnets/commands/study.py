"""`resnets degradation` (the depth study), `resnets lesion` and `resnets diagnose` (a model and its twin)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from ..errors import ResnetsError
from ..experiments.degradation import StudyConfig

C = TypeVar("C")


def field_default(config: type, name: str) -> Any:
    """A config dataclass's default for one field, so a flag's default is the config's own."""
    found = next(f for f in dataclasses.fields(config) if f.name == name)
    return found.default if found.default_factory is dataclasses.MISSING else found.default_factory()


def config_from(config: type[C], args: argparse.Namespace, **extra: Any) -> C:
    """The config made of the flags named like its fields; ``extra`` goes over them."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}
    return config(**{**given, **extra})


def command_line(args: argparse.Namespace) -> str:
    """The command as the user typed it, for the report."""
    return "resnets " + shlex.join(args.argv)


def _choices(default: str, choices: Sequence[str], notes: Mapping[str, str] | None = None) -> str:
    """Help text naming each choice with its note, the default first and marked so."""
    notes = notes or {}

    def named(choice: str) -> str:
        said = [n for n in (notes.get(choice), "default" if choice == default else None) if n]
        return f"{choice} ({', '.join(said)})" if said else choice

    return ", ".join(named(c) for c in sorted(choices, key=lambda c: c != default))


def recipe_flags(p: argparse.ArgumentParser, config: type, epochs: bool = True) -> None:
    """The training-recipe flags every study shares, with ``config``'s defaults (the shared recipe's)."""
    default = partial(field_default, config)
    datasets = _choices(default("dataset"), ("digits", "cifar10", "mnist"), {"digits": "built in"})
    p.add_argument("--dataset", default=default("dataset"), help=f"{datasets}, ...")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    if epochs:
        p.add_argument("--epochs", type=int, default=default("epochs"),
                       help=f"epochs per model (default {default('epochs')})")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=default("batch_size"),
                   help=f"images per step (default {default('batch_size')})")  # fmt: skip
    if "lr" in {f.name for f in dataclasses.fields(config)}:  # the remedies study searches a grid instead
        p.add_argument("--lr", type=float, default=default("lr"),
                       help=f"peak learning rate (default {default('lr')})")  # fmt: skip
    schedules = _choices(default("schedule"), ("onecycle", "paper", "cosine", "linear", "constant"))
    p.add_argument("--schedule", default=default("schedule"), help=schedules)
    p.add_argument("--weight-decay", type=float, default=default("weight_decay"),
                   help=f"L2 weight decay (default {default('weight_decay')})")  # fmt: skip
    p.add_argument("--precision", default=default("precision"),
                   help="auto (the faster of fp32 and bf16 in a short trial on this machine, cached), "
                   "fp32, bf16, fp16")  # fmt: skip
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=default("channels_last"),
                   help="NHWC layout")  # fmt: skip
    p.add_argument("--train-subset", type=int, help="train on a seeded subset of this many images")
    fields = {f.name for f in dataclasses.fields(config)}
    if {"seeds", "seed"} <= fields:  # a first seed and a count (the remedies study numbers its own)
        seeds = default("seeds")
        p.add_argument("--seeds", type=int, default=seeds,
                       help=f"seeds per model: --seed, --seed+1, ... (default {seeds})")  # fmt: skip
        p.add_argument("--seed", type=int, default=default("seed"), help="the first seed (default 0)")
    elif "seed" in fields:
        p.add_argument("--seed", type=int, default=default("seed"))
    p.add_argument("--device", default=default("device"), help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--quiet", action="store_true", help="no per-model progress bars")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `resnets degradation`, `resnets lesion` and `resnets diagnose`."""
    p = sub.add_parser("degradation", help="plain vs residual over depths: train, measure, report")
    recipe_flags(p, StudyConfig)
    depths, out = field_default(StudyConfig, "depths"), field_default(StudyConfig, "out")
    p.add_argument("--depths", type=int, nargs="+", default=depths,
                   help=f"default {' '.join(map(str, depths))}")  # fmt: skip
    p.add_argument("--family", default=field_default(StudyConfig, "family"),
                   help="cifar (resnetN/plainN, default) or preact")  # fmt: skip
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="these models instead of --family x --depths")  # fmt: skip
    p.add_argument("--iterations", type=int, help="steps per model instead of --epochs")
    p.add_argument("--recipe", help="start every run from a named training recipe (`resnets train "
                   "--recipe`: paper-cifar, ...); flags given here override it")  # fmt: skip
    p.add_argument("--out", default=out, help=f"study folder (default {out})")
    p.set_defaults(func=run_degradation, parser=p)

    le = sub.add_parser("lesion", help="delete blocks of trained nets one at a time: test error")
    le.add_argument("--run", required=True, action="append", dest="runs",
                    help="run directory (repeat: a residual net and its plain twin)")  # fmt: skip
    le.add_argument("--out", help="folder for lesion.json and lesion.png (default RUN/lesion)")
    le.add_argument(
        "--draws",
        type=int,
        default=10,
        help="random block sets per k: a mean over fewer moves too much to show a trend (default 10)",
    )
    le.add_argument("--max-k", type=int, help="delete up to this many random blocks (default all)")
    le.add_argument("--precision", default="auto", help="auto (bf16 if native, else fp32), fp32, bf16")
    le.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    le.add_argument("--seed", type=int, default=0, help="seed of the random block sets (default 0)")
    le.add_argument("--json", action="store_true", help="print the results as JSON")
    le.set_defaults(func=run_lesion)

    d = sub.add_parser("diagnose", help="gradient flow and layer responses of a model and its twin")
    d.add_argument("--model", required=True, help="a residual or plain model; its twin is added")
    d.add_argument("--steps", type=int, default=100, help="training steps between the two measurements")
    recipe_flags(d, StudyConfig, epochs=False)
    d.add_argument("--out", help="folder for runs and plots (default runs/diagnose-MODEL)")
    d.set_defaults(func=run_diagnose, seeds=1)  # a look at one pair, not a comparison


_UNSET = object()


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The settings (argparse destinations) the command line gave, as opposed to left at their defaults."""
    probe = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_known_args(list(argv), probe)  # a default is only filled in where the namespace has none
    return {name for name, value in vars(probe).items() if value is not _UNSET}


def study_config(args: argparse.Namespace) -> StudyConfig:
    """The depth study the flags describe: over a named recipe, only the flags given override it."""
    argv = args.argv[args.argv.index(args.command) + 1 :]
    given = given_flags(args.parser, argv)
    if {"epochs", "iterations"} <= given:
        raise ResnetsError("give --epochs or --iterations, not both")
    if args.recipe is None:
        return config_from(StudyConfig, args).validate()
    fields = {f.name for f in dataclasses.fields(StudyConfig)} - {"recipe"}
    return StudyConfig.from_recipe(args.recipe, **{k: getattr(args, k) for k in fields & given}).validate()


def _print_results(results: list, paths: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..report.degradation import table_rows
    from ..report.degradation_verdict import by_model, verdict

    header, rows = table_rows(results, "")
    table = Table(title="plain vs residual (mean ± sd over seeds)")
    for h in header:
        table.add_column(h, justify="left" if h == "model" else "right")
    for runs, row in zip(by_model(results), rows, strict=True):  # one row per model, over its seeds
        table.add_row(*row, style=None if runs[0].residual else "dim")
    console = Console(width=max(100, Console().width))
    console.print(table)
    for line in verdict(results):
        console.print("• " + line.replace("**", ""), highlight=False)
    console.print(
        f"report: {paths['html']}  ({paths['markdown'].name}, {paths['summary'].name})", highlight=False
    )


def run_degradation(args: argparse.Namespace) -> int:
    """Train plain and residual nets at every depth, then write the report."""
    from ..experiments.degradation import deepest_lesions, run_study
    from ..report import write_report

    cfg = study_config(args)
    results = run_study(cfg, progress=not args.quiet)
    lesions = deepest_lesions(cfg, results)
    _print_results(results, write_report(results, cfg, command_line(args), lesions))
    return 0


def run_lesion(args: argparse.Namespace) -> int:
    """Delete each block of each run in turn (and k random ones); print, save and plot."""
    import json
    from pathlib import Path

    from ..experiments.lesion import lesion_run, lesion_verdict, save_lesions
    from ..report.lesion_figures import lesion_figure
    from ..training.device import resolve_device
    from ..training.precision import resolve_precision

    if args.draws < 1 or (args.max_k is not None and args.max_k < 1):
        raise ResnetsError("--draws and --max-k must be positive integers")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    results = [lesion_run(r, device, precision, args.draws, args.max_k, args.seed) for r in args.runs]
    out = Path(args.out) if args.out else Path(args.runs[0]) / "lesion"
    saved = save_lesions(results, out)
    figure = lesion_figure(results, out / "lesion.png")
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return 0
    for line in lesion_verdict(results):
        print("• " + line.replace("**", ""))
    for r in results:
        cells = " ".join("  -  " if e is None else f"{100 * e:5.1f}" for e in r.single)
        print(f"{r.model}: test error (%) with block 1..{len(r.single)} deleted: {cells}")
    print(f"saved {saved} and {figure}")
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    """Measure a model and its twin at initialisation and after a short training."""
    from ..experiments.degradation import run_study
    from ..models import twin_of
    from ..report import write_report

    if args.steps < 1:
        raise ResnetsError(f"steps must be a positive integer, got {args.steps}")
    out = args.out or f"runs/diagnose-{args.model}"
    twins = [args.model, twin_of(args.model)]
    cfg = config_from(StudyConfig, args, models=twins, iterations=args.steps, out=out).validate()
    results = run_study(cfg, progress=not args.quiet)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.model} and its twin: gradients at initialisation, after {args.steps} steps")
    for col in ("model", "seed", "layers", "‖g‖ first", "‖g‖ last", "spread (max/min)", "‖g‖ first, trained",
                "train error", "mean response std"):  # fmt: skip
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        g = [v for v in r.grad_init if v > 0]
        table.add_row(
            r.model, str(r.seed), str(len(r.grad_init)), f"{r.grad_init[0]:.3g}", f"{r.grad_init[-1]:.3g}",
            f"{max(g) / min(g):.3g}x", f"{r.grad_final[0]:.3g}" if r.grad_final else "-",
            f"{100 * r.train_error:.2f}%",
            f"{sum(r.responses) / len(r.responses):.3f}" if r.responses else "-",
        )  # fmt: skip
    Console(width=max(110, Console().width)).print(table)
    paths = write_report(results, cfg, command_line(args))
    print(f"plots: {paths['gradients'].parent}/  report: {paths['html']}")
    return 0
