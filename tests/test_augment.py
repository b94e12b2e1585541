"""RandAugment, TrivialAugment, mixup and CutMix: per image, on tensors, seeded per batch, resumable."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from resnets.cli import main
from resnets.data import ImageData, StreamLoader, TensorLoader, load_dataset
from resnets.data.augment import (
    OPS,
    RANGES,
    BatchAugment,
    apply_op,
    apply_policy,
    batch_draws,
    mix_batch,
)
from resnets.data.generate import write_jpeg_tree
from resnets.errors import ResnetsError
from resnets.training import TrainConfig, train
from resnets.training.checkpoint import WEIGHTS_FILE
from resnets.training.precision import grad_scaler
from resnets.training.resume import resume_config
from resnets.training.step import forward_backward

CPU = torch.device("cpu")


def _images(n: int = 16, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def _floats(n: int, seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------- policies


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_a_policy_changes_images_but_not_their_shape_dtype_or_the_input(policy: str) -> None:
    for c in (3, 1):  # RGB and the grey digits
        x = _images(c=c)
        before = x.clone()
        out = apply_policy(x, policy, batch_draws(0, 0, 0))
        assert out.shape == x.shape and out.dtype == torch.uint8
        assert torch.equal(x, before)  # a new batch: the dataset's images are never written
        changed = (out != x).flatten(1).any(1)
        assert changed.sum() >= len(x) // 2, changed
        again = apply_policy(x, policy, batch_draws(0, 0, 0))
        assert torch.equal(out, again)  # a pure function of the draws
        assert not torch.equal(out, apply_policy(x, policy, batch_draws(0, 0, 1)))


def test_every_operation_at_magnitude_zero_leaves_the_image_alone() -> None:
    x = _images(4)
    zero = torch.zeros(len(x))
    for policy, ranges in RANGES.items():
        for name in OPS:
            if name in ("identity", "autocontrast", "equalize"):  # no magnitude
                continue
            assert torch.equal(apply_op(name, x, zero, ranges), x), (policy, name)


def test_translation_and_rotation_move_whole_pixels_and_fill_black() -> None:
    x = _images(2, size=12)
    ranges = RANGES["trivialaugment"]  # 32 pixels, 135 degrees at full magnitude
    right = apply_op("translate_x", x, torch.full((2,), 3 / 32), ranges)
    assert torch.equal(right[..., 3:], x[..., :-3]) and not right[..., :3].any()
    up = apply_op("translate_y", x, torch.full((2,), -2 / 32), ranges)
    assert torch.equal(up[..., :-2, :], x[..., 2:, :]) and not up[..., -2:, :].any()
    turned = apply_op("rotate", x, torch.full((2,), 90 / 135), ranges)
    assert any(torch.equal(turned, torch.rot90(x, k, dims=(2, 3))) for k in (1, -1))
    # One image, one amount: each image of a batch gets its own.
    both = apply_op("translate_x", x, torch.tensor([3 / 32, 0.0]), ranges)
    assert torch.equal(both[0], right[0]) and torch.equal(both[1], x[1])


def test_the_pixel_operations_agree_with_pillows_imageops() -> None:
    x = _images(3, size=20)
    x[1, :, :5] = 40  # a lump of one value: equalize's steps are not all equal
    ranges = RANGES["randaugment"]
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB") for img in x]

    def ours(name: str, amount: float = 0.0) -> list[np.ndarray]:
        out = apply_op(name, x, torch.full((len(x),), amount), ranges)
        return [img.permute(1, 2, 0).numpy() for img in out]

    for got, im in zip(ours("equalize"), pil, strict=True):
        assert np.array_equal(got, np.asarray(ImageOps.equalize(im)))
    for got, im in zip(ours("autocontrast"), pil, strict=True):
        assert np.array_equal(got, np.asarray(ImageOps.autocontrast(im)))
    for got, im in zip(ours("posterize", 0.75), pil, strict=True):  # 8 - 3 bits kept
        assert np.array_equal(got, np.asarray(ImageOps.posterize(im, 5)))
    for got, im in zip(ours("solarize", 0.5), pil, strict=True):  # threshold 128
        assert np.array_equal(got, np.asarray(ImageOps.solarize(im, 128)))


# ----------------------------------------------------------------------------------------- mixing


def _partner_rows(x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """The original row nearest each mixed one."""
    return torch.cdist(mixed.flatten(1), x.flatten(1)).argmin(1)


def test_mixup_with_a_vanishing_alpha_is_no_mixup() -> None:
    # lambda ~ Beta(alpha, alpha) goes to 0 or 1 as alpha -> 0: every image and its target whole, so
    # the batch is the same images and labels (possibly in another order) and so is its mean loss.
    x, y = _floats(8), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    linear = torch.nn.Linear(3 * 8 * 8, 10)
    for batch in range(12):
        mixed, targets = mix_batch(x, y, 10, batch_draws(0, 0, batch), mixup=1e-6)
        rows = _partner_rows(x, mixed)
        assert sorted(rows.tolist()) == list(range(8))  # a permutation of the batch
        assert torch.allclose(mixed, x[rows], atol=1e-5)
        assert torch.allclose(targets, F.one_hot(y[rows], 10).float(), atol=1e-5)
        mixed_loss = F.cross_entropy(linear(mixed.flatten(1)), targets)
        assert mixed_loss.item() == pytest.approx(F.cross_entropy(linear(x.flatten(1)), y).item(), rel=1e-5)


def test_mixup_mixes_images_and_targets_by_the_same_lambda() -> None:
    x, y = _floats(8), torch.arange(8)  # one class per image: a target names both images of a mix
    for batch in range(6):
        mixed, targets = mix_batch(x, y, 8, batch_draws(1, 2, batch), mixup=0.4)
        assert torch.allclose(targets.sum(1), torch.ones(8))
        for i in range(8):
            own = targets[i, i].item()
            others = [j for j in range(8) if j != i and targets[i, j] > 0]
            j = others[0] if others else i
            assert len(others) <= 1
            want = own * x[i] + (1 - own) * x[j] if others else x[i]
            assert torch.allclose(mixed[i], want, atol=1e-5)


def test_cutmix_box_area_matches_lambda() -> None:
    x, y = _floats(8, size=16), torch.arange(8)
    for batch in range(10):
        mixed, targets = mix_batch(x, y, 8, batch_draws(0, 1, batch), cutmix=1.0)
        boxes = set()
        for i in range(8):
            pasted = (mixed[i] != x[i]).any(0)  # (H, W): the pixels that came from the partner
            others = [j for j in range(8) if j != i and targets[i, j] > 0]
            if not others:  # paired with itself, or an empty box
                assert torch.equal(mixed[i], x[i]) or targets[i, i] == 1
                continue
            (j,) = others
            assert torch.equal(mixed[i][:, pasted], x[j][:, pasted])  # pasted whole, not blended
            assert pasted.float().mean().item() == pytest.approx(targets[i, j].item(), abs=1e-6)
            rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
            box = (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item())
            assert pasted.sum().item() == (box[1] - box[0] + 1) * (box[3] - box[2] + 1)  # a rectangle
            boxes.add(box)
        assert len(boxes) <= 1  # one box for the whole batch, as timm's batch mode cuts


def _whole_pixels(image: torch.Tensor, sources: torch.Tensor) -> bool:
    """Whether every pixel of ``image`` is the same pixel of one of ``sources`` (pasted, not blended)."""
    return bool(torch.stack([(image == s).all(0) for s in sources]).any(0).all())


def test_both_given_each_batch_takes_one_at_a_coin_flip() -> None:
    x, y = _floats(8, size=8), torch.arange(8)
    cut = 0
    for batch in range(200):
        mixed, targets = mix_batch(x, y, 8, batch_draws(0, 0, batch), mixup=1.0, cutmix=1.0)
        cut += all(_whole_pixels(mixed[i], x[targets[i] > 0]) for i in range(8))
    assert 70 <= cut <= 130  # 100 expected; a mixup batch blends, a CutMix one pastes


def test_soft_targets_train_with_label_smoothing_and_count_the_dominant_label() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x, y = _floats(6), torch.tensor([0, 1, 2, 3, 0, 1])
    scaler = grad_scaler("fp32", CPU)

    def run(targets: torch.Tensor, smoothing: float) -> tuple[float, int, torch.Tensor]:
        model.zero_grad()
        loss, wrong = forward_backward(model, x, targets, 2, smoothing, "fp32", scaler, CPU)
        return loss.item(), int(wrong), model[1].weight.grad.clone()

    hard = run(y, 0.1)
    soft = run(F.one_hot(y, 4).float(), 0.1)  # one-hot soft targets are the labels themselves
    assert soft[0] == pytest.approx(hard[0], rel=1e-6) and soft[1] == hard[1]
    assert torch.allclose(soft[2], hard[2], atol=1e-6)
    # Smoothing applies to the mix as timm's smoothed one-hot mix: (1 - e) * target + e / classes.
    mix = 0.7 * F.one_hot(y, 4).float() + 0.3 * F.one_hot(y.roll(1), 4).float()
    loss, wrong, _ = run(mix, 0.1)
    logits = model(x)
    want = -(((0.9 * mix + 0.1 / 4) * logits.log_softmax(1)).sum(1)).sum()
    assert loss == pytest.approx(want.item(), rel=1e-5)
    assert wrong == int((logits.argmax(1) != y).sum())  # y is each image's dominant label (0.7)


# ----------------------------------------------------------------------------------------- loaders


def test_the_same_seed_epoch_and_batch_give_the_same_batch_and_torch_rng_is_untouched() -> None:
    data = ImageData(_images(64, size=16), torch.arange(64) % 5)
    augment = BatchAugment(5, seed=3, policy="trivialaugment", mixup=0.2, cutmix=1.0)

    def loader(seed: int = 3) -> TensorLoader:
        aug = BatchAugment(5, seed=seed, policy="trivialaugment", mixup=0.2, cutmix=1.0)
        return TensorLoader(data, 8, (0.5,) * 3, (0.25,) * 3, train=True, crop_padding=2, flip=True,
                            seed=seed, augment=aug)  # fmt: skip

    state = torch.get_rng_state()
    whole = list(loader().epoch(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(y.shape == (8, 5) and x.dtype == torch.float32 for x, y in whole)
    for got, want in zip(loader().epoch(2, start=5), whole[5:], strict=True):  # resumed mid-epoch
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not torch.equal(next(loader(4).epoch(2))[0], whole[0][0])
    assert not torch.equal(next(loader().epoch(3))[0], whole[0][0])
    plain = TensorLoader(data, 8, (0.5,) * 3, (0.25,) * 3, train=False, augment=augment)
    assert plain.augment is None  # evaluation batches are never augmented


def test_streamed_batches_are_augmented_the_same_way_at_any_start(tmp_path: Path) -> None:
    tree = write_jpeg_tree(tmp_path / "jpegs", per_class=6, classes=2, test_per_class=1)
    data = load_dataset("imagefolder", tree, loader="stream")
    aug = BatchAugment(2, seed=1, policy="randaugment", mixup=0.5)

    def batches(start: int = 0, augment: BatchAugment | None = aug) -> list:
        loader = StreamLoader(data.train, 4, (0.5,) * 3, (0.25,) * 3, train=True, image_size=32, seed=1,
                              workers=0, augment=augment)  # fmt: skip
        return list(loader.epoch(1, start))

    whole, plain = batches(), batches(augment=None)
    assert len(whole) == 3 and whole[0][0].shape == (4, 3, 32, 32) and whole[0][1].shape == (4, 2)
    assert not torch.equal(whole[0][0], plain[0][0])
    for got, want in zip(batches(start=1), whole[1:], strict=True):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# ----------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("flags", "needle"),
    [(["--mixup", "-0.2"], "mixup must be a number >= 0"), (["--cutmix", "nan"], "cutmix must be a number"),
     (["--randaugment", "--trivialaugment"], "choose one")],
)  # fmt: skip
def test_nonsense_augmentation_is_one_line_and_exit_2(flags, needle, tmp_path: Path, capsys) -> None:
    assert main(["train", "--out", str(tmp_path / "run"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_switches_turn_off_and_a_resume_keeps_the_augmentation(tmp_path: Path, capsys) -> None:
    from resnets.cli import build_parser
    from resnets.commands.train import config_from_args

    args = build_parser().parse_args(["train", "--randaugment", "--no-randaugment", "--out", str(tmp_path)])
    assert config_from_args(args)[0].randaugment is False
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig(out=str(run), mixup=0.2, randaugment=True).to_json())
    assert resume_config({"out": str(run), "mixup": 0.2}).randaugment is True
    with pytest.raises(ResnetsError, match=r"--mixup 0\.4 differs from the run's 0\.2"):
        resume_config({"out": str(run), "mixup": 0.4})
    with pytest.raises(ResnetsError, match=r"--cutmix 1\.0 differs"):
        resume_config({"out": str(run), "cutmix": 1.0})
    with pytest.raises(ResnetsError, match="--trivialaugment True differs"):
        resume_config({"out": str(run), "trivialaugment": True})


@pytest.mark.slow
def test_a_resumed_run_with_every_augmentation_ends_with_the_same_weights(tmp_path: Path) -> None:
    # 8 steps an epoch: stopped at step 5 (mid-epoch), resumed to 12 (across an epoch boundary).
    def config(out: Path) -> TrainConfig:
        return TrainConfig(
            model="resnet20", dataset="digits", train_subset=256, batch_size=32, iterations=12, eval_every=4,
            precision="fp32", channels_last=False, compile=False, trivialaugment=True, mixup=0.4, cutmix=1.0,
            label_smoothing=0.1, out=str(out),
        )  # fmt: skip

    whole = train(config(tmp_path / "whole"), progress=False)
    half = train(config(tmp_path / "half"), progress=False, until=5)
    assert not half.finished
    resumed = train(config(tmp_path / "half"), resume=True, progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = dataclasses.replace(config(tmp_path / "plain"), trivialaugment=False, mixup=None, cutmix=None)
    c = train(plain, progress=False).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the augmentation was trained on
    for run in ("whole", "half"):
        assert (tmp_path / run / WEIGHTS_FILE).exists()
    rows = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 5, 8, 12] and all(math.isfinite(r["train_loss"]) for r in rows)
    resolved = json.loads((tmp_path / "whole" / "config.json").read_text())["resolved"]
    assert resolved["loader"]["augment"]["policy"]["name"] == "trivialaugment"
    assert resolved["loader"]["augment"]["mix"]["switch_prob"] == 0.5
