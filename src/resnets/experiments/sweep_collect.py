"""A sweep's result from its members' folders: sweep.json, and the setting the validation error chooses."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..io import atomic_write_text
from ..training import TrainConfig
from .sweep_config import (
    CHOSEN_FILE,
    MECHANISM,
    MEMBER_FILE,
    SEARCHES,
    SETTINGS_FILE,
    SWEEP_FILE,
    WORKERS_FILE,
    SweepConfig,
    read_json,
)  # fmt: skip


@dataclass
class SweepResult:
    """Every member's row and the setting the sweep chose."""

    rows: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    complete: bool  # every member is done, diverged or pruned (else other shards are still going)
    extra: dict[str, Any] = field(default_factory=dict)


def collect(out: str | Path) -> SweepResult:
    """Every member's row from its folder; sweep.json written once every member is in."""
    out = Path(out)
    if not (out / SETTINGS_FILE).exists():
        raise ResnetsError(f"{out} holds no sweep ({SETTINGS_FILE} missing)")
    settings = read_json(out / SETTINGS_FILE)
    cfg = _from_settings(settings, out)
    rows, missing = [], []
    for member in cfg.members():
        path = out / member.name / MEMBER_FILE
        if path.exists():
            rows.append(read_json(path))
        elif cfg.prune == "none":
            missing.append(member.name)
    if cfg.prune in SEARCHES:
        searched = _searched(cfg, out, rows)
        complete = searched is not None
        chosen = searched if searched is not None and searched.get("lr") is not None else None
    else:
        complete = not missing
        chosen = choose(rows) if complete else None
    mechanism = _mechanism(out)
    result = SweepResult(rows, chosen, complete, {"mechanism": mechanism, "settings": settings})
    if complete:
        record = {"settings": settings, "mechanism": mechanism, "chosen": chosen, "members": rows,
                  "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        atomic_write_text(out / SWEEP_FILE, json.dumps(record, indent=1) + "\n")
    return result


def _searched(cfg: SweepConfig, out: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A finished search's choice (its winner with every seed in), or None while it is still going.

    The winner is the search's own (chosen.json: scored at its rung, BN statistics recomputed), so
    the seeds added after it cannot move the choice.
    """
    path = out / CHOSEN_FILE
    if not path.exists():
        return None
    winner = read_json(path)
    if winner.get("lr") is None:
        return winner  # every setting diverged: complete, nothing chosen
    first = cfg.seeds[0]
    searched = {(r["lr"], r["weight_decay"]) for r in rows if r["seed"] == first}
    if len(searched) < len(cfg.lrs) * len(cfg.weight_decays):
        return None
    mine = [r for r in rows if (r["lr"], r["weight_decay"]) == (winner["lr"], winner["weight_decay"])]
    if {r["seed"] for r in mine} < set(cfg.seeds):
        return None
    vals = [r["val_error"] for r in mine if r["status"] == "done" and r.get("val_error") is not None]
    return {"lr": winner["lr"], "weight_decay": winner["weight_decay"],
            "val_error_mean": sum(vals) / len(vals) if vals else None, "seeds": len(vals),
            "by": f"lowest validation error at seed {first} (held-out training images, BN statistics "
            "recomputed)"}  # fmt: skip


def _from_settings(settings: dict[str, Any], out: Path) -> SweepConfig:
    base = TrainConfig.from_dict({**settings["base"], "out": str(out)}, source=str(out / SETTINGS_FILE))
    return SweepConfig(
        base, list(settings["lrs"]), list(settings["weight_decays"]), list(settings["seeds"]), str(out),
        settings["prune"], settings["eta"],
    )  # fmt: skip


def choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The (lr, weight decay) with the lowest mean validation error over its finished seeds."""
    groups: dict[tuple[float, float], list[float]] = {}
    for r in rows:
        if r["status"] == "done" and r.get("val_error") is not None:
            groups.setdefault((r["lr"], r["weight_decay"]), []).append(r["val_error"])
    if not groups:
        return None
    (lr, wd), vals = min(groups.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    return {"lr": lr, "weight_decay": wd, "val_error_mean": sum(vals) / len(vals), "seeds": len(vals),
            "by": "lowest mean validation error over seeds (held-out training images)"}  # fmt: skip


def _mechanism(out: Path) -> str:
    """How the members were trained, for sweep.json and the report."""
    path = out / WORKERS_FILE
    decision = read_json(path) if path.exists() else {"processes": 1}
    if decision.get("fused"):
        return f"one process, the members fused ({decision['why']})"
    if decision.get("processes", 1) > 1:
        return f"{decision['processes']} one-thread processes side by side ({decision['why']})"
    return MECHANISM
