"""Issue 12's levers, measured: held-out Dice of the derived network (no retraining) per lever.

Every lever is a ``SearchSettings`` change at the same total of shared-weight steps. Each runs
``ronas benchmark``'s RONAS study on every fold (Task901: leave-one-out) and seed; the table gives,
per lever, the mean held-out Dice with its 95% interval and the paired difference to ``base``.
Levers run in separate processes when ``--only`` splits them (``--report`` then joins the JSONs).

    python benchmarks/archive/levers.py ../shared/data/Task901_BrainTissueTemplates --out lever_runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna

from ronas_optuna import SearchSettings
from ronas_optuna.bench import README_SETTINGS, BenchmarkConfig, run_benchmark
from ronas_optuna.bench.stats import clustered, paired, verdict

#: The README benchmark's settings: 400 shared-weight steps per search.
BASE = README_SETTINGS.replace(finetune_steps=0)  # as measured: the fine-tuning was off then
#: name -> (trials, settings); every one trains 400 steps in all.
LEVERS: dict[str, tuple[int, SearchSettings]] = {
    "base": (150, BASE),
    "cosine": (150, BASE.replace(lr_schedule="cosine")),
    "exploit100": (100, BASE.replace(finetune_steps=100)),
    "cosine+exploit100": (100, BASE.replace(finetune_steps=100, lr_schedule="cosine")),
    "exploit200": (50, BASE.replace(finetune_steps=200)),
    "steps8": (37, BASE.replace(steps_per_trial=8)),
    "exploit100+anneal": (100, BASE.replace(finetune_steps=100, lr_schedule="anneal")),
    "exploit100+val": (100, BASE.replace(finetune_steps=100, finetune_data="train+val")),
    "exploit200+val": (50, BASE.replace(finetune_steps=200, finetune_data="train+val")),
}


def run(data: str, out: Path, names: list[str], folds: int, seeds: int) -> None:
    for name in names:
        trials, settings = LEVERS[name]
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        cfg = BenchmarkConfig(
            data=data,
            samplers=["ronas"],
            seeds=seeds,
            trials=trials,
            storage=f"sqlite:///{folder / 'levers.db'}",
            settings=settings,
            scratch_steps=0,
            hpo_trials=0,
            device="cpu",
            output=str(folder),
            folds=folds,
        )
        result = run_benchmark(cfg, echo=lambda m, n=name: print(f"[{n}] {m}", flush=True))
        (folder / "rows.json").write_text(json.dumps(result.rows, indent=1))


def report(out: Path) -> str:
    rows = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/rows.json"))}
    test = {n: {(r["fold"], r["seed"]): r["test_dice"] for r in rs} for n, rs in rows.items()}
    lines = [
        "| lever | trials (+ exploit) | folds | held-out Dice [95% CI over folds] | − base [95% CI] "
        "| verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in [n for n in LEVERS if n in test] + [n for n in test if n not in LEVERS]:
        iv = clustered(test[name])
        d = paired(test[name], test["base"]) if "base" in test and name != "base" else None
        per_fold = ", ".join(f"{v:.4f}" for _, v in sorted(test[name].items()))
        lines.append(
            f"| {name} | {rows[name][0]['trials']} | {iv.n} | {iv} ({per_fold}) | "
            f"{d if d is not None else '–'} | {'–' if d is None else verdict(d)} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--out", default="lever_runs")
    p.add_argument("--only", default=",".join(LEVERS), help="comma-separated levers to run")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--report", action="store_true", help="only join the finished runs' tables")
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(a.out)
    if not a.report:
        run(a.data, out, [n for n in a.only.split(",") if n], a.folds, a.seeds)
    print(report(out))


if __name__ == "__main__":
    main()
