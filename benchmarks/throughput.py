"""Images/s of training steps and inference: resnets' fast path vs textbook eager PyTorch, one run.

    python benchmarks/throughput.py [--models resnet20 resnet56 resnet110 resnet18 resnet50]
                                    [--device cpu|cuda] [--seconds 3] [--torchvision] [--json FILE]

The reference is written here, the way a tutorial would: NCHW, fp32, one class per block,
option-A shortcuts by F.pad, torch.optim.SGD with its defaults, eval under no_grad. Ours is
what `resnets train` / `resnets eval` run: channels-last, bf16 autocast where the hardware has
it, the same SGD with fp32 master weights, BN folded into the convs for inference; once eager
and once under torch.compile (its warm-up is printed), and on a GPU's training rows also compiled
for CUDA graphs ("+CUDA graphs": mode reduce-overhead, as `--cuda-graphs` trains). Both are
measured in this process, on the same inputs, so the ratios hold whatever the machine. "% peak"
divides the FLOP/s that PyTorch's flop counter gives for a step by the best dense bf16 matmul
rate measured here; the "% fp32 peak" columns divide it by the fp32 one, measured in the same
run (IEEE fp32: torch's default for matmul, TF32 off; on a GPU cuDNN's convolutions may use TF32
and exceed it).
"MFLOP/img" is the counter's figure for one image: forward + backward in the train rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnets import create_model
from resnets.deploy.inference import prepare_inference
from resnets.training import TrainConfig
from resnets.training.autotune import device_name, tune
from resnets.training.precision import grad_scaler
from resnets.training.step import forward_backward, make_optimizer

CIFAR = {"resnet20": 3, "resnet56": 9, "resnet110": 18}
IMAGENET = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
            "resnet50": ("bottleneck", [3, 4, 6, 3]), "resnet101": ("bottleneck", [3, 4, 23, 3])}  # fmt: skip


# --- The reference: textbook eager blocks ------------------------------------------------------


class TextbookBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin
        self.option = option
        self.proj = None
        if option == "B" and (stride != 1 or cin != cout):
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.option == "A" and (self.stride != 1 or self.pad):
            x = x[:, :, :: self.stride, :: self.stride]
            return F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TextbookBottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.proj is None else self.proj(x)))


class TextbookResNet(nn.Module):
    def __init__(self, name: str, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if name in CIFAR:
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            cin = 16
            for i, cout in enumerate((16, 32, 64)):
                for j in range(CIFAR[name]):
                    layers.append(TextbookBasicBlock(cin, cout, 2 if i and not j else 1, "A"))
                    cin = cout
        else:
            kind, counts = IMAGENET[name]
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            cin = 64
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
                for j in range(n):
                    stride = 2 if i and not j else 1
                    if kind == "basic":
                        layers.append(TextbookBasicBlock(cin, planes, stride, "B"))
                        cin = planes
                    else:
                        layers.append(TextbookBottleneck(cin, planes, stride))
                        cin = planes * 4
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- Timing ---------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(
    fn: Callable[[], object], batch: int, device: torch.device, seconds: float
) -> tuple[float, float]:
    """(median images/s over 3 timed rounds, seconds of the first 3 untimed calls = warm-up)."""
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    sync(device)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    sync(device)
    per_call = max(time.perf_counter() - t0, 1e-6)
    calls = max(2, int(seconds / 3 / per_call))
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        rates.append(calls * batch / (time.perf_counter() - t0))
    return statistics.median(rates), warmup


def peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> float:
    """Best dense matmul FLOP/s in ``dtype`` measured here: the machine's attainable peak."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    rate, _ = images_per_s(lambda: a @ b, 1, device, seconds=2.0)
    return rate * 2 * n**3


def train_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward pass, by PyTorch's counter."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def infer_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return int(counter.get_total_flops())


def reference_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def ours_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, compile_: bool,
    graphs: bool = False,
):  # fmt: skip
    """The step `resnets train` takes: the library's own optimizer, precision and forward_backward."""
    cfg = TrainConfig(compile=compile_, cuda_graphs=graphs)
    # The precision and layout `resnets train` would measure and choose on this machine (cached).
    fast, _ = tune(cfg, model, tuple(x.shape[1:]), int(y.max()) + 1, len(x), 0, device)
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg, device)
    scaler = grad_scaler(fast.precision, device)
    forward = torch.compile(model, mode="reduce-overhead" if graphs else None) if compile_ else model

    def step() -> None:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        forward_backward(forward, x, y, 1, 0.0, fast.precision, scaler, device)
        scaler.step(opt)
        scaler.update()

    return step, fast.precision


