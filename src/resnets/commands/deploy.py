"""`resnets export` and `resnets predict`."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..deploy.inputs import IMAGE_SUFFIXES as SUFFIXES
from ..deploy.output import OUTPUT_FORMATS
from ..errors import ResnetsError
from ..io import atomic_write

if TYPE_CHECKING:
    from ..deploy.predict import Predictor


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `resnets export` and `resnets predict`."""
    e = sub.add_parser("export", help="write a run's model as ONNX, a torch.export program or TorchScript")
    e.add_argument("--run", required=True, help="run directory written by `resnets train`")
    e.add_argument(
        "--format", required=True, choices=["onnx", "pt2", "torchscript"],
        help="onnx (torch.export-based; needs resnets[export]), pt2 (torch.export), torchscript (legacy)",
    )  # fmt: skip
    e.add_argument("--output", "--out", dest="output", required=True, help="file to write")
    e.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers as they are")
    e.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    e.set_defaults(func=run_export)

    p = sub.add_parser(
        "predict", help="top-k classes of images (files or folders) with a run's model or an exported one"
    )
    p.add_argument(
        "--run", required=True, metavar="RUN",
        help="run directory written by `resnets train`, or a model file written by `resnets export` "
        "(its metadata gives the preprocessing and labels; ONNX needs resnets[export])",
    )  # fmt: skip
    p.add_argument(
        "images", nargs="+", metavar="PATH",
        help=f"image files (any format Pillow reads) or folders, searched for {', '.join(SUFFIXES)} files",
    )  # fmt: skip
    p.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5)")
    p.add_argument(
        "--batch-size", type=int, default=64, help="images decoded and classified at once (default 64)"
    )
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="text", help="text (default), json or csv")
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="the same as --format json"
    )
    p.add_argument("--output", "--out", dest="output", help="write to this file (atomically), not stdout")
    p.add_argument(
        "--skip-bad", action=argparse.BooleanOptionalAction, default=False,
        help="leave out unreadable images, naming each on stderr (default: stop at the first)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument(
        "--precision", default="auto",
        help="auto (bf16 if native, else fp32), fp32, bf16, fp16; an exported file always runs in fp32",
    )  # fmt: skip
    p.set_defaults(func=run_predict)


def run_export(args: argparse.Namespace) -> int:
    """Fold BN, export, and check the file's own logits against PyTorch on real test images."""
    from ..deploy.checked import export_run

    r = export_run(args.run, args.format, args.output, fold=not args.no_fold, opset=args.opset)
    print(
        f"wrote {r.path} ({r.size_bytes / 1e6:.2f} MB, {r.fmt}, {r.folded} BatchNorms folded, "
        f"dynamic batch, metadata included); max relative difference to PyTorch on {r.checked_on}: "
        f"{r.difference:.2e}"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Write the top-k classes of each image, batch by batch, as text, JSON or CSV."""
    from ..deploy.inputs import find_images
    from ..deploy.output import write_predictions
    from ..deploy.predict import predict_paths

    for name, value in (("top-k", args.top_k), ("batch-size", args.batch_size)):
        if value < 1:
            raise ResnetsError(f"--{name} must be a positive integer, got {value}")
    paths = find_images(args.images)  # every path checked before the model loads
    predictor = _predictor(args)
    skipped: list[Path] = []

    def skip(path: Path, error: ResnetsError) -> None:
        from ..cli import one_line

        skipped.append(path)
        print(f"resnets: skipped {one_line(str(error))}", file=sys.stderr)

    results = predict_paths(predictor, paths, args.top_k, args.batch_size, skip if args.skip_bad else None)
    k = min(args.top_k, len(predictor.info.classes))
    with _destination(args.output) as out:
        n = write_predictions(results, args.format, k, out)
        if n == 0:  # raised inside: an --output file is then never written
            raise ResnetsError(f"none of the {len(paths)} images could be read")
    if args.output:
        left_out = f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""
        print(f"wrote {n} predictions to {args.output}{left_out}")
    return 0


def _predictor(args: argparse.Namespace) -> Predictor:
    """The model to predict with: a run directory's, or an exported file's."""
    from ..deploy.exported import load_exported
    from ..deploy.predict import run_predictor
    from ..training.device import resolve_device
    from ..training.runs import load_run

    source = Path(args.run)
    if not source.exists():
        raise ResnetsError(
            f"{source} does not exist (--run takes a run directory or a file written by `resnets export`)"
        )
    device = resolve_device(args.device)
    if source.is_dir():
        return run_predictor(load_run(source, device), args.precision)
    if args.precision not in ("auto", "fp32"):
        raise ResnetsError(
            f"--precision {args.precision} needs a run directory; an exported file runs in fp32"
        )
    return load_exported(source, device)


@contextlib.contextmanager
def _destination(output: str | None) -> Iterator[TextIO]:
    """stdout, or a text stream whose file appears whole when the block ends without an error."""
    if output is None:
        try:
            yield sys.stdout
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`| head`): nothing more to write, and nothing to report.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    with atomic_write(output) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        try:
            yield text
        finally:
            text.flush()
            text.detach()  # atomic_write still owns the file: it syncs and renames it
