"""`resnets export` and `resnets predict`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ResnetsError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `resnets export` and `resnets predict`."""
    e = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, BN folded")
    e.add_argument("--run", required=True, help="run directory written by `resnets train`")
    e.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    e.add_argument("--output", required=True, help="file to write")
    e.add_argument("--no-fold", action="store_true", help="keep BatchNorm layers as they are")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
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
    """Fold BN, export, and check the file against PyTorch on a real batch."""
    import torch

    from ..data import load_dataset
    from ..deploy.export import (
        count_batchnorms,
        export_onnx,
        export_torchscript,
        fold_batchnorm,
        onnx_max_difference,
    )
    from ..training.runs import load_run

    run = load_run(args.run)
    model = run.model if args.no_fold else fold_batchnorm(run.model)
    c, h, w = run.resolved["image_shape"]
    example = torch.randn(2, c, h, w)
    out = Path(args.output)
    if args.format == "onnx":
        export_onnx(model, out, example, args.opset)
    else:
        export_torchscript(model, out, example)
    # Check on real images of the run's test split when its data are at hand, else random ones.
    try:
        from ..data import TensorLoader

        data = load_dataset(run.config.dataset, run.config.data_dir, **run.config.dataset_options)
        batch = next(iter(TensorLoader(data.test, 16, run.resolved["mean"], run.resolved["std"])))[0]
    except ResnetsError:
        batch = torch.randn(16, c, h, w)
    if args.format == "onnx":
        diff = onnx_max_difference(out, run.model, batch)
    else:
        loaded = torch.jit.load(str(out))
        with torch.no_grad():
            diff = float((loaded(batch) - run.model(batch)).abs().max())
    folded = count_batchnorms(run.model) - count_batchnorms(model)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {args.format}, {folded} BatchNorms folded, "
        f"dynamic batch); max |{'onnxruntime' if args.format == 'onnx' else 'torchscript'} - pytorch| "
        f"on {len(batch)} images: {diff:.2e}"
    )
    if diff > 1e-4:
        raise ResnetsError(f"the exported model differs from PyTorch by {diff:.2e} (> 1e-4)")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print the top-k classes of each image."""
    from ..deploy import predict_files
    from ..training.runs import load_run
    from ..training.trainer import resolve_device

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
