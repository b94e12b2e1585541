"""`resnets shard`: an image folder packed into tar shards for streaming to many machines."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ResnetsError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `resnets shard`."""
    p = sub.add_parser(
        "shard", help="pack an image folder into WebDataset tar shards (train with --dataset shards)"
    )
    p.add_argument(
        "folder", help="DIR/{train,val|test}/<class>/<image>, DIR/{train,val}.txt, or DIR/<class>/..."
    )
    p.add_argument("--out", required=True, help="folder for the shards and their index")
    p.add_argument("--shard-mb", type=float, default=256, help="megabytes per shard (default 256)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="with no test/val split on disk: the share of each class held out (default 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    p.set_defaults(func=run_shard)


def run_shard(args: argparse.Namespace) -> int:
    """Write the shards and print what went where."""
    from ..data.imagefolder import list_splits
    from ..data.shards import write_shards
    from ..training.progress import Progress

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise ResnetsError(f"image folder {folder} does not exist")
    if not args.shard_mb > 0:
        raise ResnetsError(f"--shard-mb must be > 0, got {args.shard_mb}")
    if not 0 < args.test_fraction < 1:
        raise ResnetsError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if (out / "index.json").exists():
        raise ResnetsError(f"{out} already holds shards; choose another --out")
    train, test, classes = list_splits(folder, args.test_fraction, args.seed)
    bar = Progress(len(train) + len(test), desc="shard")
    done = {"train": 0, "test": 0}

    def progress(split: str, written: int, total: int) -> None:
        done[split] = written
        bar.show(sum(done.values()), f"{split} {written:,}/{total:,} images")

    try:
        record = write_shards(
            {"train": train, "test": test}, classes, out, int(args.shard_mb * 2**20), progress
        )
    finally:
        bar.close()
    for split, info in record["splits"].items():
        print(f"{split}: {info['images']} images in {len(info['shards'])} shard(s)")
    print(f"{len(classes)} classes; train with --dataset shards --data-dir {out}")
    return 0
