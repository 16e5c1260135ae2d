"""The paper's mode against the fine-tuned mode: CPU seconds per shared-weight step, side by side.

Issue 37's target: the paper's mode (no fine-tuning, its steps spent on trials, each trial's reward
on fixed validation patches) within 1.1x the fine-tuned mode's CPU per shared-weight step. Both
searches run in this process on one dataset with the benchmark's settings (``budget_curve.config``:
per budget unit ``--unit`` warm-up steps, then ``--unit`` trial steps and ``2 * --unit`` fine-tuning
steps, or ``3 * --unit`` trial steps in the paper's mode: the same number of steps), in alternating
rounds (fine-tuned, paper, fine-tuned, paper, ...) on fresh storages, each timed with the process's
CPU clock (the benchmarks' budget clock) from the first warm-up step to the last step; building the
objective (loading and preprocessing the cases) is outside the clock. Prints each round, the
median CPU seconds per step of each mode and their ratio, and where each mode's time goes (the
trials' own ``time_s`` records: warm-up, sampler, cost measurement, training, validation, ...).

    python benchmarks/mode_cost.py                      # a synthetic dataset, 200 steps a run
    python benchmarks/mode_cost.py p901 --unit 100      # a population at x1 (400 steps a run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_curve import config
from population_curve import PAPER_RECIPE

from ronas_optuna import create_search
from ronas_optuna.attrs import ATTR_TIME
from ronas_optuna.data import make_msd_dataset
from ronas_optuna.runner import run_search

MODES = ("finetune", "paper")


def settings_of(data: str, mode: str, unit: int, folder: Path) -> tuple[Any, int]:
    """The mode's settings and trial count, as the budget curve runs them at one budget unit of
    ``unit`` warm-up steps."""
    cfg = config(data, 1, mode, folder, 1, ["ronas"])
    scale = unit / cfg.settings.training.warmup_steps
    settings = cfg.settings.replace(
        warmup_steps=unit, finetune_steps=round(cfg.settings.finetune.steps * scale)
    )
    if mode == "paper":
        settings = settings.replace(**PAPER_RECIPE)
    return settings, max(1, round(cfg.trials * scale))


def one_run(data: str, mode: str, unit: int, folder: Path) -> dict[str, Any]:
    """One search of ``mode`` on a fresh storage: CPU seconds, steps and the trials' validation."""
    settings, trials = settings_of(data, mode, unit, folder)
    url = f"sqlite:///{folder / f'{mode}-{time.time_ns()}.db'}"
    search = create_search(data, storage=url, settings=settings, device="cpu")
    objective = search.objective  # the cases loaded and preprocessed outside the clock
    cpu = time.process_time()
    # as the benchmarks run a search: without the dashboard's figures (``ronas search`` draws them
    # for every 10th trial and each new best: the paper's mode, with 3x the trials, draws more)
    run_search(search.study, search.plan, trials, device="cpu", artifacts=None, objective=objective)
    cpu = time.process_time() - cpu
    done = [t for t in search.study.trials if t.state.name == "COMPLETE"]
    parts: dict[str, float] = {}
    for t in done:
        for part, seconds in t.user_attrs.get(ATTR_TIME, {}).items():
            parts[part] = parts.get(part, 0.0) + float(seconds)
    search.close()
    steps = settings.training.warmup_steps + trials * settings.training.steps_per_trial
    steps += settings.finetune.steps
    return {"mode": mode, "cpu_s": cpu, "steps": steps, "trials": len(done), "parts": parts}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="an MSD dataset (default: a synthetic one)")
    ap.add_argument("--unit", type=int, default=50, help="warm-up steps; the run has 4x as many")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = a.data or str(make_msd_dataset(folder / "Task001_Syn", n_cases=6, seed=0))
        rows = []
        for r in range(a.rounds):
            for mode in MODES:
                row = one_run(data, mode, a.unit, folder)
                rows.append(row)
                print(
                    f"round {r}: {mode:8s} {row['cpu_s']:7.2f} CPU-s, {row['steps']} steps, "
                    f"{row['trials']} trials",
                    flush=True,
                )
    per_step = {m: statistics.median(x["cpu_s"] / x["steps"] for x in rows if x["mode"] == m) for m in MODES}
    cpu = {m: statistics.median(x["cpu_s"] for x in rows if x["mode"] == m) for m in MODES}
    print(f"\n{a.rounds} rounds, {a.threads} thread(s), medians:")
    print("| mode | CPU-s a run | CPU-s a step |")
    print("|---|---:|---:|")
    for m in MODES:
        print(f"| {m} | {cpu[m]:.1f} | {per_step[m]:.4f} |")
    print(f"paper / finetune, CPU a step: {per_step['paper'] / per_step['finetune']:.2f}x (target <= 1.1x)")
    print("\nwhere the time goes (wall seconds a run, the trials' own records):")
    names = sorted({k for x in rows for k in x["parts"]})
    print("| part | " + " | ".join(MODES) + " | paper − finetune |")
    print("|---|" + "---:|" * (len(MODES) + 1))
    for k in names:
        v = {m: statistics.median(x["parts"].get(k, 0.0) for x in rows if x["mode"] == m) for m in MODES}
        cells = " | ".join(f"{v[m]:.1f}" for m in MODES)
        print(f"| {k} | {cells} | {v['paper'] - v['finetune']:+.1f} |")


if __name__ == "__main__":
    main()
