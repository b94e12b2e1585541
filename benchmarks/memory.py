"""Peak memory and step time of very deep nets, with and without activation checkpointing.

    python benchmarks/memory.py [--models resnet110 resnet1202 preact_resnet1001]
                                [--batch-size 128] [--steps 2] [--device cpu|cuda] [--json FILE]

Each (model, checkpointing) pair runs in a fresh process, so its peak resident memory (RSS, on
the CPU) or peak allocated CUDA memory belongs to it alone: one warm-up step, then timed SGD
steps on random CIFAR-sized inputs, fp32 (the memory a plain user run would need). The ratio
columns compare each checkpointed run with the unchecked one measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CHILD = "--child"


def _cpu_name() -> str:
    import torch

    from resnets.training.autotune import device_name

    return device_name(torch.device("cpu"))


def child(model_name: str, segments: str, batch: int, steps: int, device: str) -> dict:
    """One measurement, in this process: the numbers as a dict."""
    import torch
    import torch.nn.functional as F

    from resnets import create_model
    from resnets.training.memory import map_checkpointed_activations

    dev = torch.device(device)
    torch.manual_seed(0)
    setting = 0 if segments == "off" else segments if segments == "auto" else int(segments)
    model = create_model(model_name, num_classes=10, checkpoint_segments=setting)
    model = model.to(dev).train()
    mapped = map_checkpointed_activations(model, (3, 32, 32), batch, "fp32", dev)  # as the trainer does
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, model built
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name, "checkpointing": segments if segments == "off" else model.checkpoint_segments,
        "batch": batch, "step_s": min(times), "peak_rss_mib": peak_rss, "model_rss_mib": base_rss,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "mmap_threshold_mib": mapped / 2**20 if mapped else None,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet110", "resnet1202", "preact_resnet1001"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--segments", nargs="+", default=["off", "auto"], help="off, auto or numbers")
    p.add_argument("--json", help="write the rows here")
    p.add_argument(CHILD, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.batch_size, args.steps, args.device)))
        return

    import torch

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name()
    print(f"{where}; torch {torch.__version__}; batch {args.batch_size}, fp32, best of {args.steps} steps")
    rows = []
    for name in args.models:
        reference = None
        for seg in args.segments:
            cmd = [sys.executable, __file__, CHILD, name, seg, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--device", args.device]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{name} checkpointing {seg}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            peak = row["cuda_peak_mib"] if row["cuda_peak_mib"] is not None else row["peak_rss_mib"]
            reference = reference or (peak, row["step_s"])
            row["memory_ratio"] = peak / reference[0]
            row["time_ratio"] = row["step_s"] / reference[1]
            rows.append(row)
            kind = "CUDA peak" if row["cuda_peak_mib"] is not None else "peak RSS"
            print(
                f"{name:18s} checkpointing {row['checkpointing']!s:>4s}: {kind} {peak:8.0f} MiB "
                f"({row['memory_ratio']:.2f}x), step {row['step_s']:7.3f} s ({row['time_ratio']:.2f}x)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
