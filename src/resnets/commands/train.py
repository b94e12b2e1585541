"""`resnets train` and `resnets eval`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from .train_flags import ONOFF, PATTERN_FLAGS, S, add_train_flags

__all__ = ["add_parsers", "add_train_flags", "config_from_args"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `resnets train` and `resnets eval`."""
    p = sub.add_parser("train", help="train a model; writes a run directory (--out)",
                       argument_default=S)  # fmt: skip
    add_train_flags(p)
    p.set_defaults(func=run_train)
    _eval_parser(sub)


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="evaluate a run's model, or published weights: loss and error")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory written by `resnets train`")
    source.add_argument(
        "--weights",
        help="a weights file with no run (torchvision, akamaster, chenyaofo layout); needs --model",
    )
    e.add_argument("--model", help="with --weights: the model to load them into")
    e.add_argument("--shortcut", choices=["A", "B", "C"], help="with --weights: default, the file's own")
    e.add_argument("--mean", type=float, nargs="+", help="with --weights: input mean (default: publisher's)")
    e.add_argument("--std", type=float, nargs="+", help="with --weights: input std (default: publisher's)")
    e.add_argument("--dataset", help="another dataset with the same classes (default: the run's)")
    e.add_argument("--data-dir", help="folder holding that dataset's files")
    e.add_argument(
        "--split", choices=["test", "train"], default="test", help="split to evaluate (default test)"
    )
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    # train's names for the same views (--eval-flip, --eval-translate) are accepted too
    e.add_argument("--tta", "--eval-flip", dest="tta", action=ONOFF, default=False,
                   help="average with horizontally flipped images")  # fmt: skip
    e.add_argument(
        "--tta-translate",
        "--eval-translate",
        dest="tta_translate",
        action=ONOFF,
        default=False,
        help="also with copies shifted one pixel (6 views with --tta)",
    )
    e.add_argument("--precision", default="auto", help="auto (bf16 if native, else fp32), fp32, bf16, fp16")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run_eval)


def config_from_args(args: argparse.Namespace) -> tuple[Any, bool, bool]:
    """The TrainConfig the flags describe (merged with the run's own when resuming)."""
    from ..models import model_options
    from ..training import TrainConfig
    from ..training.recipes import apply_recipe, merge_settings
    from ..training.resume import resume_config

    given = vars(args).copy()
    for key in ("func", "command", "argv"):
        given.pop(key, None)
    resume, quiet = given.pop("resume", False), given.pop("quiet", False)
    if given.get("checkpoint_activations", "auto") != "auto":
        try:
            given["checkpoint_activations"] = int(given["checkpoint_activations"])
        except ValueError:
            raise ResnetsError(
                f"--checkpoint-activations takes a number of segments, "
                f"got {given['checkpoint_activations']!r}"
            ) from None
    if "checkpoint_activations" in given:
        given["checkpoint_segments"] = given.pop("checkpoint_activations")
    for key, usage in PATTERN_FLAGS:
        if key in given:
            given[key] = _pattern_values(given[key], usage)
    # The model's own flags go to create_model: the registry's option names (no TrainConfig field shares one).
    model_flags = {k: given.pop(k) for k in model_options() if k in given}
    for key in ("init", "act", "unit", "norm"):  # the studies' arm names spell them with hyphens
        if isinstance(model_flags.get(key), str):
            model_flags[key] = model_flags[key].replace("-", "_")
    if model_flags.get("act") == "tat":  # the remedies arm's name for TAT's transformed leaky ReLU
        model_flags["act"] = "trelu"
    dataset_flags = {k: given.pop(k) for k in ("image_size", "test_size", "loader") if k in given}
    if model_flags:
        given["model_options"] = model_flags
    if dataset_flags:
        given["dataset_options"] = dataset_flags
    if "config" in given:
        given = merge_settings(_read_settings(Path(given.pop("config"))), given)
    recipe = given.pop("recipe", None)
    if recipe is not None:
        given = apply_recipe(recipe, given)
    if "out" not in given:
        if resume:
            raise ResnetsError("--resume needs --out: the run directory to continue")
        given["out"] = fresh_run_dir(given.get("model", "resnet20"), given.get("dataset", "digits"))
        print(f"resnets: writing the run to {given['out']}", flush=True)  # stdout: stderr is for errors
    if not resume:
        return _input_defaults(TrainConfig(**given).validate()), False, quiet
    saved = resume_config(given)
    if saved is not None:
        return saved, True, quiet
    # One command line for every restart (a requeued job): the first one starts the run,
    # once its settings are known to be sound (a bad one is the only line printed).
    cfg = TrainConfig(**given).validate()
    print(f"resnets: no run in {Path(cfg.out)} yet; starting it", file=sys.stderr)
    return _input_defaults(cfg), False, quiet


