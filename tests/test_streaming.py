"""The streaming path: JPEG trees of any size, decoded by workers, resumable mid-epoch, sharded."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD, ROOT, assert_clean_error, run_cli
from safetensors.torch import load_file

from resnets.data import StreamLoader, load_dataset
from resnets.data.generate import write_jpeg_tree
from resnets.data.shards import open_shards
from resnets.training import list_checkpoints
from resnets.training.recipes import apply_recipe

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
# fp32 given: these tests are about the data, and a fast-path trial at 64-96 px costs tens of seconds
# on a CPU without bf16 units (AMD EPYC family 25 model 1), where bf16 steps run ~12x slower.
SMALL = ["--model", "resnet20", "--dataset", "imagefolder", "--loader", "stream", "--image-size", "32",
         "--batch-size", "8", "--lr", "0.05", "--precision", "fp32", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 training and 12 validation JPEGs of 200-500 px in 4 classes."""
    return write_jpeg_tree(tmp_path_factory.mktemp("jpegs"), per_class=12, classes=4, test_per_class=3)


def _batches(source, epoch: int = 1, start: int = 0, workers: int = 0, seed: int = 3) -> list:
    loader = StreamLoader(source, 8, (0.5,) * 3, (0.25,) * 3, train=True, image_size=64, seed=seed,
                          workers=workers)  # fmt: skip
    return list(loader.epoch(epoch, start))


