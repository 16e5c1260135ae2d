"""Quality against budget on Task901: does the search need its fine-tuning, and when does it pay?

At shared-weight budgets of about 400, 1,600 and 6,400 steps (x1, x4, x16 of the README benchmark:
100 warm-up steps, 50 trials x 2 steps and 200 steps of in-supernet fine-tuning, each scaled), over
leave-one-out folds, every fold's held-out volume scores:

* ``ronas``, derived after the default in-supernet fine-tuning (its steps inside the budget), and
  the same search derived just before its fine-tuning (``before_finetune_test_dice``);
* ``ronas`` in the paper's mode: no fine-tuning, the whole budget spent on trials (``paper``);
* the same architecture trained alone, from scratch, on the volumes the final network trained on,
  for the CPU time of the whole RONAS run (``scratch_test_dice``);
* MONAI DynUNet for the same CPU time, with nnU-Net's recipe or Adam, whichever scored higher on
  the validation volume (chosen per fold, trained on the training volume alone);
* ``random`` sampler at the same budget with the same fine-tuning.

Each budget keeps its results in its own SQLite storages under ``--store`` (an interrupted run
continues; several processes can share them, one per ``--modes``/``--samplers``/``--folds`` split), and
``--report`` gathers every kept row into ``benchmarks/results/budget_curve_task901.{jsonl,md,png}``:
held-out Dice against CPU-hours with intervals over the test volumes (seeds averaged within a fold).
A report adds rows to what ``--results`` holds but refuses to drop or change one (a store of another
run or configuration): a rerun names its own ``--results`` folder, or ``--overwrite`` writes over them.

    python benchmarks/budget_curve.py ../shared/data/Task901_BrainTissueTemplates --budgets 1 4 \
        --store bc --results my_curve
    python benchmarks/budget_curve.py ../shared/data/Task901_BrainTissueTemplates --report --store bc \
        --results my_curve
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path
from typing import Any

import optuna
import torch

from ronas_optuna.bench import README_SETTINGS, BenchmarkConfig, run_benchmarks
from ronas_optuna.bench.report import conflicting_rows
from ronas_optuna.bench.stats import Keyed, clustered, paired, verdict

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = "budget_curve_task901.jsonl"
IDENTITY = ("budget", "mode", "sampler", "fold", "seed")
MODES = ("finetune", "paper")
FOLDS = 3


#: A smoke-test scale (``--tiny``): a few steps of a small network per budget unit.
TINY = README_SETTINGS.replace(
    spacing=2.0,
    depth=2,
    base_width=4,
    max_width=8,
    steps_per_trial=1,
    max_patch_voxels=4096,
)


def config(
    data: str,
    budget: int,
    mode: str,
    store: Path,
    seeds: int,
    samplers: list[str],
    *,
    tiny: bool = False,
    folds: list[int] | None = None,
    references: bool = True,
) -> BenchmarkConfig:
    """The benchmark of one budget and mode: ``finetune`` keeps the default split of the budget
    (1/4 warm-up, 1/4 trials, 1/2 fine-tuning); ``paper`` spends the fine-tuning's steps on trials.
    ``references=False``: the fine-tuned RONAS rows without their twin and DynUNet (a rerun of
    another default read against an earlier run, whose references it keeps)."""
    ft = mode == "finetune"
    refs = ft and "ronas" in samplers and references
    unit = 2 if tiny else 100  # warm-up steps per budget unit; trial steps the same, fine-tuning twice
    base = TINY if tiny else README_SETTINGS
    settings = base.replace(warmup_steps=unit * budget, finetune_steps=2 * unit * budget if ft else 0)
    trial_steps = (unit if ft else 3 * unit) * budget
    return BenchmarkConfig(
        data=data,
        samplers=samplers,
        seeds=seeds,
        trials=max(1, trial_steps // base.training.steps_per_trial),
        storage=f"sqlite:///{store / f'x{budget}_{mode}.db'}",
        settings=settings,
        scratch_steps=None if refs else 0,  # RONAS's architecture alone, equal time
        hpo_trials=0,
        folds=FOLDS,
        only_folds=folds,
        handmade=refs,
        # From x16 on, DynUNet trains with nnU-Net's recipe without a per-fold choice: training both
        # recipes for the whole budget would double the reference's cost. Validation chose adam in
        # every x1 fold and nnunet-sgd in two of three x4 folds (by 0.033 and 0.044; adam by 0.007
        # in the third), so the longer the training, the more the validation volumes favour it.
        handmade_recipe="nnunet-sgd" if budget >= 16 else "auto",
        device="cpu",
        output=str(store / f"x{budget}_{mode}"),
    )


def kept_rows(store: Path, budget: int, mode: str) -> list[dict[str, Any]]:
    """Every finished row of one budget and mode (method studies and references alike)."""
    path = store / f"x{budget}_{mode}.db"
    if not path.exists():
        return []
    url = f"sqlite:///{path}"
    rows = []
    for s in optuna.get_all_study_summaries(url, include_best_trial=False):
        result = s.user_attrs.get("benchmark:result")
        if result and "test_dice" in result:
            rows.append({**result, "budget": budget, "mode": mode})
    return rows


def _keyed(rows: list[dict[str, Any]], method: str, key: str = "test_dice") -> Keyed:
    return {
        (int(r["fold"]), int(r["seed"])): float(r.get(key, math.nan)) for r in rows if r["method"] == method
    }


def _methods(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows named by method: ``ronas``/``random`` (fine-tuned), ``paper``, ``dynunet``, and the
    derived columns ``ronas before fine-tuning`` and ``same arch alone``."""
    out = []
    for r in rows:
        name = "paper" if r["mode"] == "paper" else r["sampler"]
        out.append({**r, "method": name})
        if name == "ronas":
            for col, label in (
                ("before_finetune_test_dice", "ronas before fine-tuning"),
                ("scratch_test_dice", "same arch alone"),
            ):
                if math.isfinite(float(r.get(col, math.nan))):
                    out.append({**r, "method": label, "test_dice": r[col]})
    return out


