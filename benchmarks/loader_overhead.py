"""Share of a resnet20 training step spent on batching and augmentation (target: <= 10%).

    python benchmarks/loader_overhead.py [--data-dir ../shared/data] [--steps 30]

Both are timed in the same run on the same machine: the loader producing a CIFAR-sized batch
(gather, pad-crop, flip, normalise) and one SGD step of resnet20 on such a batch.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from resnets import create_model
from resnets.data import TensorLoader, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="CIFAR-10 folder; synthetic 3x32x32 data when absent")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    if args.data_dir:
        data = load_dataset("cifar10", args.data_dir)
    else:
        data = load_dataset("synthetic", image_size=32, train_size=50_000, test_size=100)
    loader = TensorLoader(data.train, args.batch_size, data.mean, data.std, train=True, crop_padding=4,
                          flip=True, seed=0, channels_last=args.channels_last)  # fmt: skip
    batches = loader.epoch(0)
    for _ in range(3):
        next(batches)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        x, y = next(batches)
    load_s = (time.perf_counter() - t0) / args.steps

    model = create_model("resnet20")
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    step_s = (time.perf_counter() - t0) / args.steps

    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, channels_last {args.channels_last}")
    print(f"loader (gather+crop+flip+normalise): {1000 * load_s:7.2f} ms/batch")
    print(f"resnet20 training step (fp32):       {1000 * step_s:7.2f} ms/step")
    print(f"loader share of a step: {100 * load_s / (load_s + step_s):.1f}%  (target <= 10%)")


if __name__ == "__main__":
    main()
