"""What a checkpoint after every trial costs: its seconds against the trial's, per trial.

Runs a short search with ``checkpoint_every=1`` (the default) and prints, from each trial's
``time_s`` user attr, the checkpoint write's share of the trial and the checkpoint's size.

    python benchmarks/checkpoint_cost.py ../shared/data/Task901_BrainTissueTemplates --trials 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import optuna
import torch

from ronas_optuna.bench import README_SETTINGS
from ronas_optuna.runner import prepare, run_search


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = README_SETTINGS.replace(warmup_steps=10, checkpoint_every=1)
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'c.db'}"
        study, plan = prepare(a.data, storage, "ckpt", settings=settings)
        run_search(study, plan, a.trials, device=a.device)
        times = [t.user_attrs["time_s"] for t in study.trials if "time_s" in t.user_attrs]
        ckpt = np.array([t.get("checkpoint", 0.0) for t in times])
        total = np.array([sum(v for k, v in t.items() if k != "warmup") for t in times])
        size = plan.checkpoint.stat().st_size / 1e6
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else "CPU"
    print(
        f"{Path(a.data).name} on {dev}: {len(times)} trials, checkpoint {size:.1f} MB, "
        f"write {1e3 * ckpt.mean():.1f} ms per trial = {100 * (ckpt / total).mean():.1f}% "
        f"[max {100 * (ckpt / total).max():.1f}%] of a trial ({total.mean():.2f} s)"
    )


if __name__ == "__main__":
    main()