def store_rows(store: Path, budgets: list[int]) -> list[dict[str, Any]]:
    return [r for b in budgets for m in MODES for r in kept_rows(store, b, m)]


def report(
    store: Path,
    budgets: list[int],
    results: Path = RESULTS,
    against: Path | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Gather the kept rows into ``results``; refuse (SystemExit, one line) to drop or change rows a
    previous report wrote there unless ``overwrite``."""
    rows = store_rows(store, budgets)
    if not overwrite and (why := conflicting_rows(results / ROWS, rows, IDENTITY)):
        raise SystemExit(why)
    (results / ROWS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    named = _methods(rows)
    order = ["ronas", "paper", "ronas before fine-tuning", "same arch alone", "dynunet", "random"]
    lines = [
        "| budget | method | runs | CPU-h per run | held-out Dice [95% CI over test volumes] |",
        "|---|---|---:|---:|---:|",
    ]
    diffs = [
        "| budget | difference | volumes | mean [95% CI over test volumes] | verdict |",
        "|---|---|---:|---:|---|",
    ]
    for b in budgets:
        at = [r for r in named if r["budget"] == b]
        for m in order:
            mine = [r for r in at if r["method"] == m]
            if not mine:
                continue
            hours = sum(float(r.get("budget_s", 0)) for r in mine) / len(mine) / 3600
            folds = len({r["fold"] for r in mine})
            partial = "" if folds == FOLDS else f" (partial: {folds} of {FOLDS} folds)"
            lines.append(f"| x{b} | {m} | {len(mine)} | {hours:.2f} | {clustered(_keyed(at, m))}{partial} |")
        for a, c in (
            ("ronas", "dynunet"),
            ("paper", "dynunet"),
            ("paper", "same arch alone"),
            ("ronas", "paper"),
            ("ronas", "random"),
            ("ronas", "same arch alone"),
            ("ronas before fine-tuning", "same arch alone"),
        ):
            d = paired(_keyed(at, a), _keyed(at, c))
            if d.n:
                diffs.append(f"| x{b} | {a} − {c} | {d.n} | {d} | {verdict(d)} |")
    note = (
        "`same arch alone` is the fine-tuned RONAS run's architecture trained alone on the volumes "
        "that run's final network trained on (train+val) for its CPU time; the paper's mode has no "
        "twin of its own, so `paper − same arch alone` compares two architectures, and `ronas before "
        "fine-tuning − same arch alone` is the same architecture without fine-tuning (after half the "
        "budget, on the training volume) against it trained alone for the whole budget."
    )
    md = "\n".join([*lines, "", *diffs, "", note, *against_rows(named, against, budgets)]) + "\n"
    (results / "budget_curve_task901.md").write_text(md)
    plot(named, budgets, results / "budget_curve_task901.png", order)
    return md


def against_rows(named: list[dict[str, Any]], against: Path | None, budgets: list[int]) -> list[str]:
    """Each method against itself in an earlier run of the curve (``against``: its
    ``budget_curve_task901.jsonl``, say under the previous defaults), paired by fold and seed, with
    the interval over the test volumes; where this run has no DynUNet (``--no-references``),
    RONAS against the earlier run's (trained for that run's CPU time)."""
    if against is None:
        return []
    old = _methods([json.loads(line) for line in against.read_text().splitlines() if line.strip()])
    out = [
        "",
        f"Against `{against.name}` (an earlier run; paired by fold and seed):",
        "",
        "| budget | method | volumes | this run − that one: mean [95% CI over test volumes] | verdict |",
        "|---|---|---:|---:|---|",
    ]
    for b in budgets:
        new_b, old_b = [r for r in named if r["budget"] == b], [r for r in old if r["budget"] == b]
        for m in dict.fromkeys(r["method"] for r in new_b):
            d = paired(_keyed(new_b, m), _keyed(old_b, m))
            if d.n:
                out.append(f"| x{b} | {m} | {d.n} | {d} | {verdict(d)} |")
        if not any(r["method"] == "dynunet" for r in new_b):
            d = paired(_keyed(new_b, "ronas"), _keyed(old_b, "dynunet"))
            if d.n:
                out.append(f"| x{b} | ronas − that run's dynunet | {d.n} | {d} | {verdict(d)} |")
    return out


def plot(named: list[dict[str, Any]], budgets: list[int], path: Path, order: list[str]) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ticks: dict[int, float] = {}
    for i, m in enumerate(order):
        xs, ys, lo, hi = [], [], [], []
        for b in budgets:
            at = [r for r in named if r["budget"] == b and r["method"] == m]
            if len({r["fold"] for r in at}) < FOLDS:  # a budget still running is not a point yet
                continue
            ronas = [r for r in named if r["budget"] == b and r["method"] == "ronas"] or at
            iv = clustered(_keyed(at, m))
            ticks.setdefault(b, sum(float(r.get("budget_s", 0)) for r in ronas) / len(ronas) / 3600)
            hours = sum(float(r.get("budget_s", 0)) for r in at) / len(at) / 3600  # its own CPU time
            xs.append(hours * (1 + 0.02 * i))  # side by side, not on top of each other
            ys.append(iv.mean)
            lo.append(iv.mean - (iv.low if iv.n > 1 else iv.mean))
            hi.append((iv.high if iv.n > 1 else iv.mean) - iv.mean)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(list(ticks.values()), [f"{h:.2f} (x{b})" for b, h in ticks.items()])
    ax.set_xlabel("CPU-hours per run (ticks: the fine-tuned RONAS run's search, fine-tuning, export)")
    ax.set_ylabel("held-out Dice (95% CI over test volumes)")
    ax.set_title("Task901 at 3 mm, leave-one-out: quality against budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _echo(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--samplers", default="ronas,random", help="samplers of the finetune mode")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per fold below x16 (x16 and above run 1)")
    ap.add_argument("--store", type=Path, default=Path("budget_curve"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ap.add_argument(
        "--folds", type=int, nargs="+", default=None, help="only these folds (0-2): one process per fold"
    )
    ap.add_argument(
        "--no-references",
        action="store_true",
        help="RONAS's rows without the twin and DynUNet (a rerun read with --against an earlier run)",
    )
    ap.add_argument("--report", action="store_true", help="only gather the kept rows")
    ap.add_argument(
        "--results", type=Path, default=RESULTS, help="where the gathered rows, table and plot go"
    )
    ap.add_argument(
        "--overwrite", action="store_true", help="write over rows of another run already in --results"
    )
    ap.add_argument("--tiny", action="store_true", help="a smoke test: a few steps of a small network")
    ap.add_argument(
        "--against",
        type=Path,
        default=None,
        help="an earlier run's budget_curve_task901.jsonl: each method against it, paired by fold and seed",
    )
    a = ap.parse_args()
    a.store.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budgets = sorted({*a.budgets, 1, 4, 16})
    why = conflicting_rows(a.results / ROWS, store_rows(a.store, budgets), IDENTITY)
    if why and not a.overwrite:
        raise SystemExit(why)  # before hours of training, not after
    if not a.report:
        torch.set_num_threads(a.threads)
        runs = []
        for b in a.budgets:
            for mode in a.modes:
                samplers = a.samplers.split(",") if mode == "finetune" else ["ronas"]
                seeds = 1 if b >= 16 else a.seeds
                cfg = config(
                    a.data,
                    b,
                    mode,
                    a.store,
                    seeds,
                    samplers,
                    tiny=a.tiny,
                    folds=a.folds,
                    references=not a.no_references,
                )
                runs.append((cfg, functools.partial(_echo, f"x{b} {mode}")))
        run_benchmarks(runs)  # a row another process computes is waited for after all the others
    a.results.mkdir(parents=True, exist_ok=True)
    print(report(a.store, budgets, a.results, a.against, overwrite=a.overwrite))


if __name__ == "__main__":
    main()
