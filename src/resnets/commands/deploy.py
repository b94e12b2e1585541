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
    e.add_argument("--output", required=True, help="file to write")
    e.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers as they are")
    e.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    e.set_defaults(func=run_export)

    p = sub.add_parser("predict", help="top-k classes of image files with a run's model")
    p.add_argument("--run", required=True, help="run directory written by `resnets train`")
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", help="auto (bf16 if native, else fp32), fp32, bf16, fp16")
    p.set_defaults(func=run_predict)


def run_export(args: argparse.Namespace) -> int:
    """Fold BN, export, and check the file's own logits against PyTorch on real test images."""
    import torch

    from ..data import TensorLoader, load_dataset
    from ..deploy.export import (
        EXPORTERS,
        count_batchnorms,
        exported_logits,
        fold_batchnorm,
        relative_difference,
        require,
    )
    from ..training.runs import load_run

    require(args.format)  # before any work: a missing extra is one line naming what to install
    run = load_run(args.run)
    model = run.model if args.no_fold else fold_batchnorm(run.model)
    c, h, w = run.resolved["image_shape"]
    out = Path(args.output)
    exporter = EXPORTERS[args.format]
    if args.format == "onnx":
        exporter(model, out, torch.randn(2, c, h, w), args.opset)
    else:
        exporter(model, out, torch.randn(2, c, h, w))
    # Check on real images of the run's test split when its data are at hand, else random ones.
    try:
        data = load_dataset(run.config.dataset, run.config.data_dir, **run.config.dataset_options)
        batch = next(iter(TensorLoader(data.test, 16, run.resolved["mean"], run.resolved["std"])))[0]
        source = f"{len(batch)} {run.config.dataset} test images"
    except ResnetsError:
        batch = torch.randn(16, c, h, w)
        source = f"{len(batch)} random inputs (the run's data are not at hand)"
    with torch.no_grad():
        diff = relative_difference(exported_logits(out, args.format, batch), run.model(batch))
    folded = count_batchnorms(run.model) - count_batchnorms(model)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {args.format}, {folded} BatchNorms folded, "
        f"dynamic batch); max relative difference to PyTorch on {source}: {diff:.2e}"
    )
    if diff > 1e-4:
        raise ResnetsError(f"the exported model differs from PyTorch by {diff:.2e} (> 1e-4) of its logits")
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
