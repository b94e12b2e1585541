"""`resnets degradation` (the depth study) and `resnets diagnose` (one model and its twin)."""

from __future__ import annotations

import argparse
import shlex

from ..errors import ResnetsError

LESION_MAX_DEPTH = 200


def recipe_flags(p: argparse.ArgumentParser, epochs: int | None, seed: bool = True) -> None:
    """The training-recipe flags every study shares."""
    p.add_argument("--dataset", default="digits", help="digits (built in, default), cifar10, mnist, ...")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    if epochs is not None:
        p.add_argument("--epochs", type=int, default=epochs, help=f"epochs per model (default {epochs})")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    p.add_argument("--schedule", default="onecycle", help="onecycle (default), paper, cosine, constant")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--precision", default="auto", help="auto (bf16 if native, else fp32), fp32, bf16, fp16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC layout")
    p.add_argument("--train-subset", type=int, help="train on a seeded subset of this many images")
    if seed:
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no per-model progress bars")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `resnets degradation` and `resnets diagnose`."""
    p = sub.add_parser("degradation", help="plain vs residual over depths: train, measure, report")
    recipe_flags(p, epochs=9)
    p.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44, 56], help="default 20 32 44 56")
    p.add_argument("--family", default="cifar", help="cifar (resnetN/plainN, default) or preact")
    p.add_argument("--out", default="runs/degradation", help="study folder (default runs/degradation)")
    p.set_defaults(func=run_degradation)

    le = sub.add_parser("lesion", help="delete blocks of trained nets one at a time: test error")
    le.add_argument("--run", required=True, action="append", dest="runs",
                    help="run directory (repeat: a residual net and its plain twin)")  # fmt: skip
    le.add_argument("--out", help="folder for lesion.json and lesion.png (default RUN/lesion)")
    le.add_argument("--draws", type=int, default=5, help="random block sets per k (default 5)")
    le.add_argument("--max-k", type=int, help="delete up to this many random blocks (default all)")
    le.add_argument("--precision", default="auto", help="auto (bf16 if native, else fp32), fp32, bf16")
    le.add_argument("--device", default="auto")
    le.add_argument("--seed", type=int, default=0)
    le.add_argument("--json", action="store_true", help="print the results as JSON")
    le.set_defaults(func=run_lesion)

    d = sub.add_parser("diagnose", help="gradient flow and layer responses of a model and its twin")
    d.add_argument("--model", required=True, help="a residual or plain model; its twin is added")
    d.add_argument("--steps", type=int, default=100, help="training steps between the two measurements")
    recipe_flags(d, epochs=None)
    d.add_argument("--out", help="folder for runs and plots (default runs/diagnose-MODEL)")
    d.set_defaults(func=run_diagnose)


def _study_config(args: argparse.Namespace, **extra: object):
    from ..experiments import StudyConfig

    return StudyConfig(
        dataset=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size, lr=args.lr,
        schedule=args.schedule, weight_decay=args.weight_decay, precision=args.precision,
        channels_last=args.channels_last, train_subset=args.train_subset, seed=args.seed,
        device=args.device, **extra,
    ).validate()  # fmt: skip


