"""Datasets and the tensor loader: real files, corrupt files, determinism of augmentation."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Plant

from resnets.data import TensorLoader, list_datasets, load_dataset
from resnets.data.cifar import CIFAR10
from resnets.data.dataset import ImageData
from resnets.data.download import download_archive
from resnets.data.loader import random_crop
from resnets.errors import ResnetsError, UnknownNameError


def test_registered_datasets() -> None:
    assert set(list_datasets()) == {
        "digits",
        "cifar10",
        "cifar100",
        "mnist",
        "imagefolder",
        "shards",
        "synthetic",
    }
    with pytest.raises(UnknownNameError, match="did you mean cifar10"):
        load_dataset("cifar11")


def test_digits_is_builtin_fixed_and_stratified() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.image_shape == (1, 16, 16) and a.num_classes == 10
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.train.labels, b.train.labels)
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of ~180 per class
    assert a.train.images.dtype == torch.uint8 and a.train.images.max() == 255
    assert not a.flip  # a mirrored digit is another symbol


def test_digits_come_from_the_cache_as_prepared_and_a_damaged_cache_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnets.data.builtin import _prepare_digits

    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path))
    images, labels, train, test = _prepare_digits(16)
    first = load_dataset("digits")  # prepares and caches
    (cached,) = tmp_path.glob("digits-16-*.npz")
    second = load_dataset("digits")  # reads the cache
    for d in (first, second):
        assert torch.equal(d.train.images, images[train]) and torch.equal(d.train.labels, labels[train])
        assert torch.equal(d.test.images, images[test]) and torch.equal(d.test.labels, labels[test])
    for damage in (b"not a zip", cached.read_bytes()[:1000]):
        cached.write_bytes(damage)
        again = load_dataset("digits")
        assert torch.equal(again.test.images, images[test])
        assert cached.read_bytes()[:2] == b"PK"  # rewritten whole


def test_synthetic_is_seeded_and_learnable() -> None:
    d = load_dataset("synthetic", image_size=8, train_size=64, test_size=16, num_classes=4)
    e = load_dataset("synthetic", image_size=8, train_size=64, test_size=16, num_classes=4)
    assert d.image_shape == (3, 8, 8) and torch.equal(d.train.images, e.train.images)
    # Nearest class mean separates the classes: there is signal to learn.
    means = torch.stack([d.train.images[d.train.labels == c].float().mean(0) for c in range(4)])
    dist = ((d.test.images.float()[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (dist.argmin(1) == d.test.labels).float().mean() > 0.9
    with pytest.raises(ResnetsError, match="image_size"):
        load_dataset("synthetic", image_size=0)


# --- CIFAR-10 and MNIST from ../shared/data -------------------------------------------


@pytest.mark.slow
def test_cifar10_real_files(shared_data: Path) -> None:
    d = load_dataset("cifar10", shared_data)
    assert (len(d.train), len(d.test)) == (50_000, 10_000)
    assert d.image_shape == (3, 32, 32) and d.classes[0] == "airplane" and d.classes[9] == "truck"
    assert torch.bincount(d.train.labels).tolist() == [5000] * 10
    assert torch.bincount(d.test.labels).tolist() == [1000] * 10
    # Spot checks from the data's README: official order and pixels.
    first = d.train.images[0].flatten()
    assert first[:3].tolist() == [59, 43, 50] and first[-3:].tolist() == [140, 84, 72]
    assert d.train.images[9999].flatten()[:3].tolist() == [62, 61, 60]
    assert d.train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert d.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    hwc = d.train.images[0].permute(1, 2, 0).contiguous().numpy().tobytes()
    assert hashlib.sha256(hwc).hexdigest().startswith("7cbda40c52a00fdb")
    # The widely published per-channel statistics.
    assert d.mean == pytest.approx((0.49139968, 0.48215841, 0.44653091), abs=1e-6)
    assert d.std == pytest.approx((0.24703223, 0.24348513, 0.26158784), abs=1e-4)
    assert d.crop_padding == 4 and d.flip


def test_mnist_real_files(shared_data: Path) -> None:
    d = load_dataset("mnist", shared_data)
    assert d.image_shape == (1, 28, 28)
    assert torch.bincount(d.train.labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert torch.bincount(d.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert d.mean[0] == pytest.approx(0.1306604762738429, abs=1e-6)


@pytest.fixture
def cifar_copy(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(shared_data / "cifar-10-batches-py", folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return tmp_path


def test_truncated_cifar_batch_is_a_clear_error(cifar_copy: Path) -> None:
    batch = cifar_copy / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: 1 << 20])
    with pytest.raises(ResnetsError, match="data_batch_3 is corrupt"):
        load_dataset("cifar10", cifar_copy)


def test_cifar_batch_with_wrong_structure(cifar_copy: Path) -> None:
    batch = cifar_copy / "cifar-10-batches-py" / "test_batch"
    bad = {"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 10}
    batch.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ResnetsError, match=r"expected uint8 \(10000, 3072\)"):
        load_dataset("cifar10", cifar_copy)
    bad = {"data": np.zeros((10000, 3072), np.uint8), "labels": [11] * 10000}
    batch.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ResnetsError, match="labels outside"):
        load_dataset("cifar10", cifar_copy)


def test_malicious_cifar_batch_is_refused_without_running(cifar_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    batch = cifar_copy / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": Plant(str(marker)), "labels": []}, protocol=2))
    with pytest.raises(ResnetsError, match="not a plain data pickle"):
        load_dataset("cifar10", cifar_copy)
    assert not marker.exists()


def test_missing_cifar_offline_says_where_to_put_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(ResnetsError, match=r"put the official python batches in .*cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)


def test_download_checksum_mismatch_keeps_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "cifar-10-python.tar.gz"
    fake.write_bytes(b"not the official archive")
    dest = tmp_path / "data"
    with pytest.raises(ResnetsError, match="checksum mismatch"):
        download_archive(fake.as_uri(), CIFAR10.md5, dest, "CIFAR-10")
    assert list(dest.iterdir()) == []


def _write_idx(path: Path, array: np.ndarray, magic_dtype: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, magic_dtype, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fake_mnist(folder: Path, n: int = 20) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("t10k", n // 2)):
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)


def test_mnist_idx_wrong_header_and_truncation(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    assert len(load_dataset("mnist", tmp_path).train) == 20
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, np.arange(10) % 10, magic_dtype=0x0D)  # float IDX: not what MNIST holds
    with pytest.raises(ResnetsError, match="not an unsigned-byte IDX"):
        load_dataset("mnist", tmp_path)
    _fake_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ResnetsError, match="truncated"):
        load_dataset("mnist", tmp_path)
    images.write_bytes(images.read_bytes()[:50])  # a cut gzip stream
    with pytest.raises(ResnetsError, match="train-images"):
        load_dataset("mnist", tmp_path)
    os.remove(images)
    with pytest.raises(ResnetsError, match="not found"):
        load_dataset("mnist", tmp_path)


def test_imagefolder_any_mode(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, mode in (("cat", "RGB"), ("dog", "L"), ("eel", "RGBA"), ("fox", "P")):
        (tmp_path / cls).mkdir()
        for i in range(5):
            size = (7 + i, 40 - i)
            arr = rng.integers(0, 256, (*size[::-1], 4 if mode == "RGBA" else 3), dtype=np.uint8)
            im = Image.fromarray(arr[..., :3] if mode != "RGBA" else arr, "RGBA" if mode == "RGBA" else "RGB")
            im.convert(mode).save(tmp_path / cls / f"{i}.png")
    d = load_dataset("imagefolder", tmp_path, image_size=12)
    assert d.classes == ["cat", "dog", "eel", "fox"] and d.image_shape == (3, 12, 12)
    assert len(d.train) + len(d.test) == 20 and len(d.test) == 4  # one per class
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ResnetsError, match=r"broken\.png: not a readable image"):
        load_dataset("imagefolder", tmp_path)


# --- the loader -----------------------------------------------------------------------


def test_random_crop_matches_a_per_image_reference() -> None:
    x = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [4, 4], [2, 2], [0, 3], [1, 4]])
    out = random_crop(x, 2, offsets)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (r, c) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, r : r + 6, c : c + 6])
    assert torch.equal(out[2], x[2])  # offset == padding is the identity


def test_loader_is_deterministic_resumable_and_covers_the_epoch() -> None:
    d = load_dataset("synthetic", image_size=8, train_size=100, test_size=10)
    kw = {"mean": d.mean, "std": d.std, "train": True, "crop_padding": 2, "flip": True, "seed": 3}
    a, b = TensorLoader(d.train, 16, **kw), TensorLoader(d.train, 16, **kw)
    assert len(a) == 6  # drop_last for training
    full = list(a.epoch(4))
    resumed = list(b.epoch(4, start=3))
    for (x1, y1), (x2, y2) in zip(full[3:], resumed, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert all(y.max() < 10 for _, y in full)
    other = list(a.epoch(5))
    assert not torch.equal(full[0][0], other[0][0])  # a new order and new crops each epoch
    reseeded = next(TensorLoader(d.train, 16, **{**kw, "seed": 4}).epoch(4))
    assert not torch.equal(full[0][0], reseeded[0])


def test_progressive_resizing_scales_the_same_batches_down_on_its_epochs_only() -> None:
    d = load_dataset("synthetic", image_size=16, train_size=64, test_size=8)
    kw = {"mean": d.mean, "std": d.std, "train": True, "crop_padding": 2, "flip": True, "seed": 1}
    full = TensorLoader(d.train, 16, **kw)
    resized = TensorLoader(d.train, 16, size_at=lambda epoch: 8 if epoch == 0 else 16, **kw)
    for epoch in (0, 1):
        for (x, y), (xr, yr) in zip(full.epoch(epoch), resized.epoch(epoch), strict=True):
            assert torch.equal(y, yr)  # the same images in the same order, crops and flips
            if epoch == 0:  # the whole image scaled down (its mean kept), not a corner cut from it
                assert xr.shape == (16, 3, 8, 8)
                torch.testing.assert_close(xr.mean((2, 3)), x.mean((2, 3)), atol=0.05, rtol=0)
                assert not torch.equal(xr, x[..., :8, :8])
            else:
                assert torch.equal(x, xr)
    # An image of one colour stays that colour: the filter is normalised and antialiased.
    flat = ImageData(torch.arange(8, dtype=torch.uint8).mul(30).view(8, 1, 1, 1).expand(8, 3, 16, 16).clone(),
                     torch.zeros(8, dtype=torch.long))  # fmt: skip
    small = next(TensorLoader(flat, 8, (0.0,) * 3, (1 / 255,) * 3, train=True, size_at=lambda e: 8).epoch(0))[
        0
    ]
    torch.testing.assert_close(small, small[:, :, :1, :1].expand_as(small))
    test = TensorLoader(d.test, 8, d.mean, d.std, size_at=lambda epoch: 8)
    assert next(iter(test))[0].shape[-1] == 16  # evaluation stays at full size


def test_an_epoch_visits_each_image_once_on_every_rank() -> None:
    # Labels 0..99 name the images, so the labels seen are the images visited.
    data = ImageData(torch.zeros(100, 1, 4, 4, dtype=torch.uint8), torch.arange(100))
    kw = {"mean": (0.0,), "std": (1.0,), "train": True, "seed": 7}
    for epoch in (0, 1):
        seen = torch.cat([y for _, y in TensorLoader(data, 16, **kw).epoch(epoch)])
        assert len(seen) == 96 and len(seen.unique()) == 96  # 6 full batches, no image twice
        ranks = [torch.cat([y for _, y in TensorLoader(data, 16, shard=(r, 2), **kw).epoch(epoch)])
                 for r in (0, 1)]  # fmt: skip
        assert len(ranks[0]) == len(ranks[1]) == 48
        assert len(torch.cat(ranks).unique()) == 96  # the ranks split one global order, no overlap
    orders = [torch.cat([y for _, y in TensorLoader(data, 16, **kw).epoch(e)]) for e in (0, 1)]
    assert not torch.equal(orders[0], orders[1])


def test_eval_loader_keeps_order_and_last_batch() -> None:
    d = load_dataset("synthetic", image_size=4, train_size=10, test_size=10)
    loader = TensorLoader(d.test, 4, d.mean, d.std)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), d.test.labels)
    x = torch.cat([x for x, _ in batches])
    mean = torch.tensor(d.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(d.std).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(x, (d.test.images.float() - mean) / std)


def test_download_extracts_a_verified_archive_and_refuses_escapes(tmp_path: Path) -> None:
    import io
    import tarfile

    from resnets.data.download import file_md5

    def archive(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    good = archive("good.tar.gz", {"cifar-10-batches-py/readme.txt": b"hello"})
    download_archive(good.as_uri(), file_md5(good), tmp_path / "data", "test archive")
    assert (tmp_path / "data" / "cifar-10-batches-py" / "readme.txt").read_bytes() == b"hello"
    evil = archive("evil.tar.gz", {"../escaped.txt": b"gotcha"})
    with pytest.raises(ResnetsError, match="cannot unpack"):
        download_archive(evil.as_uri(), file_md5(evil), tmp_path / "data2", "test archive")
    assert not (tmp_path / "escaped.txt").exists()
