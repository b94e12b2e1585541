#!/usr/bin/env bash
# The full CIFAR-10 (official python batches, 6 x 31 MB) onto a GPU machine of the device tool, whose
# calls carry at most 64 MiB each: packed here into three xz parts of ~47 MB (two batches each), each
# carried by one call and unpacked there into one folder; the machine keeps it while it stays warm
# (30 s between calls), so the third call can train on all of it.
#
#   here:  bash scripts/gpu_stage_cifar.sh pack [DATA_DIR]           -> .gpu/cifar-1 .gpu/cifar-2 .gpu/cifar-3
#   there: bash scripts/gpu_stage_cifar.sh unpack .gpu/cifar-N [DEST]  (DEST: /tmp/cifar10; one call per part)
#          then DATA_DIR=/tmp/cifar10 bash scripts/gpu_paper_cifar.sh LIMIT OUT  (in the call with the last part)
#
# Each part is checked against the SHA-256 of its batches taken here, so a part cut off in transfer
# fails loudly rather than training on a broken batch. .gpu/ is git-ignored: name the part in `carry`.
set -eu
what=${1:?usage: bash scripts/gpu_stage_cifar.sh pack [DATA_DIR] | unpack PART [DEST]}
py=${PYTHON:-python3}
case "$what" in
  pack)
    src=${2:-../shared/data}/cifar-10-batches-py
    "$py" - "$src" << 'EOF'
import hashlib, lzma, pathlib, sys
src = pathlib.Path(sys.argv[1])
parts = [["data_batch_1", "data_batch_2"], ["data_batch_3", "data_batch_4"],
         ["data_batch_5", "test_batch", "batches.meta"]]
for n, names in enumerate(parts, 1):
    part = pathlib.Path(f".gpu/cifar-{n}")
    part.mkdir(parents=True, exist_ok=True)
    sums = []
    for name in names:
        raw = (src / name).read_bytes()
        (part / f"{name}.xz").write_bytes(lzma.compress(raw, preset=6))
        sums.append(f"{hashlib.sha256(raw).hexdigest()}  {name}\n")
    (part / "SHA256SUMS").write_text("".join(sums))
    size = sum(f.stat().st_size for f in part.iterdir())
    print(f"{part}: {', '.join(names)} ({size / 2**20:.1f} MiB)")
EOF
    ;;
  unpack)
    part=${2:?unpack needs the folder of a part}
    dest=${3:-/tmp/cifar10}/cifar-10-batches-py
    mkdir -p "$dest"
    "$py" - "$part" "$dest" << 'EOF'
import hashlib, lzma, pathlib, sys
part, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for line in (part / "SHA256SUMS").read_text().splitlines():
    digest, name = line.split()
    raw = lzma.decompress((part / f"{name}.xz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != digest:
        sys.exit(f"{part}/{name}.xz does not unpack to the batch packed (SHA-256 differs)")
    (dest / name).write_bytes(raw)
    print(f"{dest / name}: ok")
EOF
    ls "$dest"
    ;;
  *)
    echo "usage: bash scripts/gpu_stage_cifar.sh pack [DATA_DIR] | unpack PART [DEST]" >&2
    exit 2
    ;;
esac
