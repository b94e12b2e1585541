"""`resnets export` and `resnets predict`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ResnetsError


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

    p = sub.add_parser("predict", help="top-k classes of image files with a run's model")
    p.add_argument("--run", required=True, help="run directory written by `resnets train`")
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or json")
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="the same as --format json"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--precision", default="auto", help="auto (bf16 if native, else fp32), fp32, bf16, fp16")
    p.set_defaults(func=run_predict)


def run_export(args: argparse.Namespace) -> int:
    """Fold BN, export, and check the file's own logits against PyTorch on real test images."""
    from ..deploy.checked import export_run

    r = export_run(args.run, args.format, args.output, fold=not args.no_fold, opset=args.opset)
    print(
        f"wrote {r.path} ({r.size_bytes / 1e6:.2f} MB, {r.fmt}, {r.folded} BatchNorms folded, "
        f"dynamic batch); max relative difference to PyTorch on {r.checked_on}: {r.difference:.2e}"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print the top-k classes of each image."""
    from ..deploy import predict_files
    from ..training.device import resolve_device
    from ..training.runs import load_run

    if args.top_k < 1:
        raise ResnetsError(f"top-k must be a positive integer, got {args.top_k}")
    paths = [Path(p) for p in args.images]
    for p in paths:
        if not p.is_file():
            raise ResnetsError(f"image {p} not found")
    run = load_run(args.run, resolve_device(args.device))
    results = predict_files(run, paths, args.top_k, args.precision)
    if args.format == "json":
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        best = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        print(f"{r['file']}: {best}")
    return 0