def _print_results(results: list, paths: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..report.document import table_rows
    from ..report.verdict import verdict

    header, rows = table_rows(results, "")
    table = Table(title="plain vs residual")
    for h in header:
        table.add_column(h, justify="left" if h == "model" else "right")
    for r, row in zip(results, rows, strict=True):
        table.add_row(*row, style=None if r.residual else "dim")
    console = Console(width=max(100, Console().width))
    console.print(table)
    for line in verdict(results):
        console.print("• " + line.replace("**", ""), highlight=False)
    console.print(
        f"report: {paths['html']}  ({paths['markdown'].name}, {paths['summary'].name})", highlight=False
    )


def run_degradation(args: argparse.Namespace) -> int:
    """Train plain and residual nets at every depth, then write the report."""
    from ..experiments import run_study
    from ..report import write_report

    cfg = _study_config(args, depths=args.depths, family=args.family, out=args.out, epochs=args.epochs)
    results = run_study(cfg, progress=not args.quiet)
    lesions = _deepest_lesions(cfg, results)
    command = "resnets " + shlex.join(args.argv)
    _print_results(results, write_report(results, cfg, command, lesions))
    return 0


def _deepest_lesions(cfg, results: list) -> list:
    """The lesion study of the deepest plain and residual nets of a study (cached)."""
    from pathlib import Path

    from ..experiments.lesion import study_lesions
    from ..training.device import resolve_device
    from ..training.precision import resolve_precision

    # One evaluation per block: the deepest depth of at most LESION_MAX_DEPTH (resnet1202's 600
    # blocks would take longer than its training on the CPU).
    trained = [r for r in results if not r.diverged]  # a diverged net has no weights to lesion
    depth = max((r.depth for r in trained if r.depth <= LESION_MAX_DEPTH), default=None)
    pair = [
        next((r for r in trained if r.residual == res and r.depth == depth), None) for res in (False, True)
    ]
    runs = [Path(cfg.out) / r.model for r in pair if r is not None]
    if not runs:
        return []
    print(f"lesion study of {', '.join(p.name for p in runs)}: deleting blocks one at a time", flush=True)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return study_lesions(Path(cfg.out), runs, device=device, precision=precision, draws=3, max_k=10)


def run_lesion(args: argparse.Namespace) -> int:
    """Delete each block of each run in turn (and k random ones); print, save and plot."""
    import json
    from pathlib import Path

    from ..experiments.lesion import LESION_FILE, lesion_run, lesion_verdict
    from ..io import atomic_write_text
    from ..report.figures import lesion_figure
    from ..training.device import resolve_device
    from ..training.precision import resolve_precision

    if args.draws < 1 or (args.max_k is not None and args.max_k < 1):
        raise ResnetsError("--draws and --max-k must be positive integers")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    results = [lesion_run(r, device, precision, args.draws, args.max_k, args.seed) for r in args.runs]
    out = Path(args.out) if args.out else Path(args.runs[0]) / "lesion"
    atomic_write_text(out / LESION_FILE, json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    figure = lesion_figure(results, out / "lesion.png")
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return 0
    for line in lesion_verdict(results):
        print("• " + line.replace("**", ""))
    for r in results:
        cells = " ".join("  -  " if e is None else f"{100 * e:5.1f}" for e in r.single)
        print(f"{r.model}: test error (%) with block 1..{len(r.single)} deleted: {cells}")
    print(f"saved {out / LESION_FILE} and {figure}")
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    """Measure a model and its twin at initialisation and after a short training."""
    from ..experiments import run_study
    from ..models import twin_of
    from ..report import write_report

    if args.steps < 1:
        raise ResnetsError(f"steps must be a positive integer, got {args.steps}")
    out = args.out or f"runs/diagnose-{args.model}"
    cfg = _study_config(args, models=[args.model, twin_of(args.model)], iterations=args.steps, out=out)
    results = run_study(cfg, progress=not args.quiet)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.model} and its twin: gradients at initialisation, after {args.steps} steps")
    for col in ("model", "layers", "‖g‖ first", "‖g‖ last", "spread (max/min)", "‖g‖ first, trained",
                "train error", "mean response std"):  # fmt: skip
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        g = [v for v in r.grad_init if v > 0]
        table.add_row(
            r.model, str(len(r.grad_init)), f"{r.grad_init[0]:.3g}", f"{r.grad_init[-1]:.3g}",
            f"{max(g) / min(g):.3g}x", f"{r.grad_final[0]:.3g}", f"{100 * r.train_error:.2f}%",
            f"{sum(r.responses) / len(r.responses):.3f}",
        )  # fmt: skip
    Console(width=max(110, Console().width)).print(table)
    paths = write_report(results, cfg, "resnets " + shlex.join(args.argv))
    print(f"plots: {paths['gradients'].parent}/  report: {paths['html']}")
    return 0
