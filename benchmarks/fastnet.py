"""Training speed of fastresnet on this CPU: share of the measured peak, memory format, kept heap.

    python benchmarks/fastnet.py [--widths 0.5 0.75 1] [--batch 1024] [--seconds 4] [--json FILE]

Measures, in one process: the dense matmul peak (fp32 and bf16), then training steps of
fastresnet at each width, NCHW and channels-last, first with glibc's default allocator
settings and then with the heap kept (`resnets.training.memory.keep_freed_blocks`, which
lasts for the process, so it is measured second). Training FLOPs are taken as 3x the forward
pass. Prints the CPU model (family/model numbers) the figures belong to.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from resnets import create_model
from resnets.models import count_flops
from resnets.training.autotune import device_name
from resnets.training.memory import keep_freed_blocks


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Best dense n x n matmul rate in TFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        steps += 1
    return 2 * n**3 * steps / (time.perf_counter() - t0) / 1e12


def train_rate(width: float, batch: int, channels_last: bool, seconds: float) -> float:
    """Images/s of SGD steps on random data (the step `resnets train` takes, without the loader)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("fastresnet", width=width).to(memory_format=fmt)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.85, nesterov=True)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()
    step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    return batch * steps / (time.perf_counter() - t0)


def phase_seconds(width: float, batch: int, steps: int = 6) -> dict[str, float]:
    """Seconds per training step spent in forward, backward and the optimizer (channels-last)."""
    torch.manual_seed(0)
    model = create_model("fastresnet", width=width).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.85)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    totals = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if i >= 2:
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                totals[key] += dt / steps
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    cpu = device_name(torch.device("cpu"))
    print(f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"dense matmul peak: fp32 {peak['fp32']:.3f} TFLOP/s, bf16 {peak['bf16']:.3f} TFLOP/s")
    rows = []
    for heap in ("default", "kept"):
        if heap == "kept" and not keep_freed_blocks():
            print("glibc refused the kept-heap setting; skipping those rows")
            break
        for width in args.widths:
            flops = 3 * count_flops(create_model("fastresnet", width=width), (3, 32, 32))
            for layout in ("nchw", "nhwc"):
                rate = train_rate(width, args.batch, layout == "nhwc", args.seconds)
                share = rate * flops / 1e12 / peak["fp32"]
                rows.append({"heap": heap, "width": width, "layout": layout, "img_per_s": round(rate, 1),
                             "share_of_fp32_peak": round(share, 3)})  # fmt: skip
                print(
                    f"heap {heap:7s} width {width:<4} {layout}  {rate:7.1f} img/s  {share:5.1%} of fp32 peak"
                )
    phases = {}
    for width in args.widths:
        phases[width] = phase_seconds(width, args.batch)
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in phases[width].items())
        print(f"step at width {width} (heap kept, channels-last): {parts}")
    if args.json:
        with open(args.json, "w") as f:
            record = {"cpu": cpu, "batch": args.batch, "peak_tflops": peak, "rows": rows, "phases": phases}
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
