"""Fuzzing with hypothesis: any input works or ends in the one-line error, never a traceback."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from resnets.cli import main
from resnets.data import load_dataset
from resnets.data.cifar import CIFAR10, read_batch
from resnets.data.imagefolder import load_image
from resnets.errors import ResnetsError
from resnets.training import TrainConfig

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)


def _cli(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in this process, offline, and return (exit status, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, {"RESNETS_OFFLINE": "1"}),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(out),
    ):
        try:
            code = main(argv)
        except SystemExit as e:  # --help and --version exit through argparse
            code = e.code
    return code, err.getvalue()


@contextlib.contextmanager
def _written(name: str, content: bytes) -> Iterator[Path]:
    """A file holding ``content`` in a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        yield path


def _assert_works_or_one_line_error(code: int, err: str, argv: list[str]) -> None:
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = [x for x in err.strip().splitlines() if not x.startswith("resnets: warning:")]
        assert len(lines) == 1 and lines[0].startswith("resnets: error: "), (argv, err)


# --- CLI arguments ----------------------------------------------------------------------------

NUMBERS = st.sampled_from(["0", "-1", "1", "2", "0.5", "nan", "inf", "-inf", "1e308", "x", "", "3" * 30])
FLAGS = {
    "--model": st.sampled_from(
        ["resnet20", "plain20", "preact_resnet110", "resnet18", "resnet21", "", "../x"]
    ),
    "--dataset": st.sampled_from(["digits", "synthetic", "cifar10", "mnist", "imagefolder", "nope"]),
    "--data-dir": st.sampled_from(["/nonexistent", "/etc/hostname", "."]),
    "--iterations": st.sampled_from(["-1", "0", "1", "2", "x"]),
    "--batch-size": st.sampled_from(["-1", "0", "1", "7", "64", "5000", "x"]),
    "--accumulate": st.sampled_from(["0", "1", "2", "3"]),
    "--lr": NUMBERS,
    "--momentum": NUMBERS,
    "--weight-decay": NUMBERS,
    "--label-smoothing": NUMBERS,
    "--ema": NUMBERS,
    "--warmup": st.sampled_from(["-1", "0", "1", "x"]),
    "--schedule": st.sampled_from(["paper", "cosine", "onecycle", "constant", "linear"]),
    "--precision": st.sampled_from(["auto", "fp32", "bf16", "fp16", "fp8"]),
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "tpu", ""]),
    "--eval-every": st.sampled_from(["-1", "0", "1", "x"]),
    "--checkpoint-every": st.sampled_from(["-1", "0", "1"]),
    "--keep-checkpoints": st.sampled_from(["0", "1", "3"]),
    "--train-subset": st.sampled_from(["-1", "0", "1", "40", "99999"]),
    "--seed": st.sampled_from(["-1", "0", "7", str(2**70)]),
    "--shortcut": st.sampled_from(["A", "B", "C", "D"]),
    "--width": st.sampled_from(["0", "0.01", "0.5", "-2", "nan"]),
    "--recipe": st.sampled_from(["fast", "fast94", "resnet20-fast", "slow"]),
    "--crop-padding": st.sampled_from(["-1", "0", "2", "x"]),
    "--norm-bias-lr-scale": NUMBERS,
    "--init-from": st.sampled_from(["/nonexistent.pth", "/etc/hostname"]),
    "--config": st.sampled_from(["/nonexistent.json", "/etc/hostname"]),
    "--grad-every": st.sampled_from(["0", "1"]),
    "--opt": st.sampled_from(["sgd", "muon", "adamw", "lion"]),
    "--muon-ns-steps": st.sampled_from(["-1", "0", "3", "x"]),
}
SWITCHES = ["--nesterov", "--no-decay-on-norm-and-bias", "--channels-last", "--no-channels-last",
            "--no-compile", "--eval-flip", "--zero-init-residual", "--resume", "--bogus", "--lookahead",
            "--final-eval-only", "--alternate-flip", "--eval-translate", "--muon-filter-norm"]  # fmt: skip


