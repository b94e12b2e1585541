"""The sweep's report: error against learning rate per seed with mean and spread, and each member's curves."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .page import Document, write_documents
from .plotting import plt, save_png

METRICS = (("val_error", "validation"), ("test_error", "test"), ("train_error", "training"))


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, sample standard deviation, half the range) of finite values; NaNs where there are none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, math.nan
    sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return statistics.fmean(vals), sd, (max(vals) - min(vals)) / 2


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[float, float], list[dict[str, Any]]]:
    out: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["weight_decay"], r["lr"], r["seed"])):
        out.setdefault((r["lr"], r["weight_decay"]), []).append(r)
    return out


def lr_figure(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Final error against learning rate: one dot per seed, the mean joined, min-max shaded; per metric."""
    shown = [(k, label) for k, label in METRICS if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.8), squeeze=False)
    decays = sorted({r["weight_decay"] for r in rows})
    colors = dict(zip(decays, plt.get_cmap("tab10").colors, strict=False))
    for ax, (key, label) in zip(axes[0], shown, strict=True):
        for wd in decays:
            lrs, means, lows, highs = [], [], [], []
            for (lr, d), members in _groups(rows).items():
                if d != wd:
                    continue
                vals = [100 * r[key] for r in members if r["status"] == "done" and r.get(key) is not None]
                ax.plot([lr] * len(vals), vals, "o", color=colors[wd], ms=4, alpha=0.7)
                if vals:
                    lrs.append(lr)
                    means.append(statistics.fmean(vals))
                    lows.append(min(vals))
                    highs.append(max(vals))
            ax.plot(lrs, means, "-", color=colors[wd], label=f"weight decay {wd:g}")
            ax.fill_between(lrs, lows, highs, color=colors[wd], alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(f"final {label} error (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Error against learning rate (dots: seeds; line: mean; band: min to max)")
    return save_png(fig, path)


def curves_figure(out: Path, rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Each member's training error (and validation error where held out) against step, coloured by lr."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    lrs = sorted({r["lr"] for r in rows})
    cmap = plt.get_cmap("viridis")
    for r in rows:
        color = cmap(lrs.index(r["lr"]) / max(1, len(lrs) - 1))
        records = _metrics(out / r["member"])
        steps = [m["step"] for m in records]
        style = "-" if r["status"] == "done" else ":"
        ax.plot(steps, [100 * m["train_error"] for m in records], style, color=color, lw=1, alpha=0.8)
        held = [m for m in records if m.get("val_error") is not None]  # --log-every rows have none
        if held:
            val = [100 * m["val_error"] for m in held]
            ax.plot([m["step"] for m in held], val, "--", color=color, lw=0.8, alpha=0.5)
    for lr in lrs:
        ax.plot([], [], color=cmap(lrs.index(lr) / max(1, len(lrs) - 1)), label=f"lr {lr:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("error (%)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title("Training error (solid; dotted: pruned or diverged), validation error (dashed)")
    return save_png(fig, path)


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [m for m in records if isinstance(m, dict) and "step" in m and "train_error" in m]


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """One line per (lr, decay): mean ± sd of each error over its finished seeds; what became of the rest."""
    header = [
        "lr",
        "weight decay",
        "seeds done",
        "val error %",
        "test error %",
        "train error %",
        "other members",
    ]
    out, classes = [], []
    for (lr, wd), members in _groups(rows).items():
        done = [r for r in members if r["status"] == "done"]
        cells = []
        for key, _ in METRICS:
            mean, sd, _ = spread([r[key] for r in done if r.get(key) is not None])
            cells.append(
                "-"
                if math.isnan(mean)
                else f"{100 * mean:.2f}" + ("" if math.isnan(sd) else f" ± {100 * sd:.2f}")
            )
        others = [
            f"seed {r['seed']} diverged at step {r['step_diverged']}" if r["status"] == "diverged"
            else f"seed {r['seed']} pruned at step {r['steps']} (val {_pct(r.get('val_error'))} %)"
            for r in members if r["status"] != "done"
        ]  # fmt: skip
        out.append([f"{lr:g}", f"{wd:g}", str(len(done)), *cells, "; ".join(others) or "-"])
        classes.append("residual" if done else "failed")
    return header, out, classes


def write_sweep_report(out: Path, record: dict[str, Any], command: str = "") -> dict[str, Path]:
    """report.html, report.md and the figures of a finished sweep (sweep.json's ``record``)."""
    rows, settings, chosen = record["members"], record["settings"], record.get("chosen")
    base = settings["base"]
    figures = out / "figures"
    paths = {"lr": lr_figure(rows, figures / "error_vs_lr.png"),
             "curves": curves_figure(out, rows, figures / "curves.png")}  # fmt: skip
    header, body, classes = table(rows)
    pruned = sum(r["status"] == "pruned" for r in rows)
    diverged = sum(r["status"] == "diverged" for r in rows)
    findings = []
    if chosen:
        findings.append(
            f"chosen: **lr {chosen['lr']:g}, weight decay {chosen['weight_decay']:g}** "
            f"(mean validation error {100 * chosen['val_error_mean']:.2f} % over {chosen['seeds']} seed(s); "
            "chosen on held-out training images, never on the test set)"
        )
    else:
        findings.append("no setting chosen: give --val-split N to hold training images out for the choice")
    if settings["prune"] == "halving":
        findings.append(
            f"successive halving (eta {settings['eta']}) pruned {pruned} member(s) before the end"
        )
    if settings["prune"] == "first-seed":
        findings.append("the grid was trained at the first seed only; the chosen setting then at every seed")
    if diverged:
        findings.append(f"{diverged} member(s) diverged (loss NaN/inf); the others went on")
    length = f"{base['epochs']} epochs" if base.get("epochs") else f"{base.get('iterations')} steps"
    if not base.get("epochs") and not base.get("iterations"):
        length = "the default length"
    doc = Document(
        title=f"Sweep: {base['model']} on {base['dataset']}",
        intro=[
            f"{len(rows)} members: learning rates {', '.join(f'{x:g}' for x in settings['lrs'])}; "
            f"weight decays {', '.join(f'{x:g}' for x in settings['weight_decays'])}; "
            f"seeds {', '.join(map(str, settings['seeds']))}. Each member is a run of its own "
            f"({length}, batch {base['batch_size']}, {base['schedule']} schedule), "
            f"trained by {record['mechanism']}.",
            f"Validation: {base['val_split']} training images held out." if base.get("val_split") else "",
        ],
        command=command, findings=findings, header=header, rows=body, classes=classes,
        table_note="Mean ± sample standard deviation over the seeds that finished; final weights.",
        figures=paths,
        titles={"lr": "Error against learning rate", "curves": "Training curves"},
        captions={
            "lr": "Each dot is one seed's final error; the line joins the means, the band spans min to max.",
            "curves": "metrics.jsonl of every member, coloured by learning rate.",
        },
    )  # fmt: skip
    return write_documents(out, doc, rows)
