"""The fast CIFAR recipes' parts: the whitened residual net, its optimiser, evaluation and memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch import nn

from resnets import create_model, twin_of
from resnets.errors import ResnetsError
from resnets.models.fast import FastResNet, Whitening
from resnets.training import TrainConfig, train
from resnets.training.checkpoint import list_checkpoints
from resnets.training.evaluate import evaluate
from resnets.training.recipes import apply_recipe
from resnets.training.step import has_compiler, make_optimizer


def _correlated_images(n: int = 400) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated, like photographs."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, 8, 8, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return base * torch.tensor([1.0, 2.0, 0.5])[:, None, None] + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_whitening_decorrelates_patches_and_stays_frozen() -> None:
    images = _correlated_images()
    layer = Whitening(3)
    layer.fit(images)
    out = layer(images)[:, :12] - layer.bias[:12, None, None]  # one sign of each direction
    features = out.permute(0, 2, 3, 1).reshape(-1, 12).detach()
    covariance = features.T @ features / len(features)
    # Strong eigen-directions come out at unit variance and uncorrelated; the eps term damps the
    # near-empty ones below 1 instead of blowing up noise.
    assert torch.allclose(covariance[:6, :6], torch.eye(6), atol=0.05), covariance[:6, :6]
    off_diagonal = covariance - torch.diag(covariance.diag())
    assert off_diagonal.abs().max() < 0.05
    assert torch.equal(layer(images)[:, 12:] - layer.bias[12:, None, None], -out.detach())  # both signs
    assert not layer.weight.requires_grad and layer.bias.requires_grad


def test_fastresnet_has_identity_shortcuts_and_a_plain_twin_with_the_same_weights() -> None:
    torch.manual_seed(0)
    residual, plain = create_model("fastresnet"), create_model("fastplain")
    assert twin_of("fastresnet") == "fastplain"
    assert [n for n, _ in residual.named_parameters()] == [n for n, _ in plain.named_parameters()]
    plain.load_state_dict(residual.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert not torch.allclose(residual(x), plain(x))  # only the shortcuts differ
    group = residual.layers[0]
    h = torch.randn(2, 24, 32, 32)
    inner = group.act(group.bn1(group.pool(group.conv1(h))))
    assert torch.allclose(group(h), inner + group.act(group.bn2(group.conv2(inner))), atol=1e-6)
    half = create_model("fastresnet", width=0.5)
    assert [g.conv2.out_channels for g in half.layers] == [32, 128, 128]
    # Identity-initialised convs pass their first input channels through at the start.
    w = residual.layers[1].conv2.weight
    assert w[5, 5, 1, 1] == 1 and w[5, 5, 0, 0] == 0
    with pytest.raises(Exception, match="does not apply"):
        create_model("fastresnet", shortcut="B")


def test_norm_shifts_learn_faster_and_frozen_scales_are_left_out() -> None:
    model = create_model("fastresnet", width=0.25)
    cfg = TrainConfig(model="fastresnet", lr=0.5, weight_decay=1e-3, norm_bias_lr_scale=64.0)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    bn = model.layers[0].bn1
    assert id(bn.weight) not in by_id  # fixed unit scale: not optimised at all
    assert by_id[id(bn.bias)]["lr_scale"] == 64.0
    assert by_id[id(bn.bias)]["weight_decay"] == pytest.approx(1e-3 / 64)  # same decay per step
    assert by_id[id(model.fc.weight)]["lr_scale"] == 1.0
    assert id(model.whiten.weight) not in by_id


def test_translate_tta_averages_six_views() -> None:
    class Probe(nn.Module):  # logits that see where the image's mass sits
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(1).flatten(1)[:, :10] * 10

    class Loader(list):
        device = torch.device("cpu")

    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 10, (8,))
    model = Probe()

    def views(images: torch.Tensor) -> torch.Tensor:
        return (model(images) + model(images.flip(3))) / 2

    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = (views(x) + (views(padded[..., :6, :6]) + views(padded[..., 2:, 2:])) / 2) / 2
    loss, _ = evaluate(model, Loader([(x, y)]), flip_tta=True, translate_tta=True)
    assert loss == pytest.approx(nn.functional.cross_entropy(expected, y).item(), rel=1e-6)
    plain_loss, _ = evaluate(model, Loader([(x, y)]), flip_tta=True)
    assert plain_loss != pytest.approx(loss)


@pytest.mark.slow
def test_final_eval_only_still_checkpoints_every_epoch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(model="fastresnet", dataset="synthetic", epochs=3, batch_size=512, lr=0.4,
                      final_eval_only=True, crop_padding=2, norm_bias_lr_scale=8.0, eval_translate=True,
                      precision="fp32", compile=False, keep_checkpoints=5, out=str(out),
                      model_options={"width": 0.25})  # fmt: skip
    summary = train(cfg, progress=False)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [12]  # one test pass, at the end
    assert len(list_checkpoints(out)) == 3  # but a checkpoint at every epoch
    assert summary.metrics["test_error"] < 0.5  # learnt the synthetic classes (chance: 0.9)
    resolved = json.loads((out / "config.json").read_text())["resolved"]
    assert resolved["eval_translate"] is True and resolved["checkpointing"]["heap_kept"] is True
    # `resnets eval` with the same views reproduces the run's own final test error.
    proc = run_cli("eval", "--run", str(out), "--tta-translate", "--precision", "fp32", "--json")
    assert proc.returncode == 0, proc.stderr
    # (BN folded into the convs for serving: a prediction on a knife edge may flip)
    assert json.loads(proc.stdout)["error"] == pytest.approx(summary.metrics["test_error"], abs=3 / 512)


@pytest.mark.slow
def test_fast_recipes_are_the_whitened_net_and_small_images_are_refused(tmp_path: Path) -> None:
    fast94, fast = apply_recipe("fast94", {}), apply_recipe("fast", {})
    assert fast94["model"] == fast["model"] == "fastresnet" and fast["model_options"] == {"width": 0.5}
    assert fast94["batch_size"] == 1024 and fast94["final_eval_only"] and fast94["eval_translate"]
    assert apply_recipe("resnet20-fast", {})["model"] == "resnet20"
    tiny = TrainConfig(model="fastresnet", dataset="synthetic", dataset_options={"image_size": 8},
                       out=str(tmp_path / "r"))  # fmt: skip
    with pytest.raises(ResnetsError, match="needs images of at least 9x9 pixels; synthetic's are 8x8"):
        train(tiny, progress=False)


@pytest.mark.slow
def test_kept_heap_reuses_freed_pages() -> None:
    """With glibc's heap kept, a freed 64 MiB block is reused: no page faults the second time."""
    probe = (
        "import resource, sys, torch\n"
        "from resnets.training.memory import keep_freed_blocks\n"
        "if sys.argv[1] == 'kept': assert keep_freed_blocks()\n"
        "def faults():\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        # The steady state of a training loop: the same sizes again and again. Early rounds may
        # fault once more (seen on an AMD EPYC family 25 model 17: the 2nd or 3rd of 10, never later).
        "for _ in range(8):\n"
        "    before = faults(); x = torch.ones(2**24); after = faults(); del x\n"
        "print(after - before)\n"
    )
    counts = {}
    for mode in ("default", "kept"):
        proc = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True)
        counts[mode] = int(proc.stdout)
    pages = 2**26 // 4096
    assert counts["default"] > pages // 2  # mapped afresh: every page faults in again
    assert counts["kept"] < pages // 10, counts


