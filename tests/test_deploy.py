"""Export (ONNX, pt2, TorchScript) with BN folded, and predict on odd images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_cli
from PIL import Image

from resnets import create_model
from resnets.data import TensorLoader, load_dataset
from resnets.deploy import fold_batchnorm
from resnets.deploy.export import count_batchnorms
from resnets.training import TrainConfig, train
from resnets.training.runs import load_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "run"
    train(TrainConfig(model="resnet20", dataset="digits", iterations=40, batch_size=64, schedule="onecycle",
                      out=str(out)), progress=False)  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "resnet50"])
def test_batchnorm_folding_is_exact(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    with torch.no_grad():  # give BN non-trivial statistics first
        model.train()(torch.randn(8, 3, 64, 64))
    model.eval()
    folded = fold_batchnorm(model)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert count_batchnorms(folded) < count_batchnorms(model)


def _test_images(run: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits test images, normalised as the run was trained, and their labels."""
    config = json.loads((run / "config.json").read_text())["resolved"]
    data = load_dataset("digits")
    return next(iter(TensorLoader(data.test, n, config["mean"], config["std"])))


def _run_logits(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """The exported file run by its own runtime, not by resnets."""
    with torch.no_grad():
        if fmt == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        if fmt == "pt2":
            return torch.export.load(str(path)).module()(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path))(x)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript"])
def test_export_round_trip(digits_run: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"model.{fmt}"
    proc = run_cli("export", "--run", str(digits_run), "--format", fmt, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "19 BatchNorms folded" in proc.stdout and "digits test images" in proc.stdout
    model = load_run(digits_run).model
    images, labels = _test_images(digits_run, 64)
    with torch.no_grad():
        want = model(images)
    for batch in (1, 5, 64):  # the batch dimension is dynamic
        got = _run_logits(out, fmt, images[:batch])
        assert got.shape == (batch, 10)
        torch.testing.assert_close(got, want[:batch], atol=1e-4, rtol=1e-4)
    assert (want.argmax(1) == labels).float().mean() > 0.5  # a trained model: the check means something


def _odd_images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    images = {
        "grey.png": Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8), "L"),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (5, 7, 4), dtype=np.uint8), "RGBA"),
        "tiny.jpg": Image.new("RGB", (1, 1), (255, 0, 0)),
        "deep.png": Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)),
        "palette.gif": Image.new("P", (9, 9)),
    }
    paths = []
    for name, im in images.items():
        im.save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.mark.slow
def test_predict_on_odd_images(digits_run: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    Image.fromarray((digits.images[0] * 15.9).astype(np.uint8), "L").resize((64, 64)).save(
        tmp_path / "zero.png"
    )
    paths = [tmp_path / "zero.png", *_odd_images(tmp_path)]
    proc = run_cli("predict", "--run", str(digits_run), *map(str, paths), "--top-k", "3", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all(t["class"] in [str(d) for d in range(10)] for t in r["top"])
    assert results[0]["top"][0]["class"] == "0"  # a real digit zero, upscaled


@pytest.mark.slow
def test_predict_and_export_errors(digits_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert_clean_error(
        run_cli("predict", "--run", str(digits_run), str(bad)), "bad.png: not a readable image"
    )
    assert_clean_error(run_cli("predict", "--run", str(digits_run), str(tmp_path / "none.png")), "not found")
    assert_clean_error(run_cli("predict", "--run", str(tmp_path / "norun"), str(bad)), "does not exist")
    assert_clean_error(run_cli("export", "--run", str(digits_run), "--format", "tflite", "--output", "x"),
                       "invalid choice")  # fmt: skip
