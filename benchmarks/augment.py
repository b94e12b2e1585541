"""Cost of RandAugment, TrivialAugment, mixup and CutMix per batch, beside a resnet20 training step.

    OMP_NUM_THREADS=1 python benchmarks/augment.py [--reps 20] [--device cpu]

Random uint8 batches of 128 x 3 x 32 x 32 and 64 x 3 x 224 x 224 through data/augment.py, each call
with the draws of another batch, timed after one warm-up call; then one fp32 SGD step of resnet20.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from resnets import create_model
from resnets.data.augment import apply_policy, batch_draws, mix_batch


def _ms(fn: Callable[[int], object], reps: int, device: torch.device) -> float:
    fn(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(1, reps + 1):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {device}")
    for n, size, reps in ((128, 32, args.reps), (64, 224, max(1, args.reps // 5))):
        x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).to(device)
        for policy in ("randaugment", "trivialaugment"):
            ms = _ms(lambda i, p=policy, x=x: apply_policy(x, p, batch_draws(0, 0, i)), reps, device)
            print(f"{policy:>15} {n} x 3 x {size} x {size}: {ms:7.1f} ms per batch")
    x = torch.randn(128, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (128,), generator=g).to(device)
    for name, options in (("mixup", {"mixup": 0.8}), ("cutmix", {"cutmix": 1.0})):
        ms = _ms(lambda i, o=options: mix_batch(x, y, 10, batch_draws(0, 0, i), **o), args.reps, device)
        print(f"{name:>15} 128 x 3 x 32 x 32: {ms:7.2f} ms per batch")
    model = create_model("resnet20", num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    print(f"{'resnet20 step':>15} 128 x 3 x 32 x 32: {_ms(step, 5, device):7.1f} ms (fp32 SGD)")


if __name__ == "__main__":
    main()
