"""Published CIFAR weights (akamaster, chenyaofo layouts) give their publishers' logits, or are refused.

The foreign models are written here from their layouts' descriptions, trained briefly on the
built-in digits so that weights and BN statistics are far from their initial values, saved as
their authors save them, and compared with our models after loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_clean_error, run_cli
from safetensors.torch import load_file
from torch import nn

from resnets import create_model
from resnets.data import TensorLoader, load_dataset
from resnets.errors import ResnetsError
from resnets.models.interop import load_pretrained, read_state_dict
from resnets.models.published import detect_layout

DIGITS = load_dataset("digits")


def _batches(split, n: int = 64):
    return TensorLoader(split, n, DIGITS.mean, DIGITS.std)


class TheirBlock(nn.Module):
    """A CIFAR basic block as both publishers write it; ``pad`` and ``project`` pick the shortcut."""

    def __init__(self, cin: int, planes: int, stride: int, style: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes = stride != 1 or cin != planes
        self.pad = planes // 4 if changes and style == "akamaster" else 0
        if changes and style == "chenyaofo":
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.downsample is not None:
            shortcut = self.downsample(x)
        elif self.pad:  # option A, the new zero channels on both sides of the old ones
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            shortcut = x
        return F.relu(out + shortcut)


class TheirResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR in a publisher's layout: 'akamaster' (linear) or 'chenyaofo' (fc)."""

    def __init__(self, n: int, style: str, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate((16, 32, 64), 1):
            blocks = [TheirBlock(cin if b == 0 else planes, planes, 2 if i > 1 and b == 0 else 1, style)
                      for b in range(n)]  # fmt: skip
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = planes
        head = nn.Linear(64, num_classes)
        setattr(self, "linear" if style == "akamaster" else "fc", head)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(F.avg_pool2d(x, x.shape[-1]).flatten(1))

    def their_state_dict(self, style: str) -> dict:
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}
        if style == "akamaster":  # saved from DataParallel by torch < 0.4.1, inside a dict
            state = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
            return {"state_dict": state, "best_prec1": 91.7}
        return state


def _trained(depth: int, style: str, num_classes: int = 10) -> TheirResNet:
    torch.manual_seed(depth)
    net = TheirResNet((depth - 2) // 6, style, num_classes)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for step, (x, y) in enumerate(TensorLoader(DIGITS.train, 64, DIGITS.mean, DIGITS.std, train=True)):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if step == 40:
            break
    # Exact BN statistics of the trained weights (a cumulative average), as a finished run has.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for x, _ in _batches(DIGITS.train, 256):
            net(x)
    return net.eval()


def _logits(model: nn.Module, split=DIGITS.test) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.eval()(x) for x, _ in _batches(split)])


@pytest.mark.slow
@pytest.mark.parametrize("depth", [20, 56])
def test_akamaster_weights_give_their_logits_in_our_default_model(depth: int, tmp_path: Path) -> None:
    theirs = _trained(depth, "akamaster")
    path = tmp_path / f"resnet{depth}-12fc3f.th"
    torch.save(theirs.their_state_dict("akamaster"), path)
    assert detect_layout(read_state_dict(path)).name == "akamaster"

    ours = create_model(f"resnet{depth}", num_classes=10, in_channels=1)  # option A, padded at the end
    assert load_pretrained(ours, path) == []
    want = _logits(theirs)
    torch.testing.assert_close(_logits(ours), want, atol=1e-5, rtol=1e-5)

    # The same tensors mapped by name alone, as people do by hand, give another network.
    naive = create_model(f"resnet{depth}", num_classes=10, in_channels=1)
    state = {k.removeprefix("module.").replace("linear.", "fc."): v
             for k, v in torch.load(path, weights_only=True)["state_dict"].items()}  # fmt: skip
    naive.load_state_dict(state, strict=False)
    assert (_logits(naive) - want).abs().max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "classes"), [(20, 10), (32, 100)])
