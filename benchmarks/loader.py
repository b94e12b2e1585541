"""The streaming path's speed: decoders, readers and workers at 224 px against resnet50's appetite.

    python benchmarks/loader.py [--images 512] [--sizes 350 500] [--json docs/bench/loader.json]

On a generated tree of JPEGs of ImageNet's typical size (350-500 px), in one run on one machine:
1. decode + RandomResizedCrop(224) + flip, one process: Pillow, Pillow's draft mode, and
   simplejpeg's scaled decoding when it is installed (the default then);
2. reading the encoded bytes: files of a folder, our tar-shard reader, and webdataset's
   sequential reader when it is installed;
3. StreamLoader end to end with 1 and 2 workers, and resnet50 training on this CPU (bf16,
   channels-last, batch 16) on the same machine;
4. how many workers keep a GPU fed, from the H200 resnet50 figure in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from memory import _cpu_name as cpu_name  # this folder's memory benchmark: one CPU naming

from resnets import create_model
from resnets.data import StreamLoader, load_dataset
from resnets.data.generate import write_jpeg_tree
from resnets.data.shards import open_shards, write_shards
from resnets.data.transforms import DECODER, SIMPLEJPEG, eval_image, train_image

H200_RESNET50_TRAIN = 6371.7  # img/s, bf16 channels-last compiled, batch 256 (docs/results.md)


def rate(fn, items: list, repeat: int = 2) -> float:
    """Items per second of ``fn`` over ``items``, best of ``repeat`` passes."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i, item in enumerate(items):
            fn(item, i)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def decoders(blobs: list[bytes]) -> dict[str, float]:
    """Training crops (RandomResizedCrop 224 + flip) per second by each decoder, one process."""
    names = ["pillow", "pillow-draft"] + (["simplejpeg"] if SIMPLEJPEG is not None else [])
    if SIMPLEJPEG is None:
        print("simplejpeg not installed: skipped", file=sys.stderr)
    out = {name: rate(lambda b, i, n=name: train_image(b, 224, i, decoder=n), blobs) for name in names}
    out["eval crop, default decoder"] = rate(lambda b, i: eval_image(b, 224), blobs)
    return out


def readers(tree: Path, shards: Path) -> dict[str, float]:
    data = load_dataset("imagefolder", tree, loader="stream")
    splits, _ = open_shards(str(shards))
    order = np.random.default_rng(0).permutation(len(data.train)).tolist()
    out = {
        "folder files, random order": rate(lambda j, i: data.train.read(j), order),
        "our shard reader, random order": rate(lambda j, i: splits["train"].read(j), order),
    }
    try:
        import webdataset as wds
    except ImportError:
        print("webdataset not installed: skipped", file=sys.stderr)
        return out
    urls = [str(shards / name) for name in splits["train"].shards]
    t0 = time.perf_counter()
    n = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False))
    out["webdataset, sequential"] = n / (time.perf_counter() - t0)
    return out


def loader_rate(tree: Path, workers: int, batches: int) -> float:
    data = load_dataset("imagefolder", tree, loader="stream")
    loader = StreamLoader(data.train, 32, data.mean, data.std, train=True, workers=workers)
    batches = min(batches, len(loader) - 1)
    it = loader.epoch(0)
    next(it)  # workers started and their queues primed
    t0 = time.perf_counter()
    n = sum(len(next(it)[1]) for _ in range(batches))
    seconds = time.perf_counter() - t0
    loader.close()  # stop the workers before the tree is deleted
    return n / seconds


def resnet50_rate(steps: int = 4, batch: int = 16) -> float:
    model = create_model("resnet50", num_classes=1000).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="JPEGs in the generated tree")
    parser.add_argument("--sizes", type=int, nargs=2, default=(350, 500), help="JPEG side range, px")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tree = write_jpeg_tree(
            Path(tmp) / "tree",
            per_class=args.images // 4,
            classes=4,
            sizes=tuple(args.sizes),
            test_per_class=4,
        )
        data = load_dataset("imagefolder", tree, loader="stream")
        shards = Path(tmp) / "shards"
        write_shards({"train": data.train, "test": data.test}, data.classes, shards, 64 * 2**20)
        blobs = [data.train.read(i) for i in range(min(len(data.train), 256))]
        kib = sum(map(len, blobs)) / len(blobs) / 1024
        result = {
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "images": len(data.train),
            "mean_jpeg_kib": round(kib, 1),
            "decode_per_process": decoders(blobs),
            "read_per_process": readers(tree, shards),
            "loader": {f"{w} worker(s)": loader_rate(tree, w, 12) for w in (1, 2)},
        }
    torch.set_num_threads(2)
    result["resnet50_train_cpu_img_s"] = resnet50_rate()
    ours = result["decode_per_process"][DECODER]
    result["workers_to_feed_h200_resnet50"] = math.ceil(H200_RESNET50_TRAIN / ours)
    result["workers_to_feed_this_cpu_resnet50"] = result["resnet50_train_cpu_img_s"] / ours
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