def measure(name: str, device: torch.device, args: argparse.Namespace) -> list[dict]:
    size, batch = (32, args.cifar_batch) if name in CIFAR else (224, args.imagenet_batch)
    seconds, torchvision = args.seconds, args.torchvision
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows, train_per_image = [], 0.0
    for mode in ("train", "infer"):  # train first: its count goes into both rows
        torch.manual_seed(0)
        ref = TextbookResNet(name, 10).to(device)
        flops = train_flops(ref, x, y) if mode == "train" else infer_flops(ref, x)
        train_per_image = flops / batch if mode == "train" else train_per_image
        if mode == "train":
            ref_rate, _ = images_per_s(reference_train(ref.train(), x, y), batch, device, seconds)
        else:
            ref.eval()

            def ref_infer(ref: nn.Module = ref) -> torch.Tensor:
                with torch.no_grad():
                    return ref(x)

            ref_rate, _ = images_per_s(ref_infer, batch, device, seconds)
        candidates = [("resnets", lambda: create_model(name, num_classes=10))]
        if torchvision:
            import torchvision.models as tvm

            if hasattr(tvm, name):
                candidates.append(("torchvision", lambda: getattr(tvm, name)(num_classes=10)))
        for who, make in candidates:
            row = {"model": name, "impl": who, "mode": mode, "batch": batch, "size": size,
                   "reference": ref_rate, "flops_per_image": flops / batch,
                   "train_flops_per_image": train_per_image}  # fmt: skip
            variants = [(False, False)] if args.skip_compile else [(False, False), (True, False)]
            if device.type == "cuda" and mode == "train" and not args.skip_compile:
                variants.append((True, True))  # CUDA graphs: the compiled step replayed, one launch
            for compile_, graphs in variants:
                torch.manual_seed(0)
                model = make().to(device)
                if mode == "train":
                    fn, precision = ours_train(model.train(), x, y, device, compile_, graphs)
                else:
                    fast = prepare_inference(
                        model.eval(), device, "auto", compile=compile_, input_shape=tuple(x.shape[1:])
                    )
                    precision = fast.precision

                    def fn(fast=fast):
                        with torch.inference_mode():
                            return fast(x)

                rate, warm = images_per_s(fn, batch, device, seconds)
                key = "graphs" if graphs else "compiled" if compile_ else "eager"
                row[key], row[f"{key}_warmup_s"], row["precision"] = rate, warm, precision
            rows.append(row)
            print(format_row(row, None), flush=True)
    return rows


def best_rate(r: dict) -> float:
    """The row's fastest of eager, compiled and CUDA graphs images/s (nan or absent: not measured)."""
    rates = [r.get(k, float("nan")) for k in ("compiled", "graphs")]
    return max([r["eager"], *(rate for rate in rates if rate == rate)])


def add_shares(r: dict, peak: float, peak_fp32: float) -> dict:
    """The row with its shares (fractions) of the bf16 and fp32 peaks, the reference's and the best's."""
    for who, rate in (("ref_", r["reference"]), ("", best_rate(r))):
        for dtype, value in (("bf16", peak), ("fp32", peak_fp32)):
            r[f"{who}share_of_{dtype}_peak"] = rate * r["flops_per_image"] / value
    return r


def format_row(r: dict, peak: float | None, peak_fp32: float | None = None) -> str:
    r = {"compiled": float("nan"), "compiled_warmup_s": float("nan"), "graphs": float("nan")} | r

    def pct(rate: float, of: float | None) -> str:
        return f"{100 * rate * r['flops_per_image'] / of:5.1f}%" if of else "   - "

    return (
        f"| {r['model']:<10} | {r['impl']:<11} | {r['mode']:<5} | {r['batch']:>3}x{r['size']:<3} "
        f"| {r['reference']:>9.1f} | {r['eager']:>9.1f} | {r['compiled']:>9.1f} "
        f"| {r['eager'] / r['reference']:>5.2f}x | {r['compiled'] / r['reference']:>5.2f}x "
        f"| {pct(r['reference'], peak)} | {pct(best_rate(r), peak)} | {r['compiled_warmup_s']:>6.1f} "
        f"| {pct(r['reference'], peak_fp32)} | {pct(best_rate(r), peak_fp32)} "
        f"| {r['flops_per_image'] / 1e6:>8.1f} | {r['graphs']:>9.1f} |"
    )


# "% peak" is of the bf16 matmul peak (the columns kept from before), "% fp32 peak" of the fp32 one.
HEADER = (
    "| model      | impl        | mode  | batch   | ref img/s | fast img/s | +compile | fast  | +compile "
    "| ref % peak | best % peak | compile warm-up s | ref % fp32 peak | best % fp32 peak | MFLOP/img "
    "| +CUDA graphs |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["resnet20", "resnet56", "resnet110", "resnet18", "resnet50"]
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--torchvision", action="store_true", help="also time torchvision's nets on our path")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--cifar-batch", type=int, default=128)
    parser.add_argument("--imagenet-batch", type=int, default=16)
    parser.add_argument("--skip-compile", action="store_true", help="eager only (no compile warm-ups)")
    args = parser.parse_args()
    for name in args.models:
        if name not in CIFAR and name not in IMAGENET:
            parser.error(f"unknown model {name!r}; choose from {', '.join([*CIFAR, *IMAGENET])}")
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads"
    model_name = device_name(device)  # a CPU's model name with its family/model numbers
    print(f"device: {name} ({model_name}); torch {torch.__version__}; ratios are against the reference "
          "in this run")  # fmt: skip
    peak, peak_fp32 = peak_flops(device, torch.bfloat16), peak_flops(device, torch.float32)
    print(f"measured matmul peak: bf16 {peak / 1e12:.2f} TFLOP/s, fp32 {peak_fp32 / 1e12:.2f} TFLOP/s")
    print(HEADER)
    rows = [add_shares(r, peak, peak_fp32) for m in args.models for r in measure(m, device, args)]
    print("\nwith % of peak (bf16 and fp32):")
    print(HEADER)
    for r in rows:
        print(format_row(r, peak, peak_fp32))
    if args.json:
        with open(args.json, "w") as f:
            # "peak_flops" is the bf16 peak, as before; the per-dtype keys are new beside it.
            record = {"device": name, "device_name": model_name, "torch": torch.__version__,
                      "peak_flops": peak, "peak_flops_bf16": peak, "peak_flops_fp32": peak_fp32,
                      "rows": rows}  # fmt: skip
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