@st.composite
def train_argv(draw: st.DrawFn) -> list[str]:
    names = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=5, unique=True))
    argv = [x for n in names for x in (n, draw(FLAGS[n]))]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    if "--iterations" not in names:
        argv += ["--iterations", "1"]  # keep every run that is valid short
    return argv


@pytest.mark.slow
@settings(FUZZ, max_examples=60)
@given(train_argv())
def test_fuzzed_train_arguments(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        full = ["train", *argv, "--quiet", "--out", str(Path(tmp) / "run")]
        code, err = _cli(full)
        _assert_works_or_one_line_error(code, err, full)


# --- Config files -----------------------------------------------------------------------------

FIELDS = [*sorted(TrainConfig.__dataclass_fields__), "bogus", "resolved"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=8), inner, max_size=2),
    max_leaves=4,
)
SENSIBLE = {
    "model": st.sampled_from(["resnet20", "plain20", "resnet18"]),
    "dataset": st.sampled_from(["digits", "synthetic"]),
    "model_options": st.dictionaries(
        st.sampled_from(["shortcut", "width", "zero_init_residual", "x"]), JSON_VALUES, max_size=2
    ),
    "dataset_options": st.dictionaries(
        st.sampled_from(["image_size", "train_size", "x"]), JSON_VALUES, max_size=2
    ),
}


@st.composite
def config_json(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["object", "object", "object", "other json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "other json":
        return json.dumps(draw(JSON_VALUES)).encode()
    keys = draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True))
    return json.dumps({k: draw(SENSIBLE.get(k, JSON_VALUES)) for k in keys}).encode()


@pytest.mark.slow
@settings(FUZZ, max_examples=60)
@given(config_json())
def test_fuzzed_config_files(content: bytes) -> None:
    with _written("config.json", content) as path:
        tmp = path.parent
        full = [
            "train",
            "--config",
            str(path),
            "--iterations",
            "1",
            "--quiet",
            "--out",
            str(Path(tmp) / "run"),
        ]
        code, err = _cli(full)
        _assert_works_or_one_line_error(code, err, full)


