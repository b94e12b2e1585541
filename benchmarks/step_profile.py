"""Where a training step's time goes: convolutions against the rest, and the share of peak each reaches.

    python benchmarks/step_profile.py [--models resnet20 resnet56] [--batch 128] [--compile] [--json FILE]

The step is the one `resnets train` takes (benchmarks/throughput.py's ``ours_train``: the precision
and layout the trial picks here). torch.profiler splits 10 steps' operator time into convolution
forward, convolution backward, BatchNorm, compiled (fused) kernels and the rest; the flop
counter gives the convolutions' share of the step's FLOPs. From them: the convolutions' own FLOP/s
as a share of the dense matmul peak measured in the same run, and the "ceiling", the share of
peak the step would reach if everything but the convolutions took no time at all. A step cannot
beat its ceiling without faster convolution kernels, whatever is fused around them.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
import torch.nn.functional as F
from throughput import images_per_s, ours_train, peak_flops
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from resnets import create_model
from resnets.training.autotune import device_name

STEPS = 10
CONV_OPS = ("convolution", "convolution_backward")


def category(name: str) -> str:
    """The part of the step an operator belongs to, by its profiler name."""
    if "conv" in name:  # aten::mkldnn_convolution, aten::_slow_conv2d_forward, mkldnn::_convolution_pointwise
        return "conv backward" if "backward" in name else "conv forward"
    if "CompiledFxGraph" in name:
        return "compiled kernels"
    if "batch_norm" in name:
        return "BatchNorm"
    if name.startswith("aten::"):
        return "other"
    return ""  # wrappers (autograd nodes, optimizer.step, ...): their ops are counted below them


def conv_flops(name: str, batch: int) -> tuple[int, int]:
    """(convolution FLOPs, all FLOPs) of one forward + backward pass at ``batch``, by the counter."""
    model = create_model(name, num_classes=10)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    by_op = counter.get_flop_counts()["Global"]
    conv = sum(n for op, n in by_op.items() if str(op).split(".")[1] in CONV_OPS)
    return conv, int(counter.get_total_flops())


def profile_step(name: str, batch: int, compile_: bool, peak: float) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    step, precision = ours_train(model, x, y, torch.device("cpu"), compile_)
    rate, _ = images_per_s(step, batch, torch.device("cpu"), seconds=6.0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(STEPS):
            step()
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if part := category(event.key):
            seconds[part] += event.self_cpu_time_total / 1e6 / STEPS
    profiled = sum(seconds.values())
    if not seconds["conv forward"] or not seconds["conv backward"]:
        print(f"warning: no convolution kernel recognised in {name}'s profile; its shares below are wrong")
    conv, total = conv_flops(name, batch)
    step_s = batch / rate  # the unprofiled step; the profile gives each part's share of it
    conv_s = step_s * (seconds["conv forward"] + seconds["conv backward"]) / profiled
    return {
        "model": name, "batch": batch, "compiled": compile_, "precision": precision,
        "images_per_s": rate, "step_ms": 1e3 * step_s, "profiled_ms": 1e3 * profiled,
        "parts_ms": {k: 1e3 * step_s * v / profiled for k, v in sorted(seconds.items())},
        "conv_flop_share": conv / total,
        "step_share_of_peak": total / step_s / peak,
        "conv_share_of_peak": conv / conv_s / peak,
        "ceiling_share_of_peak": total / conv_s / peak,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--compile", action="store_true", help="also profile the compiled step")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    peaks = {"bf16": peak_flops(torch.device("cpu")), "fp32": peak_flops(torch.device("cpu"), torch.float32)}
    peak_dtype = max(peaks, key=peaks.get)
    peak = peaks[peak_dtype]
    print(f"{device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"best dense matmul peak measured here: {peak / 1e12:.3f} TFLOP/s ({peak_dtype})\n")
    rows = []
    for name in args.models:
        for compile_ in (False, True) if args.compile else (False,):
            r = profile_step(name, args.batch, compile_, peak)
            rows.append(r)
            mode = "compiled" if compile_ else "eager"
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["parts_ms"].items())
            print(f"{name} batch {args.batch} {mode} ({r['precision']}): {r['images_per_s']:.1f} img/s, "
                  f"step {r['step_ms']:.1f} ms = {parts} ms")  # fmt: skip
            conv, step, ceiling = (100 * r[k] for k in ("conv_share_of_peak", "step_share_of_peak",
                                                         "ceiling_share_of_peak"))  # fmt: skip
            print(f"  convolutions: {100 * r['conv_flop_share']:.1f} % of the FLOPs at {conv:.1f} % of peak; "
                  f"step {step:.1f} % of peak; ceiling (the rest free) {ceiling:.1f} %")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": device_name(torch.device("cpu")),
                    "peak_flops": peak,
                    "peak_dtype": peak_dtype,
                    "peaks": peaks,
                    "rows": rows,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
