"""PNGs of a seeded CIFAR-10 training subset and the test set, small enough to carry to a GPU machine.

    python scripts/cifar_png_subset.py [--data-dir ../shared/data] [--train 10000] [--out .gpu/cifar10k]

Writes OUT/{train,test}/<class>/<index>.png, readable by `--dataset imagefolder`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from resnets.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--train", type=int, default=10_000, help="training images (seeded subset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=".gpu/cifar10k")
    args = p.parse_args()
    data = load_dataset("cifar10", args.data_dir)
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(len(data.train.labels), args.train, replace=False).tolist())
    everything = range(len(data.test.labels))
    for split, name, indices in ((data.train, "train", chosen), (data.test, "test", everything)):
        for i in indices:
            folder = Path(args.out) / name / data.classes[int(split.labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(split.images[i].numpy().transpose(1, 2, 0))
            image.save(folder / f"{i:05d}.png", optimize=True)


if __name__ == "__main__":
    main()