@pytest.mark.slow
@settings(FUZZ, max_examples=25)
@given(config_json())
def test_fuzzed_config_json_of_a_finished_run(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    run = _finished_run(tmp_path_factory)
    original = (run / "config.json").read_bytes()
    try:
        (run / "config.json").write_bytes(content)
        for argv in (["eval", "--run", str(run)], ["train", "--resume", "--out", str(run), "--quiet"]):
            code, err = _cli(argv)
            _assert_works_or_one_line_error(code, err, argv)
    finally:
        (run / "config.json").write_bytes(original)


_RUN: list[Path] = []


def _finished_run(factory: pytest.TempPathFactory) -> Path:
    if not _RUN:
        run = factory.mktemp("fuzz") / "run"
        code, err = _cli(["train", "--dataset", "digits", "--iterations", "2", "--quiet", "--out", str(run)])
        assert code == 0, err
        _RUN.append(run)
    return _RUN[0]


# --- IDX (MNIST) and CIFAR files --------------------------------------------------------------


def _idx(ndim_field: int, dtype: int, dims: list[int], payload: int, zero: int = 0, high: int = 256) -> bytes:
    header = struct.pack(">HBB", zero, dtype, ndim_field) + b"".join(struct.pack(">I", d) for d in dims)
    return header + bytes(
        np.random.default_rng(abs(payload)).integers(0, high, max(payload, 0), dtype=np.uint8)
    )


@st.composite
def idx_pair(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    n = draw(st.integers(0, 6))
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    dims = [n, h, w] if draw(st.booleans()) else [n, h, w][: draw(st.integers(0, 3))]
    images = _idx(
        draw(st.sampled_from([3, 3, 3, 1, 4])), draw(st.sampled_from([8, 8, 8, 9, 13])), dims,
        n * h * w + draw(st.sampled_from([0, 0, 0, -1, 1, -5])), draw(st.sampled_from([0, 0, 0, 1])),
    )  # fmt: skip
    labels = _idx(1, 8, [draw(st.sampled_from([n, n, n + 1]))], n, draw(st.sampled_from([0, 0, 7])),
                  high=draw(st.sampled_from([10, 10, 256])))  # fmt: skip
    cut = draw(st.one_of(st.none(), st.integers(0, len(images))))
    return (images if cut is None else images[:cut]), labels, draw(st.booleans())


@settings(FUZZ, max_examples=80)
@given(idx_pair())
def test_fuzzed_idx_files(files: tuple[bytes, bytes, bool]) -> None:
    images, labels, gz = files
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "t10k"):
            for stem, data in (
                (f"{split}-images-idx3-ubyte", images),
                (f"{split}-labels-idx1-ubyte", labels),
            ):
                path = Path(tmp) / (stem + (".gz" if gz else ""))
                path.write_bytes(gzip.compress(data) if gz else data)
        try:
            ds = load_dataset("mnist", tmp)
        except ResnetsError as e:
            assert "\n" not in str(e)
            return
        for part in (ds.train, ds.test):  # what loads is consistent, never garbage
            assert (
                part.images.ndim == 4 and part.images.shape[1] == 1 and len(part.images) == len(part.labels)
            )
            assert min(part.images.shape[2:]) >= 1 and len(part.labels) >= 1
            assert int(part.labels.max()) < 10


SMALL_CIFAR_ROWS = 4


def _cifar_batch(rows: int = SMALL_CIFAR_ROWS) -> bytes:
    data = np.arange(rows * 3072, dtype=np.uint8).reshape(rows, 3072)
    return pickle.dumps({b"batch_label": b"x", b"labels": list(range(rows)), b"data": data}, protocol=2)


@st.composite
def mutated_cifar(draw: st.DrawFn) -> bytes:
    raw = bytearray(_cifar_batch())
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "random"]))
    if kind == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if kind == "splice":
        at = draw(st.integers(0, len(raw)))
        return bytes(raw[:at]) + draw(st.binary(max_size=16)) + bytes(raw[at:])
    return draw(st.binary(max_size=200))


@settings(FUZZ, max_examples=150)
@given(mutated_cifar())
def test_fuzzed_cifar_batches(content: bytes) -> None:
    with _written("data_batch_1", content) as path:
        try:
            images, labels = read_batch(path, CIFAR10, SMALL_CIFAR_ROWS)
        except ResnetsError as e:
            assert "\n" not in str(e)
            return
        assert images.shape == (SMALL_CIFAR_ROWS, 3, 32, 32) and images.dtype == np.uint8
        assert labels.shape == (SMALL_CIFAR_ROWS,) and labels.min() >= 0 and labels.max() < 10


# --- Image folders ----------------------------------------------------------------------------


def _png(mode: str, size: tuple[int, int] = (9, 7)) -> bytes:
    buf = io.BytesIO()
    if mode == "I;16":
        Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 300).save(
            buf, "PNG"
        )
    elif mode == "P":
        Image.new("RGB", size, (200, 10, 10)).convert("P", palette=Image.Palette.ADAPTIVE).save(buf, "PNG")
    elif mode == "F":
        Image.fromarray(
            np.linspace(0, 1, size[0] * size[1], dtype=np.float32).reshape(size[1], size[0])
        ).save(buf, "TIFF")
    else:
        Image.new(mode, size, 128 if mode in ("L", "1", "I") else (10, 200, 30, 128)[: len(mode)]).save(
            buf, "PNG"
        )
    return buf.getvalue()


