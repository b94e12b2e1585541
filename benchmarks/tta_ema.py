"""What the weight average and the test-time views buy a finished run: test accuracy of each.

    python benchmarks/tta_ema.py RUN_DIR [--data-dir ../shared/data]

Evaluates the run's saved weights (the EMA where the run kept one) and its last raw weights
(from the newest checkpoint) with 1, 2 and 6 views (plain; + mirror; + one-pixel shifts), and
prints the seconds each pass took on this machine, named by its CPU model.
"""

from __future__ import annotations

import argparse
import time

import torch

from resnets.data import load_dataset
from resnets.training.autotune import device_name
from resnets.training.checkpoint import list_checkpoints, load_checkpoint
from resnets.training.evaluate import evaluate
from resnets.training.loaders import split_loader
from resnets.training.runs import load_run

VIEWS = {
    "1 view": (False, False),
    "2 views (mirror)": (True, False),
    "6 views (mirror x shifts)": (True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    run = load_run(args.run)
    data = load_dataset(
        run.config.dataset, args.data_dir or run.config.data_dir, **run.config.dataset_options
    )
    loader = split_loader(
        data, data.test, 1000, run.resolved["mean"], run.resolved["std"], torch.device("cpu")
    )
    loader.channels_last = bool(run.resolved.get("channels_last"))
    models = {"saved (EMA)" if run.config.ema_decay else "saved": run.model}
    raw = load_run(args.run).model
    raw.load_state_dict(load_checkpoint(list_checkpoints(run.path)[0])["model"])
    models["last raw weights"] = raw
    print(f"{run.path} on {device_name(torch.device('cpu'))}, {torch.get_num_threads()} threads")
    for name, model in models.items():
        model = model.to(memory_format=torch.channels_last) if loader.channels_last else model
        for views, (flip, translate) in VIEWS.items():
            t0 = time.perf_counter()
            _, error = evaluate(model, loader, "fp32", flip_tta=flip, translate_tta=translate)
            print(f"  {name:18s} {views:26s} accuracy {1 - error:.2%}  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
