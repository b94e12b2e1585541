"""What a sweep is: its members (lr, weight decay, seed), its settings and the files of its folder."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResnetsError
from ..models import get_spec
from ..training import TrainConfig

SETTINGS_FILE = "sweep-settings.json"
SWEEP_FILE = "sweep.json"
MEMBER_FILE = "member.json"  # a member's row once it is done, diverged or pruned
CHOSEN_FILE = "chosen.json"  # a search's winner at the first seed (lr and decay null: every one diverged)
RUNGS_FILE = "rungs.json"  # a halving candidate's validation score at each rung it reached
WORKERS_FILE = "workers.json"  # how many processes trained the members, decided once
# none: every member in full; halving: successive halving of the grid at the first seed; first-seed:
# the whole grid at the first seed. Both then train the setting chosen with the other seeds.
PRUNERS = ("none", "halving", "first-seed")
SEARCHES = ("halving", "first-seed")  # the pruners that choose at the first seed, then add seeds
# Settings a resumed sweep may extend with new values (not with halving, whose rungs they would move).
GROWING = ("lrs", "seeds")
MECHANISM = "one process, members in turn"
FUSE = ("auto", "yes", "no")


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its swept settings and its folder's name."""

    lr: float
    weight_decay: float
    seed: int

    @property
    def name(self) -> str:
        """The member's folder name, e.g. lr0.1_wd0.0005_seed0."""
        return f"lr{self.lr:g}_wd{self.weight_decay:g}_seed{self.seed}"


@dataclass
class SweepConfig:
    """A sweep: the settings every member shares, and the axes it sweeps."""

    base: TrainConfig  # every member's settings, with its own lr, weight decay, seed and folder
    lrs: list[float]
    weight_decays: list[float]
    seeds: list[int]
    out: str = "runs/sweep"
    prune: str = "none"  # one of PRUNERS: how much of the grid is trained past the first seed
    eta: int = 2  # halving keeps 1/eta of the candidates at each rung
    shard: tuple[int, int] = (0, 1)  # (index, count): this process trains members index, index+count, ...
    processes: int | None = None  # one-thread processes side by side on a CPU; None: measured
    fuse: str = "auto"  # train members fused (training/fused.py): yes, no, or auto (a measured trial)

    def validate(self) -> SweepConfig:
        """Check the axes and the settings; raise a one-line ResnetsError."""
        self.base.validate()
        get_spec(self.base.model)  # an unknown model fails before the folder is written
        for name, values in (("lr", self.lrs), ("weight-decay", self.weight_decays), ("seeds", self.seeds)):
            if not values:
                raise ResnetsError(f"--{name} needs at least one value")
            if len(set(values)) != len(values):
                raise ResnetsError(f"--{name} repeats a value: {values}")
        for lr in self.lrs:
            TrainConfig(lr=lr).validate()
        for wd in self.weight_decays:
            TrainConfig(weight_decay=wd).validate()
        if self.prune not in PRUNERS:
            raise ResnetsError(f"unknown --prune {self.prune!r}; choose {', '.join(PRUNERS)}")
        if not isinstance(self.eta, int) or self.eta < 2:
            raise ResnetsError(f"--eta must be an integer >= 2, got {self.eta!r}")
        if self.processes is not None and (not isinstance(self.processes, int) or self.processes < 1):
            raise ResnetsError(f"--processes must be a positive integer or auto, got {self.processes!r}")
        if self.fuse not in FUSE:
            raise ResnetsError(f"unknown --fuse {self.fuse!r}; choose {', '.join(FUSE)}")
        index, count = self.shard
        if not 0 <= index < count:
            raise ResnetsError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")
        if self.prune in SEARCHES:
            if not self.base.val_split:
                raise ResnetsError(f"--prune {self.prune} chooses on held-out images: add --val-split N")
            if "WORLD_SIZE" in os.environ and os.environ["WORLD_SIZE"] != "1":
                raise ResnetsError(f"--prune {self.prune} runs in one process: start it without torchrun")
            if count > 1:
                raise ResnetsError(
                    f"--prune {self.prune} needs every member's score before it chooses, so it runs on one "
                    "machine; use --prune none to spread a sweep with --shard"
                )
        return self

    def members(self) -> list[Member]:
        """Every member of the full grid, seeds innermost."""
        return [Member(lr, wd, s) for lr in self.lrs for wd in self.weight_decays for s in self.seeds]

    def member_config(self, member: Member) -> TrainConfig:
        """The TrainConfig of one member: ``resnets train`` with these settings makes the same run."""
        out = str(Path(self.out) / member.name)
        return dataclasses.replace(
            self.base, lr=member.lr, weight_decay=member.weight_decay, seed=member.seed, out=out
        )

    def settings(self) -> dict[str, Any]:
        """What a resumed sweep must share with the one it continues (its shard may differ)."""
        base = json.loads(self.base.to_json())
        for key in ("lr", "weight_decay", "seed", "out", "device"):
            base.pop(key)
        return {"base": base, "lrs": self.lrs, "weight_decays": self.weight_decays, "seeds": self.seeds,
                "prune": self.prune, "eta": self.eta}  # fmt: skip


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object the sweep wrote; a one-line error naming the file when it is damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResnetsError(
            f"{path} is damaged ({type(e).__name__}); remove it or use another --out"
        ) from None
    if not isinstance(data, dict):
        raise ResnetsError(f"{path} is damaged (not a JSON object); remove it or use another --out")
    return data


def main_process() -> bool:
    """False on the other ranks of a torchrun job: rank 0 alone writes the sweep's files."""
    return os.environ.get("RANK", "0") == "0"
