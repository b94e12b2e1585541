"""The command line is consistent: every option explained, every switch reversible, one name per idea."""

from __future__ import annotations

import argparse

import pytest

from resnets.cli import build_parser
from resnets.commands.train import config_from_args

# Flags that name an action rather than a setting: a --no- form would mean nothing.
ACTIONS = {"--resume", "--quiet", "--json", "--list", "--collect", "--no-fold", "--no-decay-on-norm-and-bias"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, parser in _subcommands().items()
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert missing == []


def test_every_setting_switch_can_be_turned_off() -> None:
    one_way = [
        f"{name} {a.option_strings}"
        for name, parser in _subcommands().items()
        for a in parser._actions
        if isinstance(a, argparse._StoreTrueAction | argparse._StoreFalseAction)
        and not set(a.option_strings) & ACTIONS
    ]
    assert one_way == []


@pytest.mark.parametrize(
    ("flag", "field", "where"),
    [("nesterov", "nesterov", None), ("sync-bn", "sync_bn", None),
     ("zero-init-residual", "zero_init_residual", "model"), ("long-skip", "long_skip", "model")],
)  # fmt: skip
def test_a_recipe_switch_is_turned_off_by_its_no_form(flag: str, field: str, where: str | None) -> None:
    args = build_parser().parse_args(["train", "--recipe", "fast", f"--{flag}", f"--no-{flag}"])
    cfg, _, _ = config_from_args(args)
    value = cfg.model_options.get(field) if where == "model" else getattr(cfg, field)
    assert value is False


def test_one_name_works_across_commands() -> None:
    parse = build_parser().parse_args
    assert parse(["eval", "--run", "r", "--eval-flip", "--eval-translate"]).tta is True
    assert parse(["eval", "--run", "r", "--tta", "--no-eval-flip"]).tta is False
    assert parse(["export", "--run", "r", "--format", "onnx", "--out", "m.onnx"]).output == "m.onnx"
    assert parse(["predict", "--run", "r", "x.png", "--json"]).format == "json"
    assert parse(["predict", "--run", "r", "x.png"]).device == "auto"
    cfg, _, _ = config_from_args(parse(["train", "--init", "he-fan-in", "--act", "leaky-relu"]))
    assert cfg.model_options == {"init": "he_fan_in", "act": "leaky_relu"}
    cfg, _, _ = config_from_args(parse(["train", "--model", "plain20", "--act", "tat", "--norm", "none"]))
    assert cfg.model_options == {"act": "trelu", "norm": "none"}  # the remedies arm's name works too


def test_a_run_without_out_gets_a_folder_of_its_own(tmp_path, monkeypatch, capsys) -> None:
    from resnets.errors import ResnetsError

    monkeypatch.chdir(tmp_path)
    parse = build_parser().parse_args
    first, _, _ = config_from_args(parse(["train", "--model", "plain20"]))
    assert first.out.startswith("runs/plain20-digits-") and "writing the run to" in capsys.readouterr().out
    (tmp_path / first.out).mkdir(parents=True)
    second, _, _ = config_from_args(parse(["train", "--model", "plain20"]))
    assert second.out != first.out and not (tmp_path / second.out).exists()
    with pytest.raises(ResnetsError, match="--resume needs --out"):
        config_from_args(parse(["train", "--resume"]))