@pytest.mark.slow
def test_resnet18_at_224_trains_from_a_jpeg_tree_by_the_readme_command(tree: Path, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^\$ (resnets train --recipe imagenet .*)$", readme, re.M).group(1).split()
    assert "--data-dir" in command
    command[command.index("--data-dir") + 1] = str(tree)
    command[command.index("--out") + 1] = str(tmp_path / "r18")
    # The README's command as written, on a net and a length that fit a test (fp32 given: the trial
    # at 224 px took 66 of the test's 206 s on an AVX2-only EPYC, timing bf16 at ~11 s a step).
    proc = run_cli(*command[1:], "--model", "resnet18", "--iterations", "3", "--batch-size", "8",
                   "--workers", "2", "--precision", "fp32", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = json.loads((tmp_path / "r18" / "config.json").read_text())["resolved"]
    assert resolved["loader"]["kind"] == "stream" and resolved["loader"]["workers"] == 2
    assert resolved["image_shape"] == [3, 224, 224] and resolved["train_images"] == 48
    metrics = json.loads((tmp_path / "r18" / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["step"] == 3 and np.isfinite(metrics["test_loss"])
    # eval and predict see the run's own evaluation crop of the same files.
    ev = run_cli("eval", "--run", str(tmp_path / "r18"), "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["images"] == 12
    assert json.loads(ev.stdout)["loss"] == pytest.approx(metrics["test_loss"], rel=0.05)
    image = sorted((tree / "val" / "class002").iterdir())[0]
    pred = run_cli("predict", "--run", str(tmp_path / "r18"), str(image))
    assert pred.returncode == 0 and "class0" in pred.stdout, pred.stderr[-2000:]


def test_batches_do_not_depend_on_workers_and_resume_mid_epoch(tree: Path) -> None:
    data = load_dataset("imagefolder", tree, loader="stream")
    whole = _batches(data.train)
    assert len(whole) == 6 and whole[0][0].shape == (8, 3, 64, 64)
    for got, want in zip(_batches(data.train, workers=2), whole, strict=True):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for got, want in zip(_batches(data.train, start=4), whole[4:], strict=True):
        assert torch.equal(got[0], want[0])
    other_epoch = _batches(data.train, epoch=2)
    assert not torch.equal(other_epoch[0][0], whole[0][0])
    # Every image once per epoch, and evaluation sees each test image once at its centre crop.
    labels = torch.cat([y for _, y in whole])
    assert sorted(labels.tolist()) == sorted(data.train.labels.tolist())
    test = StreamLoader(data.test, 5, (0.5,) * 3, (0.25,) * 3, image_size=48, workers=0)
    assert [len(y) for _, y in test] == [5, 5, 2]


def test_every_decoder_cuts_the_same_crop_of_a_large_photo(tmp_path: Path) -> None:
    from resnets.data.transforms import SIMPLEJPEG, eval_image, train_image

    big = write_jpeg_tree(tmp_path, per_class=2, classes=1, sizes=(1200, 1600))
    decoders = ["pillow", "pillow-draft"] + (["simplejpeg"] if SIMPLEJPEG is not None else [])
    for path in sorted((big / "train" / "class000").iterdir()):
        data = path.read_bytes()
        for make in (
            lambda d, n: train_image(d, 224, 7, decoder=n),
            lambda d, n: eval_image(d, 224, decoder=n),
        ):
            full, *scaled = (make(data, n).astype(np.float64) for n in decoders)
            for image in scaled:  # a reduced decode of the same box: the same picture, a little softer
                assert image.shape == full.shape == (3, 224, 224)
                assert np.abs(image - full).mean() < 2.0  # another crop differs by ~10


@pytest.mark.slow
def test_auto_loader_streams_by_size_and_records_why(tree: Path) -> None:
    small = load_dataset("imagefolder", tree)
    assert not getattr(small, "streamed", False) and small.image_shape == (3, 32, 32)
    big = load_dataset("imagefolder", tree, image_size=1024)  # 60 images at 1024 px: 180 MiB decoded
    assert small.loader_reason.endswith("kept in memory") and "within" in small.loader_reason
    assert getattr(big, "streamed", False) == ("over" in big.loader_reason)


def _rss_script(tree: Path) -> str:
    return textwrap.dedent(f"""
        import os, sys
        import torch
        sys.path.insert(0, {str(ROOT / "src")!r})
        from resnets.data import StreamLoader, load_dataset
        torch.set_num_threads(1)
        data = load_dataset("imagefolder", {str(tree)!r}, loader="stream", image_size=96)
        loader = StreamLoader(data.train, 16, data.mean, data.std, train=True, image_size=96, workers=2)
        for i, _ in enumerate(loader.epoch(0)):
            if i == 40:
                break
        pids = [os.getpid(), *(w.pid for w in loader._loader._iterator._workers)]
        def rss(pid):
            for line in open(f"/proc/{{pid}}/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        print(len(data.train), sum(rss(p) for p in pids))
    """)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read RSS")
def test_loader_memory_is_the_same_for_ten_times_the_images(tmp_path: Path) -> None:
    from resnets.data.generate import link_copies

    measured = {}
    for copies in (9, 99):  # 200 drawn images, hard-linked into trees of 2,000 and 20,000
        tree = write_jpeg_tree(tmp_path / f"x{copies}", per_class=50, classes=4, sizes=(64, 160))
        link_copies(tree, copies)
        # glibc's sliding mmap threshold lets the main process cache up to ~200 MB of freed batch
        # buffers, at random and whatever the dataset's size (measured); a fixed threshold removes
        # that noise so what remains is what the loader holds.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
        out = subprocess.run([sys.executable, "-c", _rss_script(tree / "train")], capture_output=True,
                             text=True, timeout=HANG_GUARD, env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        images, kib = map(int, out.stdout.split())
        measured[images] = kib
    assert sorted(measured) == [1600, 16000]  # the 80 % training share of 2,000 and 20,000
    print(f"loader RSS (main + 2 workers), KiB: {measured}")
    assert measured[16000] <= 1.10 * measured[1600], measured


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_matches_an_unbroken_run(tree: Path, tmp_path: Path) -> None:
    args = ["train", *SMALL, "--data-dir", str(tree), "--iterations", "16", "--eval-every", "8",
            "--checkpoint-every", "1", "--keep-checkpoints", "100"]  # fmt: skip
    straight = run_cli(*args, "--workers", "1", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "resnets", *args, "--workers", "2", "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while proc.poll() is None and not any(p.name == "step-00000003.pt" for p in list_checkpoints(run)):
        time.sleep(0.005)  # progress, not the clock, says when
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists(), "the run finished before the kill"
    for path in list_checkpoints(run):  # however far it got, resume from step 3: half-way through epoch 0
        if int(path.stem.split("-")[1]) > 3:
            path.unlink()
    resumed = run_cli("train", "--resume", "--out", str(run), "--workers", "0", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_shards_hold_the_folder_images_and_yield_the_same_batches(tree: Path, tmp_path: Path) -> None:
    proc = run_cli("shard", str(tree), "--out", str(tmp_path / "shards"), "--shard-mb", "0.3")
    assert proc.returncode == 0, proc.stderr
    splits, classes = open_shards(str(tmp_path / "shards"))
    assert len(splits["train"].shards) > 1 and classes == [f"class{i:03d}" for i in range(4)]
    folder = load_dataset("imagefolder", tree, loader="stream")
    for got, want in zip(_batches(splits["train"]), _batches(folder.train), strict=True):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # Plain WebDataset tars: {key}.jpg and {key}.cls pairs that any tar reader lists.
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["000000000.jpg", "000000000.cls"]
    again = run_cli("shard", str(tree), "--out", str(tmp_path / "shards"))
    assert_clean_error(again, "already holds shards")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers byte-range requests, as object stores do."""

    def send_head(self):
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not spec or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        lo, _, hi = spec.removeprefix("bytes=").partition("-")
        lo, hi = int(lo), min(int(hi) if hi else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
        self.send_header("Content-Length", str(hi - lo + 1))
        self.end_headers()
        return io.BytesIO(data[lo : hi + 1])

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_shards_stream_from_an_http_url(tree: Path, tmp_path: Path) -> None:
    pytest.importorskip("aiohttp", reason="http URLs need the remote extra")
    assert run_cli("shard", str(tree), "--out", str(tmp_path / "shards"), "--shard-mb", "0.3").returncode == 0
    handler = functools.partial(_RangeHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/shards"
        remote = load_dataset("shards", url)
        local = load_dataset("shards", tmp_path / "shards")
        for got, want in zip(_batches(remote.train, workers=2), _batches(local.train), strict=True):
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        missing = run_cli("train", "--dataset", "shards", "--data-dir", url + "-gone", "--quiet")
        server.shutdown()
    assert_clean_error(missing, "index.json")


@pytest.mark.slow
def test_a_corrupt_jpeg_is_named_and_skipped(tree: Path, tmp_path: Path) -> None:
    bad_tree = tmp_path / "tree"
    shutil.copytree(tree, bad_tree)
    victim = sorted((bad_tree / "train" / "class001").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])  # a truncated download
    data = load_dataset("imagefolder", bad_tree, loader="stream")
    with pytest.warns(UserWarning, match=re.escape(str(victim))):
        batches = _batches(data.train)
    assert len(batches) == 6 and all(len(y) == 8 for _, y in batches)
    proc = run_cli(
        "train", *SMALL, "--data-dir", str(bad_tree), "--epochs", "1", "--out", str(tmp_path / "r")
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping unreadable image" in proc.stderr and str(victim) in proc.stderr


@pytest.mark.slow
def test_progressive_resizing_grows_the_crop_and_is_recorded(tree: Path, tmp_path: Path) -> None:
    proc = run_cli("train", *SMALL, "--data-dir", str(tree), "--image-size", "96", "--resize-from", "32",
                   "--epochs", "4", "--out", str(tmp_path / "p"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    resolved = json.loads((tmp_path / "p" / "config.json").read_text())["resolved"]
    assert resolved["train_sizes"] == [32, 64, 96, 96]
    # In memory the images are scaled down instead, in steps of 8 px at CIFAR size.
    memory = run_cli("train", *SMALL, "--loader", "memory", "--data-dir", str(tree), "--resize-from", "16",
                     "--epochs", "4", "--out", str(tmp_path / "m"))  # fmt: skip
    assert memory.returncode == 0, memory.stderr[-2000:]
    resolved = json.loads((tmp_path / "m" / "config.json").read_text())["resolved"]
    assert resolved["train_sizes"] == [16, 24, 32, 32]
    at = resolved["train_flops_per_image_at"]
    assert int(at["16"]) * 3 < int(at["32"]) == resolved["train_flops_per_image"]
    shrink = run_cli("train", *SMALL[:-1], "--data-dir", str(tree), "--resize-from", "64",
                     "--out", str(tmp_path / "s"))  # fmt: skip
    assert_clean_error(shrink, "larger than the final crop 32")


def test_imagenet_recipes_are_torchvisions_reference_and_a_fast_one() -> None:
    ref = apply_recipe("imagenet", {})
    assert (ref["model"], ref["epochs"], ref["batch_size"], ref["lr"], ref["weight_decay"]) == (
        "resnet50",
        90,
        256,
        0.1,
        1e-4,
    )
    fast = apply_recipe("imagenet-fast", {"dataset_options": {"image_size": 160}})
    assert fast["dataset_options"] == {"loader": "stream", "image_size": 160, "test_size": 224}
    assert fast["label_smoothing"] > 0 and fast["ema_decay"] and fast["resize_from"] < 192


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed beside this Python")
def test_torchrun_two_processes_stream_train_and_resume(tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [TORCHRUN, "--nproc_per_node=2", "-m", "resnets", "train"]
    out = ["--out", str(tmp_path / "ddp")]
    args = [*SMALL, "--data-dir", str(tree), "--iterations", "4", "--batch-size", "16", "--workers", "1"]
    first = subprocess.run(
        [*launch, *args, *out], capture_output=True, text=True, timeout=HANG_GUARD, env=env
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run([*launch, "--resume", "--iterations", "6", "--quiet", *out], capture_output=True,
                             text=True, timeout=HANG_GUARD, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines][-1] == 6
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["resolved"]["processes"] == 2
