"""The model zoo: sizes, depths, torchvision layout, forward/backward of every network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import resnets
from resnets.errors import ResnetsError, UnknownNameError
from resnets.models import (
    Network,
    PadShortcut,
    ResidualUnit,
    count_depth,
    count_flops,
    count_params,
    create_model,
    get_spec,
    list_models,
    summarize,
    twin_of,
)

ALL = list_models()
FIXTURE = json.loads((Path(__file__).parent / "fixtures/torchvision_state_dicts.json").read_text())


def meta_model(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def test_every_paper_name_is_registered() -> None:
    depths = (20, 32, 44, 56, 110, 1202, 18, 34, 50, 101, 152)
    expected = [f"{k}{d}" for k in ("resnet", "plain") for d in depths]
    expected += [f"preact_{k}{d}" for k in ("resnet", "plain") for d in (110, 164, 1001)]
    assert set(expected) <= set(ALL)
    assert list_models("plain*") == [n for n in ALL if n.startswith("plain")]
    assert list_models("resnet?0") == ["resnet20", "resnet50"]


def test_every_name_is_defined_where_grep_finds_it() -> None:
    # A residual net is a builder function of its name; its plain twin is declared beside it.
    source = "\n".join(p.read_text() for p in Path(resnets.models.__file__).parent.glob("*.py"))
    for name in ALL:
        spec = get_spec(name)
        assert (f"def {name}(" if spec.residual else f'twin="{name}"') in source, name


@pytest.mark.parametrize(
    ("name", "options"),
    [("resnet20", {}), ("plain56", {}), ("resnet50", {}), ("preact_resnet164", {}), ("fastresnet", {}),
     ("resnet20", {"unit": "fixup"}), ("plain20", {"unit": "highway"}), ("plain20", {"long_skip": True})],
)  # fmt: skip
def test_every_network_and_block_keeps_the_contract(name: str, options: dict) -> None:
    model = meta_model(name, **options)
    assert isinstance(model, Network) and model.checkpoint_segments == 0 and model.min_input_size >= 1
    for block in model.blocks():
        assert isinstance(block, ResidualUnit)
        assert block.residual in (True, False) and isinstance(block.drop_path, nn.Module)
        assert block.branch_end() in set(block.modules())
    # Only the fast net's whitening stem wants training images before the first step.
    assert model.init_images == (5000 if name == "fastresnet" else 0)


# He et al. 2015, Table 6, rounded as the paper prints them (millions).
CIFAR_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
IMAGENET_PARAMS = {
    18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808,
}  # fmt: skip


@pytest.mark.parametrize("depth", CIFAR_PARAMS)
def test_cifar_param_counts_match_paper_and_plain_twin(depth: int) -> None:
    n = count_params(meta_model(f"resnet{depth}"))
    digits = 1 if depth >= 110 else 2
    assert round(n / 1e6, digits) == CIFAR_PARAMS[depth]
    # Option A shortcuts have no parameters, so the plain twin has exactly the same count.
    assert count_params(meta_model(f"plain{depth}")) == n


@pytest.mark.parametrize("depth", IMAGENET_PARAMS)
def test_imagenet_param_counts_exact(depth: int) -> None:
    model = meta_model(f"resnet{depth}")
    assert count_params(model) == IMAGENET_PARAMS[depth]
    # The plain twin lacks only the projection shortcuts; with option A nothing differs.
    projections = sum(count_params(b.downsample) for b in model.blocks() if b.downsample is not None)
    assert count_params(meta_model(f"plain{depth}")) == IMAGENET_PARAMS[depth] - projections
    assert count_params(meta_model(f"resnet{depth}", shortcut="A")) == count_params(
        meta_model(f"plain{depth}")
    )


def test_preact_param_counts_match_paper() -> None:
    # He et al. 2016, Table 2-3: ResNet-110 1.7M, ResNet-164 1.7M, ResNet-1001 10.2M.
    assert round(count_params(meta_model("preact_resnet110")) / 1e6, 1) == 1.7
    assert round(count_params(meta_model("preact_resnet164")) / 1e6, 1) == 1.7
    # The paper's 10.2M appears to leave out BN; with BN the standard layout has 10.33M.
    assert count_params(meta_model("preact_resnet1001")) == pytest.approx(10.2e6, rel=0.015)


@pytest.mark.parametrize("name", ALL)
def test_depth_as_the_paper_counts_it(name: str) -> None:
    spec = get_spec(name)
    found = re.search(r"(\d+)", name.split("_")[-1] if "preact" in name else name)
    if found:  # the name carries the paper's depth (fastresnet's does not: 8 weighted layers)
        assert spec.depth == int(found[1])
    assert count_depth(meta_model(name)) == spec.depth


@pytest.mark.parametrize("name", sorted(FIXTURE["models"]))
def test_state_dict_layout_identical_to_torchvision(name: str) -> None:
    theirs = [(k, tuple(shape)) for k, shape in FIXTURE["models"][name]]
    ours = [(k, tuple(v.shape)) for k, v in meta_model(name).state_dict().items()]
    assert ours == theirs


def test_torchvision_format_checkpoint_loads_strict(tmp_path: Path) -> None:
    # A checkpoint laid out exactly as the fixture's keys and shapes loads with strict=True.
    state = {
        k: torch.randn(shape) if shape else torch.tensor(0) for k, shape in FIXTURE["models"]["resnet18"]
    }
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = create_model("resnet18")
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert torch.equal(model.fc.weight, state["fc.weight"])


def _heavy(name: str) -> bool:
    spec = get_spec(name)
    return spec.input_size[1] > 32 or spec.depth > 200


def _batch(name: str, **kw) -> torch.Tensor:
    c, h, w = get_spec(name).input_size
    return torch.randn(2, kw.get("in_channels", c), h, w)


# The ImageNet-size nets and the 1,000-layer ones take seconds each: the fast tier keeps the rest.
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if _heavy(n) else n for n in ALL],
)
def test_forward_at_input_size(name: str) -> None:
    torch.manual_seed(0)
    # Train mode: BN normalises with batch statistics, as it does in training. (In eval mode
    # an untrained very deep net's residual stream roughly doubles per block: resnet1202
    # overflows, which is a fact about untrained BN statistics, not a bug.)
    model = create_model(name, num_classes=7).train()
    with torch.no_grad():
        out = model(_batch(name))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name", ["resnet20", "plain20", "resnet18", "plain50", "preact_resnet164", "resnet1202"]
)
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    size = 64 if get_spec(name).family == "imagenet" else 32  # small ImageNet input keeps it fast
    x = torch.randn(2, 3, size, size)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 3]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert model.conv1.weight.grad.abs().sum() > 0


def test_shortcut_options_place_projections_as_the_paper_says() -> None:
    def projections(model: nn.Module) -> int:
        return sum(isinstance(b.downsample, nn.Sequential) for b in model.blocks())

    def pads(model: nn.Module) -> int:
        return sum(isinstance(b.downsample, PadShortcut) for b in model.blocks())

    a, b, c = (meta_model("resnet20", shortcut=s) for s in "ABC")
    assert (projections(a), pads(a)) == (0, 2)  # two stage transitions, parameter-free
    assert (projections(b), pads(b)) == (2, 0)  # projection only where the shape changes
    assert projections(c) == 9  # every block
    plain = meta_model("plain20")
    assert all(blk.downsample is None and not blk.residual for blk in plain.blocks())


def test_option_a_subsamples_and_zero_pads() -> None:
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
    y = PadShortcut(4, 8, stride=2)(x)
    assert y.shape == (2, 8, 2, 2)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2])
    assert not y[:, 4:].any()


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet164"])
def test_zero_init_residual_makes_blocks_identity(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, zero_init_residual=True).eval()
    for blk in model.blocks():
        if blk.downsample is not None:
            continue
        c = blk.conv1.in_channels
        x = torch.randn(2, c, 8, 8)
        expected = x if "preact" in name else torch.relu(x)
        with torch.no_grad():
            torch.testing.assert_close(blk(x), expected)


def test_plain_twin_differs_only_by_shortcuts() -> None:
    torch.manual_seed(0)
    res = create_model("resnet20").eval()
    plain = create_model("plain20").eval()
    plain.load_state_dict(res.state_dict())  # identical layers, identical keys
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))
        for blk in res.blocks():
            blk.residual = False
        torch.testing.assert_close(res(x), plain(x))
    assert twin_of("resnet20") == "plain20" and twin_of("plain152") == "resnet152"
    assert twin_of("preact_resnet1001") == "preact_plain1001"


def test_he_initialisation() -> None:
    torch.manual_seed(0)
    model = create_model("resnet110")
    w = model.layer3[5].conv1.weight  # 64x64x3x3
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert w.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    assert w.mean().abs().item() < 0.01


def test_width_groups_and_in_channels() -> None:
    wide = meta_model("resnet20", width=4)  # WRN-style: 64/128/256 channels
    assert wide.fc.in_features == 256
    assert count_params(meta_model("resnet50", width=2.0)) == count_params(meta_model("wide_resnet50_2"))
    assert meta_model("resnext50_32x4d").layer1[0].conv2.groups == 32
    mnist = create_model("resnet20", in_channels=1).eval()
    with torch.no_grad():
        assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_flops_match_paper() -> None:
    # He et al. 2015, Table 1 (multiply-adds). torchvision's layout puts the bottleneck
    # stride on the 3x3 conv ("v1.5"), which costs ~5-8% more for 50/101/152.
    paper = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}
    for depth, macs in paper.items():
        ours = summarize(f"resnet{depth}").macs
        assert ours == pytest.approx(macs, rel=0.03 if depth < 50 else 0.08), depth


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet20", {}),
        ("preact_resnet110", {}),
        ("fastresnet", {}),
        ("resnet20", {"norm": "none"}),
        ("plain20", {"init": "orthogonal"}),
    ],
)
def test_the_table_counts_what_a_real_forward_pass_counts(name: str, options: dict) -> None:
    # The table sizes nets on 'meta' with initialisers and normalisations skipped as shape-only.
    row, real = summarize(name, **options), create_model(name, **options)
    assert row.flops == count_flops(real, row.input_size) > 0
    assert row.params == count_params(real)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shortcut": "D"}, "shortcut must be one of"),
        ({"groups": 32}, "bottleneck"),
        ({"width": -1}, "width"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 0.5}, "unknown option"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    name = "resnet18" if "groups" in options else "resnet20"
    with pytest.raises(ResnetsError, match=message):
        create_model(name, **options)


def test_plain_nets_refuse_shortcut_options() -> None:
    with pytest.raises(ResnetsError, match="no shortcuts"):
        create_model("plain20", shortcut="B")
    with pytest.raises(ResnetsError, match="needs shortcuts"):
        create_model("plain20", zero_init_residual=True)
    with pytest.raises(ResnetsError, match="num_classes"):
        create_model("resnet20", num_classes=0)


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        resnets.create_model("resnet21")
    msg = str(info.value)
    assert "unknown model 'resnet21'" in msg and "resnet20" in msg
    assert "\n" not in msg
    assert isinstance(info.value, KeyError)  # also catchable as a lookup failure
