"""Peak memory of the in-memory image-folder path against the size of the decoded images.

    python benchmarks/imagefolder_memory.py [--images 500 2000] [--sizes 32 224] [--json FILE]

For each folder size and image size, a fresh process loads a generated JPEG folder through
`load_dataset("imagefolder", loader="memory")` (decode, stack, per-channel statistics) and
reports its peak RSS (ru_maxrss) minus the RSS of a process that only imported the library.
The target (issue 24): the load's peak stays within 1.5x the decoded images. Prints the CPU
model (family/model numbers) the figures belong to.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from resnets.data.generate import write_jpeg_tree
from resnets.training.autotune import device_name

PROBE = """
import resource, sys
from pathlib import Path
from resnets.data import load_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] != "-":
    data = load_dataset("imagefolder", Path(sys.argv[1]), image_size=int(sys.argv[2]), loader="memory")
    data.mean  # the statistics are part of loading
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(folder: str, size: int) -> tuple[int, int]:
    """(RSS after imports, peak RSS) in KiB of a fresh process that loads the folder."""
    out = subprocess.run([sys.executable, "-c", PROBE, folder, str(size)], capture_output=True, text=True,
                         check=True)  # fmt: skip
    base, peak = (int(v) for v in out.stdout.split())
    return base, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    p.add_argument("--json", help="write the rows here too")
    args = p.parse_args()
    import torch

    print(f"machine: {device_name(torch.device('cpu'))}")
    _, imports = peak_kib("-", 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            folder = write_jpeg_tree(Path(tmp) / f"f{n}", per_class=n // 4 - n // 20, classes=4,
                                     sizes=(256, 400), test_per_class=n // 20)  # fmt: skip
            for size in args.sizes:
                _, peak = peak_kib(str(folder), size)
                decoded = n * 3 * size * size / 2**20
                extra = (peak - imports) / 1024
                rows.append({"images": n, "size": size, "decoded_mib": round(decoded, 1),
                             "peak_over_imports_mib": round(extra, 1),
                             "ratio": round(extra / decoded, 2)})  # fmt: skip
                print(f"{n:6d} images at {size:3d} px: decoded {decoded:8.1f} MiB, load peak "
                      f"{extra:8.1f} MiB above the imports: {extra / decoded:5.2f}x")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": device_name(torch.device("cpu")), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
