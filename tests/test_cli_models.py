"""`resnets models` and the CLI's error contract."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_error, run_cli

from resnets.models import list_models


def _table(stdout: str) -> dict[str, list[str]]:
    """The rows of the rich table, by model name (first cell)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.lstrip().startswith("│") and len(cells) == 7:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_models_table_lists_every_model() -> None:
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    rows = _table(proc.stdout)
    assert sorted(rows) == sorted(list_models())  # each name a row of its own, none twice
    assert rows["resnet1202"][:4] == ["cifar", "1202", "A", "19.42M"]
    assert rows["resnet50"][1:4] == ["50", "B", "25.56M"]  # not wide_resnet50_2's row
    assert rows["wide_resnet50_2"][3] == "68.88M"
    assert rows["plain56"][:4] == ["cifar", "56", "none", "853.02K"]  # the twin: same params, no shortcuts


@pytest.mark.slow
def test_models_json_is_machine_readable() -> None:
    proc = run_cli("models", "resnet1?", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {"resnet18"}
    r = rows["resnet18"]
    assert r["params"] == 11_689_512 and r["depth"] == 18 and r["shortcut"] == "B"
    assert r["flops"] == 2 * r["macs"] and 1.7e9 < r["macs"] < 1.9e9


@pytest.mark.slow
def test_unknown_model_is_one_line_with_suggestions() -> None:
    proc = run_cli("models", "resnet21")
    assert_clean_error(proc, "unknown model 'resnet21'", "resnet20")
    assert proc.returncode == 2


@pytest.mark.slow
def test_unknown_subcommand_is_one_line() -> None:
    assert_clean_error(run_cli("bogus"), "invalid choice")
