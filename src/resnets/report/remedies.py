"""The remedies report: depth as the yardstick first, then each arm against the plain and residual nets."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ..experiments.remedies import ArmResult, Study
from ..experiments.remedy_arms import GROUPS, get_arm
from ..experiments.stats import TEST, mean_sd
from .page import Document, Table, write_documents
from .remedies_figures import remedy_figures
from .remedies_verdict import ArmVerdict, judge, verdict

TITLES = {
    "arms": "Training error by arm",
    "depth": "Training error against depth",
    "lr": "The learning-rate search",
    "curves": "Training curves",
    "gradients": "Gradient flow at initialisation",
    "signal": "Signal propagation at initialisation",
}
CAPTIONS = {
    "arms": "Final training error of each arm at the deepest depth (the final model on its training images, "
    "no augmentation); bars: mean over seeds, ticks: each seed. Shaded band: the plain net; blue line: the "
    "residual net.",
    "depth": "Final training error of each arm at each depth (mean over seeds, bars: min to max).",
    "lr": "Validation error (held-out training images, BatchNorm statistics recomputed on training images: "
    "the score the choice is made on) of each learning rate tried at the first seed; the ringed point is "
    "the rate chosen. A rate pruned early by successive halving shows its last score.",
    "curves": "Training error (running average over each epoch, augmented) of every arm at the chosen rate, "
    "by group, every seed; the plain (orange) and residual (blue) nets in every panel for reference. A "
    "curve that falls late trains slowly; one flat near chance never trains.",
    "gradients": "Norm of the loss gradient of every conv/fc weight at initialisation, input to output, "
    "on one fixed batch (seed 0, deepest depth).",
    "signal": "Average channel variance of each block's output at initialisation (seed 0, deepest depth).",
}


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    if all(math.isnan(v) for v in values):
        return "diverged"
    m, s = mean_sd([v for v in values if not math.isnan(v)])
    return f"{100 * m:.2f}%" + (f" ± {100 * s:.2f}" if len(values) > 1 else "")


def _lr(study: Study, arm: str, depth: int) -> str:
    lr = next((s.lr for s in study.searches if s.arm == arm and s.depth == depth), None)
    return "all diverged" if lr is None else f"{lr:g}"


def _style(v: ArmVerdict) -> str:
    return (
        "failed" if v.against_plain == "never trains" else "residual" if get_arm(v.arm).residual else "plain"
    )


def _ordered(verdicts: list[ArmVerdict]) -> list[tuple[str, list[ArmVerdict]]]:
    groups = [(g, [v for v in verdicts if get_arm(v.arm).group == g]) for g in GROUPS]
    return [(g, vs) for g, vs in groups if vs]


def depth_table(study: Study, verdicts: list[ArmVerdict]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and styles: per arm, the shallow and deep training errors and whether depth hurts."""
    depths = sorted({r.depth for r in study.results})
    deep, shallow = depths[-1], depths[0]
    one = deep == shallow  # a screen at one depth: no yardstick
    header = ["arm", "lr" if one else f"lr ({shallow} / {deep})",
              *([] if one else [f"train error {shallow}"]),
              f"train error {deep}", *([] if one else [f"{deep} − {shallow}"]),
              "degradation"]  # fmt: skip
    rows, classes = [], []
    for group, members in _ordered(verdicts):
        rows.append([group, *[""] * (len(header) - 1)])
        classes.append("group")
        for v in members:
            lrs = (
                _lr(study, v.arm, deep)
                if one
                else f"{_lr(study, v.arm, shallow)} / {_lr(study, v.arm, deep)}"
            )
            shallow_cells = [] if one else [_pct(_raw(study.results, v.arm, shallow))]
            effect = [] if one else [v.depth_effect.text()]
            rows.append([v.arm, lrs, *shallow_cells, _pct(_raw(study.results, v.arm, deep)), *effect,
                         v.degradation])  # fmt: skip
            classes.append(_style(v))
    return header, rows, classes


def _raw(results: list[ArmResult], arm: str, depth: int) -> list[float]:
    return [r.train_error for r in results if r.arm == arm and r.depth == depth]


