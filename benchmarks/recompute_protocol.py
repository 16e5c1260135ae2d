"""Recompute the Task901 fold tables with the evaluation protocol: the test volume is the unit.

Reads the per-run rows kept in ``benchmarks/results/`` (``folds_task901_seeds.csv``: every sampler,
DynUNet and the same architecture alone, controller temperature 1 and the fine-tuning's Adam kept;
``archive/results/exploit_variants_task901.jsonl``: the RONAS search with today's controller and
each way to end its fine-tuning) and prints, per method, the mean with a 95% interval over the 3
test volumes (seeds averaged within each), the hierarchical bootstrap (folds, then seeds), and the
paired differences with the same unit, beside the old interval that counted the 9 runs as
independent.

    python benchmarks/recompute_protocol.py > benchmarks/results/protocol_task901.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from ronas_optuna.bench.stats import Keyed, clustered, hierarchical_bootstrap, interval, paired, verdict

#: The kept CSV's methods: the samplers' runs ended the fine-tuning with the Adam state kept.
NAMES = {
    "ronas": "RONAS T=1, kept Adam",
    "tpe": "TPE, kept Adam",
    "random": "Random, kept Adam",
    "gp": "GP, kept Adam",
    "dynunet": "DynUNet (Adam 1e-3, same CPU time)",
}


def load(results: Path) -> dict[str, dict[tuple[int, int], float]]:
    """``method -> {(fold, seed): held-out Dice}`` from the kept rows."""
    methods: dict[str, dict[tuple[int, int], float]] = {}
    with open(results / "folds_task901_seeds.csv") as f:
        for r in csv.DictReader(f):
            key = (int(r["fold"]), int(r["seed"]))
            name = NAMES[r["sampler"]]
            methods.setdefault(name, {})[key] = float(r["test_dice"])
            if r["sampler"] == "ronas" and math.isfinite(float(r["scratch_test_dice"] or "nan")):
                methods.setdefault("RONAS T=1 arch alone, 400 steps", {})[key] = float(r["scratch_test_dice"])
    archived = results.parent / "archive" / "results"  # the finished fine-tuning experiment's rows
    for line in (archived / "exploit_variants_task901.jsonl").read_text().splitlines():
        r = json.loads(line)
        key = (int(r["fold"]), int(r["seed"]))
        steps = r.get("finetune_steps", r.get("exploit_steps", 200))  # the rows' name before the rename
        if steps != 200 or r["variant"] not in ("last", "fresh-adam"):
            continue
        name = {"last": "RONAS T=3, kept Adam", "fresh-adam": "RONAS T=3, fresh Adam (default)"}[r["variant"]]
        methods.setdefault(name, {})[key] = float(r["test_dice"])
        if "scratch_test_dice" in r and r["variant"] == "last":
            methods.setdefault("RONAS T=3 arch alone, 400 steps", {})[key] = float(r["scratch_test_dice"])
    return methods


def table(methods: dict[str, Keyed]) -> list[str]:
    lines = [
        "| method | runs | held-out Dice, mean of 3 test volumes | 95% CI over volumes (t, n = 3) "
        "| hierarchical bootstrap | old: 9 runs as independent |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, v in methods.items():
        c, b, old = clustered(v), hierarchical_bootstrap(v), interval(list(v.values()))
        lines.append(
            f"| {name} | {len(v)} | {c.mean:.4f} | [{c.low:.4f}, {c.high:.4f}] | [{b.low:.4f}, {b.high:.4f}] "
            f"| [{old.low:.4f}, {old.high:.4f}] |"
        )
    return lines


def differences(methods: dict[str, Keyed], first: str) -> list[str]:
    lines = [
        f"| {first} − | volumes | mean [95% CI over volumes] | verdict | bootstrap | old verdict (9 runs) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, v in methods.items():
        if name == first:
            continue
        d = paired(methods[first], v)
        keys = set(methods[first]) & set(v)
        diffs = {k: methods[first][k] - v[k] for k in keys}
        b = hierarchical_bootstrap(diffs)
        old = interval(list(diffs.values()))
        lines.append(
            f"| {name} | {d.n} | {d} | {verdict(d)} | [{b.low:.4f}, {b.high:.4f}] | {old} {verdict(old)} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    methods = load(a.results)
    print("# Task901, 3 folds x 3 seeds, recomputed with the test volume as the unit\n")
    print("\n".join(table(methods)))
    for first in ("RONAS T=3, fresh Adam (default)", "RONAS T=1, kept Adam"):
        print()
        print("\n".join(differences(methods, first)))


if __name__ == "__main__":
    main()