@pytest.mark.slow
def test_fastresnet_is_listed_with_its_twin() -> None:
    proc = run_cli("models", "fast*")
    assert proc.returncode == 0, proc.stderr
    assert "fastresnet" in proc.stdout and "fastplain" in proc.stdout
    assert isinstance(create_model("fastplain"), FastResNet)


def test_alternating_flip_mirrors_each_image_every_other_epoch() -> None:
    from resnets.data.dataset import ImageData
    from resnets.data.loader import TensorLoader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 4, 4), generator=g, dtype=torch.uint8)
    data = ImageData(images, torch.arange(64))  # the label names the image
    loader = TensorLoader(data, 16, [0.0] * 3, [1 / 255] * 3, train=True, flip=True, alternate_flip=True)
    mirrored = []
    for epoch in range(3):
        state = {}
        for x, y in loader.epoch(epoch):
            for img, label in zip(x, y, strict=True):
                state[int(label)] = torch.equal(img, images[label].flip(2).float())
        mirrored.append(state)
    assert sorted(mirrored[0]) == list(range(64))
    assert all(mirrored[1][i] != mirrored[0][i] and mirrored[2][i] == mirrored[0][i] for i in range(64))
    assert 16 < sum(mirrored[0].values()) < 48  # a random half starts mirrored


def test_lookahead_pulls_weights_back_to_the_slow_average() -> None:
    from resnets.training.lookahead import Lookahead

    model = nn.Linear(3, 2)
    look = Lookahead()
    total = 100
    assert not look.update(model, 10, total)  # before 30 % of the run: free
    assert not look.update(model, 30, total) and look.slow is not None  # first due step: snapshot
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not look.update(model, 33, total)  # only every 5 steps
    assert look.update(model, 35, total)
    rho = look.decay(35, total)
    assert 0 < rho < look.decay(100, total) < 1
    assert torch.allclose(model.weight, start + (1 - rho), atol=1e-6)  # pulled back toward the snapshot
    assert torch.equal(model.weight, look.slow[0])


@pytest.mark.slow
def test_lookahead_run_resumes_exactly(tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    straight, split = tmp_path / "straight", tmp_path / "split"
    cfg = TrainConfig(dataset="digits", iterations=12, batch_size=64, lookahead=True, precision="fp32",
                      compile=False, checkpoint_every=6, out=str(straight))  # fmt: skip
    train(cfg, progress=False)
    shutil.copytree(straight, split)
    # As if killed after step 6: the later checkpoint and the weights never written.
    for path in [split / "model.safetensors", *list_checkpoints(split)[:1]]:
        path.unlink()
    assert [p.name for p in list_checkpoints(split)] == ["step-00000006.pt"]
    train(_at(split), resume=True, progress=False)
    a, b = (load_file(d / "model.safetensors") for d in (straight, split))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _at(run: Path) -> TrainConfig:
    cfg = TrainConfig.load(run / "config.json")
    cfg.out = str(run)
    return cfg


@pytest.mark.slow
@pytest.mark.skipif(not has_compiler(), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_bf16_backward_matches_eager() -> None:
    # The global max pool once used torch.amax, whose compiled bf16 backward after a GELU gave NaN
    # gradients (the autotuner picks compile for long runs, so fast94 at width 1 died at step 2).
    torch.manual_seed(0)
    model = create_model("fastresnet", num_classes=10, width=0.25).to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    model.init_from_data(x)

    def gradients(forward: nn.Module) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16):
            loss = nn.functional.cross_entropy(forward(x).float(), y)
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    eager = gradients(model)
    compiled = gradients(torch.compile(model, dynamic=False))
    assert len(compiled) == len(eager) > 0
    for e, c in zip(eager, compiled, strict=True):
        assert torch.isfinite(c).all()
        cosine = nn.functional.cosine_similarity(e.flatten().float(), c.flatten().float(), dim=0)
        assert cosine > 0.98 or (e.abs().max() < 1e-6 and c.abs().max() < 1e-6)
