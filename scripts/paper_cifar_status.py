"""Write the status page of the paper's CIFAR-10 study (issue 25) from its study folder.

Each (model, seed) of the table is listed as done (its final test error), at step k of 64,000,
or not started, with the device time spent so far, the paper's Table 6 beside ours and Figure 6
from the curves so far. Nothing is trained or loaded but the study's own files.

    python scripts/paper_cifar_status.py [STUDY] [--page docs/paper-cifar10/report.md] [--seeds N]
                                         [--models plain20 ... resnet110]

STUDY defaults to runs/paper-cifar10. The study may have been started one depth at a time
(scripts/gpu_paper_cifar.sh does), so its study.json names only the part run last: the page
lists --models at --seeds seeds (default: the paper's table, 2 seeds, or what study.json says).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from resnets.errors import ResnetsError
from resnets.experiments.degradation import StudyConfig
from resnets.report.study_status import read_study, write_status

# The paper's Figure 6 and Table 6: plain-20 ... 56 and ResNet-20 ... 110; plain-110 last (the paper
# trained it, "higher than 60 %", but did not draw it).
PAPER_MODELS = [*(f"plain{d}" for d in (20, 32, 44, 56, 110)), *(f"resnet{d}" for d in (20, 32, 44, 56, 110))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", default="runs/paper-cifar10", help="the study folder (--out)")
    p.add_argument("--page", default="docs/paper-cifar10/report.md", help="the Markdown page to write")
    p.add_argument("--seeds", type=int, help="seeds per model (default: study.json's, else 2)")
    p.add_argument("--models", nargs="+", default=PAPER_MODELS, help="the table's models")
    args = p.parse_args(argv)
    out = Path(args.study)
    cfg = read_study(out)
    if cfg is None:  # nothing run yet: the plan the GPU script follows
        cfg = StudyConfig.from_recipe("paper-cifar", dataset="cifar10", out=str(out), seeds=2)
    cfg = dataclasses.replace(cfg, models=args.models, seeds=args.seeds or cfg.seeds)
    try:
        page = write_status(cfg.validate(), Path(args.page))
    except ResnetsError as e:
        print(f"paper_cifar_status: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