def _input_defaults(cfg: Any) -> Any:
    """A new run's image size from its model where the folder's was not given, said once."""
    from ..training.inputs import input_defaults

    options, said = input_defaults(cfg.model, cfg.dataset, cfg.dataset_options)
    if said is None:
        return cfg
    print(f"resnets: {said}", flush=True)
    return dataclasses.replace(cfg, dataset_options=options)


def fresh_run_dir(model: str, dataset: str, root: str = "runs") -> str:
    """runs/<model>-<dataset>-<date>-<time>, with -2, -3, ... where that folder exists already."""
    stem = Path(root) / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = stem, 1
    while folder.exists():
        n += 1
        folder = stem.with_name(f"{stem.name}-{n}")
    return str(folder)


def _pattern_values(items: list[str], usage: str) -> dict[str, float]:
    """PATTERN=VALUE arguments as a dict, with a one-line error for a malformed one."""
    out = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            if not sep or not pattern:
                raise ValueError
            out[pattern] = float(value)
        except ValueError:
            raise ResnetsError(f"{usage}, got {item!r}") from None
    return out


def _read_settings(path: Path) -> dict[str, Any]:
    """Settings from a JSON file: a run's config.json or a hand-written subset of it."""
    from ..training import TrainConfig

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResnetsError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ResnetsError(f"config file {path} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ResnetsError(f"config file {path} must hold a JSON object of settings")
    data.pop("resolved", None)  # a run's derived values, not settings
    try:
        TrainConfig.from_dict(data, source=str(path))  # unknown keys and bad values, named
    except ResnetsError as e:
        raise ResnetsError(str(e) if str(path) in str(e) else f"config file {path}: {e}") from None
    return data


def run_train(args: argparse.Namespace) -> int:
    """Train and print a one-line summary of the final evaluation."""
    from ..training import train

    cfg, resume, quiet = config_from_args(args)
    result = train(cfg, resume=resume, progress=not quiet)
    m = result.metrics
    if result.already_finished:
        print(f"resnets: {result.run_dir} had already finished {result.steps} steps", file=sys.stderr)
    if m:
        # The training work, counted by torch.utils.flop_counter (training/work.py); runs before it lack it.
        pflop = m.get("train_pflop")
        work = "" if pflop is None else f", {pflop:{'.3f' if pflop >= 1e-3 else '.2e'}} PFLOP of training"
        print(
            f"{cfg.model} on {cfg.dataset}: test error {m['test_error']:.2%} "
            f"(loss {m['test_loss']:.4f}), train error {m['train_error']:.2%} after {m['step']} steps, "
            f"{m['time']:.1f} s training{work}; run saved in {result.run_dir}"
        )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate a run's model, or a published weights file, on a split and print loss and error."""
    from ..training.device import resolve_device
    from ..training.evaluate import EvalSettings, evaluate_run, evaluate_weights

    if args.batch_size < 1:
        raise ResnetsError(f"batch-size must be a positive integer, got {args.batch_size}")
    device = resolve_device(args.device)
    settings = EvalSettings(args.split, args.batch_size, args.precision, args.tta, args.tta_translate)
    if args.weights:
        if not args.model or not args.dataset:
            raise ResnetsError(
                "--weights needs --model and --dataset (e.g. --model resnet56 --dataset cifar10)"
            )
        result, layout, norm = evaluate_weights(
            args.weights, args.model, args.dataset, settings, device, args.data_dir, args.shortcut,
            args.mean, args.std,
        )  # fmt: skip
        return _report(args, result, f"{args.model} ({layout})", f"; {norm} normalisation")
    for flag in ("model", "shortcut", "mean", "std"):
        if getattr(args, flag) is not None:
            raise ResnetsError(f"--{flag} goes with --weights; a run has its own")
    result = evaluate_run(args.run, settings, device, args.dataset, args.data_dir)
    return _report(args, result, result["model"])


def _report(args: argparse.Namespace, result: dict[str, Any], label: str, note: str = "") -> int:
    """Print an evaluation as JSON or as one line."""
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    top5 = f", top-5 error {result['top5_error']:.2%}" if result.get("top5_error") is not None else ""
    print(
        f"{label} on {result['dataset']} {result['split']}: error {result['error']:.2%} "
        f"(accuracy {result['accuracy']:.2%}){top5}, loss {result['loss']:.4f} over {result['images']} "
        f"images{note}"
    )
    return 0