GOOD = {
    "rgb.png": lambda: _png("RGB"), "grey.png": lambda: _png("L"), "rgba.png": lambda: _png("RGBA"),
    "palette.png": lambda: _png("P"), "sixteen-bit.png": lambda: _png("I;16"),
    "one-pixel.png": lambda: _png("RGB", (1, 1)),
    "grey-alpha.png": lambda: _png("LA"), "bilevel.png": lambda: _png("1"), "float.tiff": lambda: _png("F"),
}  # fmt: skip
BAD = {
    "huge.png": lambda: _png("1", (9000, 9000)),
    "truncated.png": lambda: _png("RGB", (64, 64))[:60],
    "text.png": lambda: b"this is not an image\n",
    "empty.jpg": lambda: b"",
}


def _folder(tmp: Path, files: dict[str, bytes]) -> Path:
    for cls in ("a", "b"):
        (tmp / cls).mkdir(parents=True)
        (tmp / cls / "base.png").write_bytes(_png("RGB"))
        (tmp / cls / "base2.png").write_bytes(_png("L"))
    for name, data in files.items():
        (tmp / "a" / name).write_bytes(data)
    return tmp


@pytest.mark.parametrize("name", sorted(GOOD))
def test_image_folder_reads_every_kind_of_image(name: str, tmp_path: Path) -> None:
    ds = load_dataset("imagefolder", _folder(tmp_path, {name: GOOD[name]()}), image_size=8)
    images = np.concatenate([ds.train.images.numpy(), ds.test.images.numpy()])
    assert images.shape[1:] == (3, 8, 8) and len(images) == 5


def test_sixteen_bit_and_transparent_pixels_get_their_values(tmp_path: Path) -> None:
    half = np.zeros((8, 8), dtype=np.uint16)
    half[:, 4:] = 65535  # black | white at 16 bits
    half[0, 0] = 32896  # mid-grey: 32896 / 65535 * 255 = 128.0
    Image.fromarray(half).save(tmp_path / "deep.png")
    deep = load_image(tmp_path / "deep.png", 8)
    assert deep.shape == (3, 8, 8) and (deep[:, :, 4:] == 255).all() and (deep[:, 1:, :4] == 0).all()
    assert (deep[:, 0, 0] == 128).all()  # scaled, not clipped to 255 or cut to the low byte

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :4, 3] = 255  # left opaque, right half-transparent (alpha 51 = 0.2)
    rgba[:, 4:, 3] = 51
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    alpha = load_image(tmp_path / "alpha.png", 8)
    assert (alpha[:, :, :4] == np.array([200, 100, 50])[:, None, None]).all()
    # Composited on black: 0.2 of each colour, not the colour at full strength.
    assert np.abs(alpha[:, :, 4:].astype(int) - np.array([40, 20, 10])[:, None, None]).max() <= 1

    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 250, 0  # a fully transparent bright pixel is black
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert (load_image(tmp_path / "la.png", 8) == 0).all()


@pytest.mark.parametrize("name", sorted(BAD))
def test_image_folder_names_the_bad_file(name: str, tmp_path: Path) -> None:
    with pytest.raises(ResnetsError) as info:
        load_dataset("imagefolder", _folder(tmp_path, {name: BAD[name]()}), image_size=8)
    assert name in str(info.value) and "\n" not in str(info.value)


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(sorted(GOOD)), st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_fuzzed_image_bytes(kind: str, at: int, junk: bytes) -> None:
    raw = GOOD[kind]()
    at %= len(raw)
    mutated = raw[:at] + junk + raw[at + len(junk) :]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ds = load_dataset(
                "imagefolder", _folder(Path(tmp), {"x" + kind[kind.index(".") :]: mutated}), image_size=8
            )
        except ResnetsError as e:
            assert "\n" not in str(e)
            return
        assert ds.train.images.shape[1:] == (3, 8, 8) and ds.train.images.dtype.is_floating_point is False
