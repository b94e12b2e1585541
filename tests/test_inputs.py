"""Your own images: the model's input size when none is given, and decoding that fits in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from resnets.data.dataset import STATS_CHUNK_VALUES, Dataset, ImageData, channel_stats
from resnets.data.files import IMAGENET_MEAN, IMAGENET_STD
from resnets.data.generate import write_jpeg_tree
from resnets.training import TrainConfig
from resnets.training.inputs import file_normalisation, input_defaults, normalisation


def test_an_imagenet_net_gets_its_own_input_size_and_a_cifar_net_keeps_32() -> None:
    filled, said = input_defaults("resnet50", "imagefolder", {})
    assert filled == {"image_size": 224, "loader": "stream"} and "RandomResizedCrop" in said
    assert input_defaults("resnet20", "imagefolder", {}) == ({}, None)  # the in-memory path at 32 px
    assert input_defaults("resnet50", "imagefolder", {"image_size": 128}) == ({"image_size": 128}, None)
    kept, _ = input_defaults("resnet18", "imagefolder", {"loader": "memory"})
    assert kept == {"loader": "memory", "image_size": 224}  # the user's loader stays
    assert input_defaults("resnet50", "cifar10", {}) == ({}, None)  # a fixed-size dataset decides itself


def test_channel_stats_in_value_chunks_equal_one_float64_pass() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 224, 224), generator=g, dtype=torch.uint8)
    assert images.numel() > 2 * STATS_CHUNK_VALUES  # several chunks of a few images each
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3)).tolist(), abs=1e-9)


@pytest.mark.slow
def test_a_small_folder_trains_an_imagenet_net_at_224_not_32(tmp_path: Path) -> None:
    pets = write_jpeg_tree(tmp_path / "pets", per_class=4, classes=2, seed=0, test_per_class=2)
    out = tmp_path / "run"
    proc = run_cli("train", "--model", "resnet18", "--dataset", "imagefolder", "--data-dir", str(pets),
                   "--iterations", "1", "--batch-size", "2", "--workers", "0", "--precision", "fp32",
                   "--quiet", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "resnet18 takes 224-px images" in proc.stdout + proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["dataset_options"] == {"image_size": 224, "loader": "stream"}
    assert config["resolved"]["loader"]["kind"] == "stream" and config["resolved"]["image_shape"] == [
        3,
        224,
        224,
    ]


def _imagenet_like(path: Path, classes: int = 1000) -> Path:
    """The keys and shapes that tell a torchvision/timm ImageNet classifier: a 7x7 RGB stem, 1,000 classes."""
    from safetensors.torch import save_file

    state = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3),
             "fc.weight": torch.zeros(classes, 512), "fc.bias": torch.zeros(classes)}  # fmt: skip
    save_file(state, str(path))
    return path


def _folder_data(channels: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, channels, 8, 8), generator=g, dtype=torch.uint8)
    split = ImageData(images, torch.tensor([0, 1, 0, 1, 0, 1]))
    return Dataset("imagefolder", split, split, ["a", "b"])


def test_a_folder_fine_tuned_from_imagenet_weights_is_normalised_as_they_were(tmp_path: Path) -> None:
    weights = _imagenet_like(tmp_path / "r18.safetensors")
    assert file_normalisation(str(weights)) == (IMAGENET_MEAN, IMAGENET_STD, "ImageNet's")
    assert file_normalisation(str(_imagenet_like(tmp_path / "r18-pets.safetensors", classes=37))) is None
    data = _folder_data()
    cfg = TrainConfig(model="resnet18", dataset="imagefolder", init_from=str(weights))
    normalised, origin, said = normalisation(cfg, data, None)
    assert origin == "pretrained" and "ImageNet's mean (0.485, 0.456, 0.406)" in said
    assert normalised.mean == IMAGENET_MEAN and normalised.std == IMAGENET_STD
    assert data.mean != IMAGENET_MEAN  # the loaded (perhaps cached) dataset is not changed
    # Without weights, or on another dataset, the data's own statistics, or ImageNet's when streamed.
    assert normalisation(TrainConfig(dataset="imagefolder"), data, None)[1:] == ("data", None)
    cifar = TrainConfig(dataset="cifar10", init_from=str(weights))
    assert normalisation(cifar, data, None)[0].mean == data.mean
    # A resumed run keeps what it began with, without reading its --init-from file again.
    saved = {"normalisation_from": "pretrained", "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    gone = TrainConfig(model="resnet18", dataset="imagefolder", init_from=str(tmp_path / "deleted.pth"))
    resumed, origin, said = normalisation(gone, data, saved)
    assert resumed.mean == (0.1, 0.2, 0.3) and origin == "pretrained" and said is None
    older = normalisation(cfg, data, {"mean": list(data.mean), "std": list(data.std)})  # before the record
    assert older[0].mean == data.mean and older[1] == "data"


@pytest.mark.slow
def test_fine_tuning_imagenet_weights_records_where_the_statistics_came_from(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from resnets import create_model

    pets = write_jpeg_tree(tmp_path / "pets", per_class=4, classes=2, seed=0, test_per_class=2)
    weights = tmp_path / "resnet18.safetensors"
    save_file(create_model("resnet18").state_dict(), str(weights))  # torchvision's layout, 1,000 classes
    out = tmp_path / "run"
    proc = run_cli("train", "--model", "resnet18", "--dataset", "imagefolder", "--data-dir", str(pets),
                   "--image-size", "32", "--loader", "memory", "--init-from", str(weights),
                   "--iterations", "1", "--batch-size", "4", "--precision", "fp32", "--quiet",
                   "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "normalising by ImageNet's mean" in proc.stderr
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["normalisation_from"] == "pretrained"
    assert resolved["mean"] == list(IMAGENET_MEAN) and resolved["std"] == list(IMAGENET_STD)
