"""ResNet-50 trained from a JPEG folder against the same net on synthetic input, end to end.

    python benchmarks/stream_e2e.py [--device cuda] [--images 4096] [--workers 14] [--steps 30]

A GPU check (issue 14): bf16 autocast, channels-last, batch 256 on CUDA. The tree is generated
(350-500 px JPEGs, ImageNet's typical size); the streamed run decodes, crops and flips in
``--workers`` processes and copies pinned uint8 batches; the synthetic run feeds a tensor that
already sits on the device. The ratio says how much of the GPU the loader leaves unused.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from memory import _cpu_name as cpu_name  # this folder's memory benchmark: one CPU naming

from resnets import create_model
from resnets.data import StreamLoader, load_dataset
from resnets.data.generate import write_jpeg_tree
from resnets.data.transforms import DECODER


def train_rate(model, optimizer, batches, steps: int, device: torch.device) -> float:
    """Images per second over ``steps`` steps after two warm-up steps."""
    dtype = torch.bfloat16
    seen, t0 = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            seen, t0 = 0, time.perf_counter()
        if i == steps + 2:
            break
        with torch.autocast(device.type, dtype):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = create_model("resnet50", num_classes=1000).to(device).to(memory_format=torch.channels_last)
    forward = torch.compile(model) if args.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with tempfile.TemporaryDirectory() as tmp:
        tree = write_jpeg_tree(Path(tmp), args.images // 4, classes=4, sizes=(350, 500), test_per_class=2)
        data = load_dataset("imagefolder", tree, loader="stream")
        loader = StreamLoader(data.train, args.batch_size, data.mean, data.std, device, train=True,
                              channels_last=True, workers=args.workers)  # fmt: skip

        def forever():
            epoch = 0
            while True:
                yield from loader.epoch(epoch)
                epoch += 1

        streamed = train_rate(forward, optimizer, forever(), args.steps, device)
        loader.close()
    x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    synthetic = train_rate(forward, optimizer, iter(lambda: (x, y), None), args.steps, device)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "host_cpu": cpu_name(), "torch": torch.__version__, "decoder": DECODER, "workers": args.workers,
        "batch_size": args.batch_size, "compile": args.compile, "streamed_img_s": round(streamed, 1),
        "synthetic_img_s": round(synthetic, 1), "streamed_over_synthetic": round(streamed / synthetic, 3),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