def versus_table(study: Study, verdicts: list[ArmVerdict]) -> Table:
    """Per arm at the deepest depth: against the plain and residual nets, test error, what it is."""
    deep = max(r.depth for r in study.results)
    header = ["arm", "train error", f"vs plain{deep}", f"vs resnet{deep}", "test error", "verdict", "time",
              "what it is (after whom; what differs)"]  # fmt: skip
    rows, classes = [], []
    for group, members in _ordered(verdicts):
        rows.append([group, *[""] * (len(header) - 1)])
        classes.append("group")
        for v in members:
            runs = [r for r in study.results if r.arm == v.arm and r.depth == deep]
            secs = statistics.fmean(r.seconds for r in runs) if runs else math.nan
            rows.append([
                v.arm, _pct([r.train_error for r in runs]),
                "-" if v.arm == "plain" else v.vs_plain.text(),
                "-" if v.arm == "resnet" else v.vs_resnet.text(),
                _pct([r.test_error for r in runs]), v.against_plain, f"{secs:.0f} s", get_arm(v.arm).line(),
            ])  # fmt: skip
            classes.append(_style(v))
    note = (f"{TEST}, two-sided; differences in points of training error (arm minus reference). "
            "Time: training seconds of one final run.")  # fmt: skip
    return Table(f"Against the plain and residual nets at depth {deep}", header, rows, classes, note)


def _intro(study: Study) -> list[str]:
    cfg = study.cfg
    fast = study.fast_path
    grid = ", ".join(f"{lr:g}" for lr in cfg.lrs)
    kind = ("A **screen**, not a result: every arm at one learning rate, one seed, one depth."
            if cfg.quick else "")  # fmt: skip
    subset = f" (a {cfg.train_subset}-image subset)" if cfg.train_subset else ""
    search = "successive halving" if cfg.search == "halving" else "the whole grid"
    widened = (
        "; one step wider, up to two, past an end where the best rate sat"
        if cfg.search == "first-seed"
        else ""
    )
    return [
        kind,
        f"**Scale:** dataset {cfg.dataset}{subset}, depths {', '.join(map(str, sorted(cfg.depths)))}, "
        f"{len(cfg.arms)} arm(s), {cfg.epochs} epochs per run, {cfg.seeds} seed(s) per arm and depth.",
        f"**Each arm at its own learning rate:** the grid {grid} (shifted per arm: ×1/4 for the nets without "
        f"BatchNorm, ×4 for highway gates{widened}) searched at seed 0 by {search}, chosen on "
        f"the validation error of {study.val_split} training images held out (never the test set), then "
        f"trained at the chosen rate with every seed. SGD (momentum 0.9, batch {cfg.batch_size}, "
        f"{cfg.schedule} schedule, weight decay {cfg.weight_decay:g}) and the arm's own rules where its "
        f"paper has them (Fixup, DiracNets). Every arm in {fast.get('precision')}, "
        f"{'NHWC' if fast.get('channels_last') else 'NCHW'} ({fast.get('why')}).",
    ]


def write_remedies_report(study: Study, command: str = "") -> dict[str, Path]:
    """figures/, report.md, report.html and summary.json in the study folder."""
    out = Path(study.cfg.out)
    verdicts = judge(study)
    figures = remedy_figures(study.results, study.searches, out / "figures")
    header, rows, classes = depth_table(study, verdicts)
    depths = sorted({r.depth for r in study.results})
    doc = Document(
        title="What a deep plain net gets from other remedies, against identity shortcuts",
        intro=_intro(study), command=command, findings=verdict(study), header=header, rows=rows,
        classes=classes, table_note="Training error: the final model on its training images (held-out "
        f"images excluded), no augmentation; mean ± std over seeds. {TEST}, one-sided: is the deeper net "
        "worse?",
        figures=figures, titles=TITLES, captions=CAPTIONS,
        table_title=f"Depth as the yardstick: {depths[-1]} against {depths[0]}" if len(depths) > 1
        else f"Training error at depth {depths[0]} (one depth: no yardstick)",
        more_tables=[versus_table(study, verdicts)],
    )  # fmt: skip
    summary = [r.summary() for r in study.results]
    return write_documents(out, doc, summary)
