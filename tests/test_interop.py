"""Weights in from torchvision/timm-layout checkpoints: loaded, fine-tuned from, or refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import Plant, assert_clean_error, run_cli
from safetensors.torch import save_file

from resnets import create_model
from resnets.errors import ResnetsError
from resnets.models.interop import load_pretrained, read_state_dict

FIXTURE = json.loads((Path(__file__).parent / "fixtures/torchvision_state_dicts.json").read_text())


def torchvision_state(name: str) -> dict[str, torch.Tensor]:
    """A state_dict with exactly torchvision's keys and shapes, random values."""
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(shape, generator=g) if shape else torch.tensor(0, dtype=torch.long)
        for k, shape in FIXTURE["models"][name]
    }


def test_loads_wrapped_prefixed_and_safetensors_checkpoints(tmp_path: Path) -> None:
    state = torchvision_state("resnet18")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ddp.pth")
    save_file(state, tmp_path / "w.safetensors")
    for path in (tmp_path / "ddp.pth", tmp_path / "w.safetensors"):
        model = create_model("resnet18")
        assert load_pretrained(model, path) == []
        assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_other_class_count_reinitialises_the_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(torchvision_state("resnet50"), tmp_path / "r50.pth")
    model = create_model("resnet50", num_classes=7)
    fc_before = model.fc.weight.clone()
    assert load_pretrained(model, tmp_path / "r50.pth") == ["fc.bias", "fc.weight"]
    assert torch.equal(model.fc.weight, fc_before)
    assert "re-initialised for fine-tuning" in capsys.readouterr().err


def test_wrong_architecture_lists_the_first_differences(tmp_path: Path) -> None:
    torch.save(torchvision_state("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(
        ResnetsError, match=r"does not fit the model \(\d+ differences; first: .*layer"
    ) as info:
        load_pretrained(create_model("resnet18"), tmp_path / "r50.pth")
    assert "\n" not in str(info.value)


def test_malicious_weights_file_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": Plant(str(marker))}))
    with pytest.raises(ResnetsError, match="not a plain weights file"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.slow
def test_train_init_from_fine_tunes_and_refuses_a_wrong_file(tmp_path: Path) -> None:
    torch.save(torchvision_state("resnet18"), tmp_path / "r18.pth")
    common = ["train", "--model", "resnet18", "--dataset", "synthetic", "--iterations", "3",
              "--batch-size", "16", "--quiet"]  # fmt: skip
    proc = run_cli(*common, "--init-from", str(tmp_path / "r18.pth"), "--out", str(tmp_path / "ft"))
    assert proc.returncode == 0, proc.stderr
    assert "re-initialised for fine-tuning" in proc.stderr
    torch.save(torchvision_state("resnet34"), tmp_path / "r34.pth")
    bad = run_cli(*common, "--init-from", str(tmp_path / "r34.pth"), "--out", str(tmp_path / "bad"))
    assert_clean_error(bad, "does not fit the model", "unexpected layer")
