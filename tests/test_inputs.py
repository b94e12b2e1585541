"""Your own images: the model's input size when none is given, and decoding that fits in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from resnets.data.dataset import STATS_CHUNK_VALUES, channel_stats
from resnets.data.generate import write_jpeg_tree
from resnets.training.inputs import input_defaults


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
