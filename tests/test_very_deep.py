"""Very deep nets: checkpointing changes nothing but memory; stochastic depth as the paper has it."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import HANG_GUARD, assert_clean_error, run_cli

from resnets import create_model
from resnets.errors import ResnetsError
from resnets.models.depth import StochasticDepth, default_segments, expected_depth, split
from resnets.training import TrainConfig, train

PINNED = {"precision": "fp32", "channels_last": False, "compile": False}


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same drop masks for both models
    model.train()
    F.cross_entropy(model(x), y).backward()
    return {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "options"), [
    ("resnet56", {}), ("resnet56", {"drop_path": 0.5}), ("preact_resnet164", {}),
])  # fmt: skip
def test_checkpointing_gives_the_same_gradients_and_bn_statistics(name: str, options: dict) -> None:
    torch.manual_seed(0)
    plain = create_model(name, num_classes=10, **options)
    checked = copy.deepcopy(plain)
    checked.set_checkpointing(3)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    g1, g2 = _step(plain, x, y, 1), _step(checked, x, y, 1)
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], atol=1e-6, rtol=0, msg=k)
    s1, s2 = plain.state_dict(), checked.state_dict()
    for k in s1:  # running mean/var and the step counter: updated once, not again when recomputed
        assert torch.equal(s1[k], s2[k]), k
    assert int(s2["layer1.0.bn1.num_batches_tracked"]) == 1


def test_segments_split_the_blocks_evenly() -> None:
    blocks = [torch.nn.Identity() for _ in range(600)]  # resnet1202
    assert default_segments(600) == 24
    parts = split(blocks, 24)
    assert [len(p) for p in parts] == [25] * 24 and [b for p in parts for b in p] == blocks
    assert [len(p) for p in split(blocks[:10], 3)] == [3, 4, 3]
    model = create_model("resnet110", checkpoint_segments="auto")
    assert model.checkpoint_segments == 7  # sqrt(54 blocks)


def test_expected_depth_in_training_is_the_papers() -> None:
    # Huang et al. 2016: with the linear rule and p_L = 0.5, E[depth] = (3L - 1) / 4 blocks.
    assert expected_depth(54, 0.5) == pytest.approx((3 * 54 - 1) / 4)
    torch.manual_seed(0)
    model = create_model("resnet56", num_classes=10, drop_path=0.5).train()
    active: list[torch.Tensor] = []
    for block in model.blocks():
        block.drop_path.register_forward_hook(
            lambda m, i, out: active.append((out.flatten(1).abs().sum(1) > 0).float())
        )
    kept = []
    with torch.no_grad():
        for _ in range(4):
            active.clear()
            model(torch.randn(128, 3, 32, 32))
            kept.append(torch.stack(active).sum(0))  # branches kept, for each image
    samples = 4 * 128
    mean = float(torch.cat(kept).mean())
    want = expected_depth(27, 0.5)  # 20 of 27 blocks
    # Each block is a Bernoulli draw: the mean over 512 images has a std of about 0.1 blocks.
    sd = math.sqrt(sum((i + 1) / 54 * (1 - (i + 1) / 54) for i in range(27)) / samples)
    assert abs(mean - want) < 5 * sd, (mean, want)


def test_inference_is_deterministic_and_scales_the_branch() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, drop_path=0.5).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    branch = torch.randn(4, 8, 2, 2)
    assert torch.equal(StochasticDepth(0.25).eval()(branch), branch * 0.75)
    assert [round(b.drop_path.p, 4) for b in model.blocks()][::4] == [0.0556, 0.2778, 0.5]


@pytest.mark.slow
def test_plain_twins_refuse_stochastic_depth(tmp_path) -> None:
    with pytest.raises(ResnetsError, match="drop_path needs shortcuts"):
        create_model("plain56", drop_path=0.5)
    with pytest.raises(ResnetsError, match=r"drop_path must be a probability in \[0, 1\)"):
        create_model("resnet56", drop_path=1.0)
    assert_clean_error(
        run_cli(
            "train",
            "--model",
            "plain20",
            "--dataset",
            "digits",
            "--drop-path",
            "0.2",
            "--iterations",
            "1",
            "--out",
            str(tmp_path / "refused"),
        ),
        "drop_path needs shortcuts",
    )
    assert not (tmp_path / "refused").exists()  # refused before anything was written: no empty folder left


@pytest.mark.slow
def test_explicit_compile_and_checkpointing_is_a_clear_error(tmp_path) -> None:
    proc = run_cli("train", "--model", "resnet20", "--dataset", "digits", "--iterations", "1", "--compile",
                   "--checkpoint-activations", "2", "--out", str(tmp_path / "r"))  # fmt: skip
    assert_clean_error(proc, "--compile cannot be combined with activation checkpointing")


@pytest.mark.slow
def test_digits_with_stochastic_depth_and_checkpointing_trains_like_without(tmp_path) -> None:
    errors = {}
    for label, options in (("plain", {}), ("sd", {"drop_path": 0.2, "checkpoint_segments": "auto"})):
        # precision, layout and compile fixed: an accuracy bound must not follow this machine's speed
        cfg = TrainConfig(model="resnet20", dataset="digits", epochs=4, batch_size=64, schedule="onecycle",
                          lr=0.1, model_options=options, out=str(tmp_path / label), **PINNED)  # fmt: skip
        errors[label] = train(cfg, progress=False).metrics["test_error"]
    assert errors["plain"] < 0.05 and errors["sd"] < 0.05, errors


@pytest.mark.slow
def test_checkpointing_turns_itself_on_where_activations_would_not_fit(tmp_path, monkeypatch) -> None:
    from resnets.training import memory

    base = {"model": "resnet20", "dataset": "digits", "iterations": 4, "batch_size": 32, "precision": "fp32"}
    roomy = train(TrainConfig(**base, out=str(tmp_path / "roomy")), progress=False)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**20)  # 1 MiB free: nothing fits
    tight = train(TrainConfig(**base, out=str(tmp_path / "tight")), progress=False)
    resolved = json.loads((tmp_path / "tight" / "config.json").read_text())["resolved"]["checkpointing"]
    assert resolved["auto"] is True and resolved["segments"] == 3  # sqrt(9 blocks)
    assert resolved["activation_gib"] > 0
    roomy_resolved = json.loads((tmp_path / "roomy" / "config.json").read_text())["resolved"]
    assert roomy_resolved["checkpointing"]["auto"] is False
    a, b = roomy.model.state_dict(), tight.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same training, in less memory


@pytest.mark.slow
def test_checkpointed_cpu_runs_map_their_largest_activations() -> None:
    # In a child process: the allocator setting lasts for the process that makes it.
    code = """