def test_chenyaofo_weights_give_their_logits_with_option_b(depth: int, classes: int, tmp_path: Path) -> None:
    theirs = _trained(depth, "chenyaofo", classes)
    path = tmp_path / f"cifar{classes}_resnet{depth}.pt"
    torch.save(theirs.their_state_dict("chenyaofo"), path)
    layout = detect_layout(read_state_dict(path))
    assert (layout.name, layout.shortcut) == ("chenyaofo", "B")
    assert layout.mean == ((0.4914, 0.4822, 0.4465) if classes == 10 else (0.5070, 0.4865, 0.4409))

    ours = create_model(f"resnet{depth}", num_classes=classes, in_channels=1, shortcut="B")
    assert load_pretrained(ours, path) == []
    torch.testing.assert_close(_logits(ours), _logits(theirs), atol=1e-5, rtol=1e-5)


def test_a_layout_with_other_shortcuts_is_refused(tmp_path: Path) -> None:
    aka, chen = tmp_path / "aka.th", tmp_path / "chen.pt"
    torch.save(TheirResNet(3, "akamaster").their_state_dict("akamaster"), aka)
    torch.save(TheirResNet(3, "chenyaofo").their_state_dict("chenyaofo"), chen)
    with pytest.raises(ResnetsError, match=r"option-B shortcuts \(chenyaofo layout\).*shortcut='B'"):
        load_pretrained(create_model("resnet20", num_classes=10, in_channels=1), chen)
    with pytest.raises(ResnetsError, match=r"option-A shortcuts \(akamaster layout\).*shortcut='A'"):
        load_pretrained(create_model("resnet20", num_classes=10, in_channels=1, shortcut="B"), aka)
    ours_a = tmp_path / "ours.pt"
    torch.save(create_model("resnet20", num_classes=10, in_channels=1).state_dict(), ours_a)
    with pytest.raises(ResnetsError, match=r"option-A shortcuts \(torchvision layout\).*--shortcut A"):
        load_pretrained(create_model("resnet20", num_classes=10, in_channels=1, shortcut="C"), ours_a)


@pytest.mark.slow
def test_eval_and_init_from_take_a_published_file(tmp_path: Path) -> None:
    theirs = _trained(20, "akamaster")
    path = tmp_path / "resnet20.th"
    torch.save(theirs.their_state_dict("akamaster"), path)
    labels = torch.cat([y for _, y in _batches(DIGITS.test)])
    their_error = int((_logits(theirs).argmax(1) != labels).sum()) / len(labels)
    assert their_error < 0.5  # a model that learnt: the comparison means something

    proc = run_cli("eval", "--model", "resnet20", "--weights", str(path), "--dataset", "digits",
                   "--precision", "fp32", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["layout"], result["shortcut"]) == ("akamaster", "A")
    assert result["error"] == pytest.approx(their_error, abs=1e-12)
    assert result["mean"] == pytest.approx(list(DIGITS.mean))  # 3-channel publisher stats don't apply

    proc = run_cli("eval", "--model", "resnet20", "--weights", str(path), "--dataset", "digits",
                   "--shortcut", "B")  # fmt: skip
    assert_clean_error(proc, "option-A shortcuts", "shortcut='A'")
    assert_clean_error(run_cli("eval", "--weights", str(path), "--dataset", "digits"), "needs --model")

    run = tmp_path / "run"
    proc = run_cli("train", "--model", "resnet20", "--dataset", "digits", "--init-from", str(path),
                   "--iterations", "1", "--lr", "1e-9", "--quiet", "--out", str(run))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    loaded = create_model("resnet20", num_classes=10, in_channels=1)
    load_pretrained(loaded, path)
    trained = load_file(run / "model.safetensors")
    for key in ("fc.weight", "layer3.2.conv2.weight", "layer2.0.conv1.weight"):  # permuted on load
        torch.testing.assert_close(trained[key], loaded.state_dict()[key], atol=1e-6, rtol=0)
