"""Record torchvision's ResNet state_dict keys and shapes as a test fixture, and check ours.

Run once in an environment that has torchvision (it is not a dependency of resnets):
    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    PYTHONPATH=src /tmp/tv/bin/python scripts/make_torchvision_fixture.py
It loads each torchvision model's weights into ours with strict=True, compares the outputs,
and writes tests/fixtures/torchvision_state_dicts.json.
"""

import json
from pathlib import Path

import torch
import torchvision

import resnets

NAMES = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d",
    "resnext101_64x4d",
]  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    fixture = {"torchvision": torchvision.__version__, "torch": torch.__version__, "models": {}}
    x = torch.randn(2, 3, 224, 224)
    for name in NAMES:
        theirs = getattr(torchvision.models, name)(weights=None).eval()
        ours = resnets.create_model(name).eval()
        state = theirs.state_dict()
        ours.load_state_dict(state, strict=True)
        with torch.no_grad():
            diff = (theirs(x) - ours(x)).abs().max().item()
        print(f"{name:20s} {len(state):4d} tensors  max |output difference| {diff:.2e}")
        assert diff < 1e-4, name
        fixture["models"][name] = [[k, list(v.shape)] for k, v in state.items()]
    check_timm(x)
    out = Path(__file__).resolve().parents[1] / "tests/fixtures/torchvision_state_dicts.json"
    out.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


def check_timm(x: torch.Tensor) -> None:
    """timm's plain ResNets share torchvision's layout: load them strictly too (if timm is here)."""
    try:
        import timm
    except ImportError:
        print("timm not installed: skipping its check (pip install timm)")
        return
    for name in NAMES[:5]:
        theirs = timm.create_model(name, pretrained=False).eval()
        ours = resnets.create_model(name).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        with torch.no_grad():
            diff = (theirs(x) - ours(x)).abs().max().item()
        print(f"timm {timm.__version__} {name:10s} strict load ok, max |output difference| {diff:.2e}")
        assert diff < 1e-4, name


if __name__ == "__main__":
    main()