import json, torch
from resnets import create_model
from resnets.training.memory import largest_activation_bytes, map_checkpointed_activations
cpu = torch.device("cpu")
plain = create_model("resnet20", num_classes=10)
ckpt = create_model("resnet20", num_classes=10, checkpoint_segments=3)
print(json.dumps({
    "largest": largest_activation_bytes(ckpt, (3, 32, 32), 256),
    "unchecked": map_checkpointed_activations(plain, (3, 32, 32), 256, "fp32", cpu),
    "small": map_checkpointed_activations(ckpt, (3, 32, 32), 8, "fp32", cpu),
    "bf16": map_checkpointed_activations(ckpt, (3, 32, 32), 256, "bf16", cpu),
    "fp32": map_checkpointed_activations(ckpt, (3, 32, 32), 256, "fp32", cpu),
    "huge": map_checkpointed_activations(ckpt, (3, 32, 32), 4096, "fp32", cpu),
}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["largest"] == 16 * 32 * 32 * 256 * 4  # the first stage's output: 16 MiB
    assert got["unchecked"] is None and got["small"] is None  # unchecked, or too small to matter
    assert got["bf16"] == 8 * 2**20 and got["fp32"] == 16 * 2**20
    assert got["huge"] == 32 * 2**20  # glibc's ceiling
