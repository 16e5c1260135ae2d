"""Quality against budget on a generated population: dozens of test subjects, a tuning split.

The budget curve of ``budget_curve.py`` (x1, x4, x16: about 400, 1,600 and 6,400 shared-weight steps)
run on a population of ``population.py``. The search trains and validates on the population's
``train`` subjects only (validation: the first train subject of each source case); every method is
scored on every subject of one other split:

* ``--on tuning``: the tuning subjects, on which defaults are chosen (``--variant``); never tested;
* ``--on test``: the test subjects, read only for the final curve, with the defaults fixed.

Columns as in ``budget_curve.py``: ``ronas`` (the default in-supernet fine-tuning), the same search
before its fine-tuning, the paper's mode (``paper``: no fine-tuning, a reward on fixed patches:
:data:`PAPER_RECIPE`), the fine-tuned run's architecture trained alone for the run's CPU time (``same
arch alone``), MONAI DynUNet for the same CPU time, and ``random`` with the same fine-tuning. Every
search (seed) is tested on every subject, so the unit is the subject crossed with the seed: intervals
and paired differences come from a two-way bootstrap over subjects and seeds
(:func:`ronas_optuna.bench.stats.crossed_bootstrap`), each difference with the design's minimum
detectable difference and its verdict under the pre-registered 0.01 non-inferiority margin
(``docs/benchmarks.md``).

One command generates the population if it is not there yet and runs the curve; ``--report``
gathers what every process kept into ``benchmarks/results/population_curve_<name>_<split>.*``, with
``*_kept.jsonl`` holding every stored result and every search's derived network whose twin is
still training (merged into the file already there: lines the store lacks stay), so that a fresh
checkout continues the benchmark (``--restore``) instead of running the finished parts again:

    python benchmarks/population_curve.py pop901 --source ../shared/data/Task901_BrainTissueTemplates \\
        --on tuning --budgets 1 --seeds 3 --store pc
    python benchmarks/population_curve.py pop901 --on tuning --report --store pc

``--status`` lists, for the same arguments, what is done, what is computing, how far each search
got and what has not started, and runs nothing.

A report adds rows to what ``--results`` holds but refuses to drop or change one (a store of another
configuration, or one not restored from the kept file): name another ``--results`` folder,
``--restore`` the kept file first, or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_curve import config
from population import SPLITS, Appearance, generate_population, read_splits

from ronas_optuna.bench import BenchmarkConfig, run_benchmarks
from ronas_optuna.bench.fold import CLAIM, DERIVED, claim_alive
from ronas_optuna.bench.handmade import training_progress
from ronas_optuna.bench.report import conflicting_rows
from ronas_optuna.bench.stats import crossed_bootstrap, margin_verdict
from ronas_optuna.controller import ControllerConfig
from ronas_optuna.settings import SearchSettings
from ronas_optuna.space import parse_patch

RESULTS = Path(__file__).resolve().parent / "results"
IDENTITY = ("budget", "mode", "variant", "sampler", "fold", "seed")  # one row of a report
MODES = ("finetune", "paper")
#: The paper's mode as this benchmark runs it: ``finetune_steps=0`` (``budget_curve.config``) and a
#: trial reward on 4 fixed patches per validation subject, chosen on the tuning split by the
#: pre-registered rule (docs/benchmarks.md, "a reward on fixed patches"); variants start from the
#: settings as they are, so the tuning rounds keep their keys.
PAPER_RECIPE = {"reward_patches": 4}
SPACE_KEYS = ("depth", "base_width", "max_width")  # what a row's architecture code needs besides its patch
MARGIN = 0.01  # pre-registered non-inferiority margin (Dice), docs/benchmarks.md
ORDER = ("ronas", "paper", "ronas before fine-tuning", "same arch alone", "dynunet", "random")
DIFFERENCES = (
    ("ronas", "dynunet"),
    ("paper", "dynunet"),
    ("paper", "same arch alone"),
    ("ronas before fine-tuning", "same arch alone"),
    ("ronas", "same arch alone"),
    ("ronas", "paper"),
    ("ronas", "random"),
    ("same arch alone", "dynunet"),  # the searched architecture against the hand-made one, both trained alone
)


def splits_for(pop: Path) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The search's training and validation subjects (validation: the first train subject of each
    source case) and the population's splits."""
    splits = read_splits(pop)
    subjects = json.loads((pop / "population.json").read_text())["subjects"]
    first: dict[str, str] = {}
    for sid in splits["train"]:
        first.setdefault(subjects[sid]["source"], sid)
    val = sorted(first.values())
    return [s for s in splits["train"] if s not in val], val, splits


def apply_variant(cfg: BenchmarkConfig, text: str) -> BenchmarkConfig:
    """``cfg`` with ``field=value[,field=value]`` applied: a field of SearchSettings, of
    BenchmarkConfig (``trials``, ``scratch_recipe``, ``handmade_recipe``) or of ControllerConfig (a name both
    SearchSettings and ControllerConfig have, such as ``lr``, is the policy's as ``controller.lr``)."""
    settings, controller = cfg.settings.to_dict(), []
    bench: dict[str, Any] = {}
    controller_fields = {f.name for f in dataclasses.fields(ControllerConfig)}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.startswith("controller."):  # ``lr`` is the shared weights'; ``controller.lr`` the policy's
            key, part = key.removeprefix("controller."), part.removeprefix("controller.")
            if key not in controller_fields:
                raise SystemExit(f"--variant {text!r}: unknown ControllerConfig field {key!r}")
            controller.append(part)
        elif key in settings:
            settings[key] = type(settings[key] if settings[key] is not None else 1.0)(value)
        elif key in ("scratch_recipe", "handmade_recipe"):
            bench[key] = value
        elif key == "trials":  # with a share of the budget moved, the same total steps
            bench[key] = int(value)
        elif key in controller_fields:
            controller.append(part)
        else:
            raise SystemExit(f"--variant {text!r}: unknown field {key!r}")
    return replace(
        cfg,
        settings=SearchSettings.from_dict(settings),
        controller=",".join(controller) or cfg.controller,
        **bench,
    )


def configs(a: argparse.Namespace, budget: int, mode: str, variant: str | None) -> list[BenchmarkConfig]:
    """The runs of one budget, mode and variant (one storage): RONAS with its references (DynUNet,
    the twin), then each other sampler alone (its twin would be read by nothing)."""
    samplers = a.samplers.split(",") if mode == "finetune" and variant is None else ["ronas"]
    out = [_config(a, budget, mode, variant, ["ronas"])] if "ronas" in samplers else []
    for other in (s for s in samplers if s != "ronas"):
        out.append(replace(_config(a, budget, mode, variant, [other]), scratch_steps=0))
    return out


def _config(
    a: argparse.Namespace, budget: int, mode: str, variant: str | None, samplers: list[str]
) -> BenchmarkConfig:
    train, val, splits = splits_for(a.population)
    tag = f"x{budget}_{mode}" + (f"[{variant}]" if variant else "")
    store = a.store / a.on
    store.mkdir(parents=True, exist_ok=True)
    cfg = config(str(a.population), budget, mode, store, a.seeds, samplers, tiny=a.tiny)
    cfg = replace(
        cfg,
        folds=1,
        train_ids=train,
        val_ids=val,
        test_ids=splits[a.on],
        curve_ids=splits["tuning"],  # the references' learning curves: never on test subjects
        handmade=cfg.handmade and variant is None,
        # a variant's twin only where the variant is the twin's recipe
        scratch_steps=cfg.scratch_steps if variant is None or "scratch_recipe" in variant else 0,
        storage=f"sqlite:///{store / (tag + '.db')}",
        output=str(store / tag),
        only_seeds=a.only_seeds,
    )
    if mode == "paper" and variant is None:
        cfg = replace(cfg, settings=cfg.settings.replace(**PAPER_RECIPE))
    if a.scratch_recipe:
        cfg = replace(cfg, scratch_recipe=a.scratch_recipe)
    # the pre-registered rule: DynUNet's recipe chosen on the validation subjects at every budget
    # (budget_curve.py fixes nnU-Net's SGD from x16 on, a choice made on Task901's volumes)
    cfg = replace(cfg, handmade_recipe=a.handmade_recipe or "auto")
    return apply_variant(cfg, variant) if variant else cfg


# ----------------------------------------------------------------------------- status
def status(store: Path, expected: list[tuple[str, str]]) -> list[str]:
    """One line per study of the store and per expected ``(database, study)`` not there yet: done
    (with its test Dice), searched (its twin to train), searching (trials so far), computing (a
    reference) or not started, with the process that holds it (a live claim) and how far a
    reference or twin has trained (its checkpoint). What a benchmark spread over sessions has left
    to do."""
    studies: dict[tuple[str, str], Any] = {}
    for path in sorted(store.glob("x*.db")):
        for s in optuna.get_all_study_summaries(f"sqlite:///{path}", include_best_trial=False):
            studies[(path.name, s.study_name)] = s
    lines = []
    for key in sorted(set(studies) | set(expected), key=_status_order):
        s = studies.get(key)
        attrs = s.user_attrs if s is not None else {}
        result = attrs.get("benchmark:result") or {}
        claim = attrs.get(CLAIM)
        held = ""
        if isinstance(claim, dict) and claim_alive(claim):
            held = f" (pid {claim.get('pid')} on {claim.get('host')})"
        checkpoints = store / key[0].removesuffix(".db") / "checkpoints"
        if "test_dice" in result:
            state = f"done: test Dice {result['test_dice']:.4f}"
        elif "recipe" in result:
            state = f"done: {result['recipe']} chosen on validation"
        elif DERIVED in attrs:
            twin = f"training{held}" if held else "to train"
            twin += _trained(checkpoints / f"{key[1]}-alone.pt")
            state = f"searched: test Dice {attrs[DERIVED]['test_dice']:.4f}; its twin {twin}"
        elif s is not None and s.n_trials:
            planned = (attrs.get("benchmark") or {}).get("trials")
            state = f"searching: {s.n_trials} of {planned or '?'} trials{held}"
        elif held:
            state = f"computing{held}{_trained(checkpoints / f'{key[1]}.pt')}"
        else:
            stopped = _trained(checkpoints / f"{key[1]}.pt")  # its process gone since
            state = f"stopped{stopped}, resumes from its checkpoint" if stopped else "not started"
        lines.append(f"{key[0].removesuffix('.db'):<16} {key[1]:<30} {state}")
    return lines


def _trained(checkpoint: Path) -> str:
    """``: 41% of its budget trained`` for a reference whose checkpoint is there (nothing without
    one; the budget is on its clock: seconds, or units of ``ronas_optuna.bench.speed``)."""
    progress = training_progress(checkpoint)
    if progress is None:
        return ""
    spent, budget = progress
    if budget is None or budget <= 0:
        return f": {spent:.0f} on its clock trained"
    return f": {100 * spent / budget:.0f}% of its budget trained"


def _status_order(key: tuple[str, str]) -> tuple[int, str, str]:
    db, study = key
    return int(db[1:].split("_")[0]), db, study


def expected_studies(a: argparse.Namespace) -> list[tuple[str, str]]:
    """The ``(database, study)`` pairs a run with these arguments computes (the default columns)."""
    seeds = a.only_seeds if a.only_seeds is not None else range(a.seeds)
    out = []
    for b in a.budgets:
        for mode in a.modes:
            samplers = a.samplers.split(",") if mode == "finetune" else ["ronas"]
            if mode == "finetune" and "ronas" in samplers:
                samplers = [*samplers, "dynunet"]
            out += [(f"x{b}_{mode}.db", f"bench-{m}-seed{s}") for m in samplers for s in seeds]
    return out


# ----------------------------------------------------------------------------- report
def kept_rows(store: Path) -> list[dict[str, Any]]:
    """Every finished row under ``store`` (one SQLite file per budget, mode and variant)."""
    rows = []
    for path in sorted(store.glob("x*.db")):
        tag = path.stem
        budget = int(tag[1:].split("_")[0])
        mode = tag.split("_")[1].split("[")[0]
        variant = tag[tag.index("[") + 1 : -1] if "[" in tag else None
        for s in optuna.get_all_study_summaries(f"sqlite:///{path}", include_best_trial=False):
            r = s.user_attrs.get("benchmark:result")
            if r and r.get("test_dice_cases"):
                settings = (s.user_attrs.get("benchmark") or {}).get("settings") or {}
                space = {k: settings[k] for k in SPACE_KEYS if k in settings}
                rows.append({**r, "budget": budget, "mode": mode, "variant": variant, "space": space})
    return rows


def kept_studies(store: Path) -> list[dict[str, Any]]:
    """Every study with a result under ``store``, as it is stored (references and the DynUNet recipe
    choice included), and every search whose derived network is kept (its twin still to train):
    what :func:`restore` needs to rebuild the store in another session."""
    out = []
    for path in sorted(store.glob("x*.db")):
        for s in optuna.get_all_study_summaries(f"sqlite:///{path}", include_best_trial=False):
            if "benchmark:result" in s.user_attrs or DERIVED in s.user_attrs:
                out.append({"db": path.name, "study": s.study_name, "attrs": s.user_attrs})
    return out


def merge_kept(path: Path, kept: list[dict[str, Any]]) -> None:
    """Write ``kept`` into the ``*_kept.jsonl`` at ``path`` without losing what it held: a study
    already there keeps its attributes, updated by the store's (a result added to a derived row),
    and a study the store lacks (a stage kept by another session or machine) stays as it was."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k = json.loads(line)
            merged[(k["db"], k["study"])] = k
    for k in kept:
        old = merged.get((k["db"], k["study"]), {"attrs": {}})
        merged[(k["db"], k["study"])] = {**k, "attrs": {**old["attrs"], **k["attrs"]}}
    path.write_text("".join(json.dumps(k) + "\n" for k in merged.values()))


def restore(kept: Path, store: Path) -> int:
    """Recreate the kept studies of a ``*_kept.jsonl`` file under ``store`` (those not there yet):
    a benchmark continued in a fresh checkout reuses every result instead of running it again."""
    store.mkdir(parents=True, exist_ok=True)
    made = 0
    for line in kept.read_text().splitlines():
        k = json.loads(line)
        url = f"sqlite:///{store / k['db']}"
        if (store / k["db"]).exists() and k["study"] in optuna.get_all_study_names(url):
            continue
        study = optuna.create_study(study_name=k["study"], storage=url, direction="maximize")
        # every attribute as it was kept (a later report writes them again), the result last: a
        # study with a result is a finished row
        for key in sorted(k["attrs"], key=lambda key: key == "benchmark:result"):
            study.set_user_attr(key, k["attrs"][key])
        made += 1
    return made


def method(row: dict[str, Any]) -> str:
    """A row's column: ``paper`` for the paper's mode, else its sampler, with its variant."""
    name = "paper" if row["mode"] == "paper" else row["sampler"]
    return f"{name}[{row['variant']}]" if row["variant"] else name


def by_method(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[tuple[str, int], float]]:
    """``(budget, method) -> {(subject, seed): Dice}``, with the derived columns split out."""
    out: dict[tuple[int, str], dict[tuple[str, int], float]] = {}

    def put(budget: int, method: str, seed: int, cases: dict[str, float]) -> None:
        out.setdefault((budget, method), {}).update({(c, seed): float(v) for c, v in cases.items()})

    for r in rows:
        put(r["budget"], method(r), r["seed"], r["test_dice_cases"])
        if r["sampler"] == "ronas" and r["mode"] == "finetune":
            tag = f"[{r['variant']}]" if r["variant"] else ""
            for column, key in (
                ("ronas before fine-tuning", "before_finetune_test_dice_cases"),
                ("same arch alone", "scratch_test_dice_cases"),
            ):
                put(r["budget"], column + tag, r["seed"], r.get(key) or {})
    return {k: v for k, v in out.items() if v}


def cpu_hours(rows: list[dict[str, Any]]) -> dict[tuple[int, str], float]:
    """Mean CPU-hours per run of each (budget, method) over its seeds, from the budget clock."""
    runs: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in rows:
        runs[(r["budget"], method(r))].append(float(r.get("budget_s", 0)) / 3600)
    return {k: sum(v) / len(v) for k, v in runs.items()}


def report(
    store: Path, name: str, results: Path, *, overwrite: bool = False, population: Path | None = None
) -> str:
    """Gather the kept rows into ``results``; refuse (SystemExit, one line) to drop or change rows a
    previous report wrote there unless ``overwrite`` (which also writes the kept file anew from the
    store; otherwise it only ever grows). With ``population`` (its ``dataset.json`` gives the
    channels and classes; a report from a store alone goes without) the report also lists each
    run's chosen architecture and its cost."""
    rows = kept_rows(store)
    if not overwrite and (why := conflicting_rows(results / f"{name}.jsonl", rows, IDENTITY)):
        raise SystemExit(why)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = results / f"{name}_kept.jsonl"
    if overwrite:
        kept.unlink(missing_ok=True)
    merge_kept(kept, kept_studies(store))
    values = by_method(rows)
    hours = cpu_hours(rows)
    budgets = sorted({b for b, _ in values})
    lines = [
        "| budget | method | seeds | subjects | CPU-h per run | Dice [95% CI over subjects and seeds] |",
        "|---|---|---:|---:|---:|---:|",
    ]
    methods = [m for m in ORDER] + sorted({m for _, m in values} - set(ORDER))
    for b in budgets:
        for m in methods:
            if (b, m) in values:
                d = crossed_bootstrap(values[(b, m)])
                h = hours.get((b, m), hours.get((b, "ronas"), math.nan))
                ci = f"{d.mean:.4f} [{d.low:.4f}, {d.high:.4f}]"
                lines.append(f"| x{b} | {m} | {d.seeds} | {d.subjects} | {h:.2f} | {ci} |")
    diffs = [
        "| budget | difference | seeds × subjects | mean [95% CI] | MDD (80% power) "
        f"| verdict (margin {MARGIN}) |",
        "|---|---|---:|---:|---:|---|",
    ]
    variants = sorted({m for _, m in values if "[" in m})
    pairs = list(DIFFERENCES) + [(v, v.split("[")[0]) for v in variants]
    for v in variants:  # a candidate on top of another variant: also against that variant alone
        head, parts = v.split("[")[0], v[v.index("[") + 1 : -1].split(",")
        bases = [f"{head}[{','.join(parts[:k])}]" for k in range(len(parts) - 1, 0, -1)]
        pairs += [(v, base) for base in bases if base in variants][:1]  # the longest one
    for b in budgets:
        for x, y in pairs:
            a, c = values.get((b, x), {}), values.get((b, y), {})
            d = crossed_bootstrap({k: a[k] - c[k] for k in set(a) & set(c)})
            if d.subjects:
                v = margin_verdict(d, MARGIN)
                diffs.append(f"| x{b} | {x} − {y} | {d.seeds} × {d.subjects} | {d} | {d.mdd:.4f} | {v} |")
    chosen = []
    if population is not None and (population / "dataset.json").is_file():
        info = json.loads((population / "dataset.json").read_text())
        chosen = architectures(rows, len(info["modality"]), len(info["labels"]))
    md = "\n".join([*lines, "", *diffs, *learning_curves(rows), *chosen]) + "\n"
    (results / f"{name}.md").write_text(md)
    population, split = name.removeprefix("population_curve_").rsplit("_", 1)
    title = f"population {population}, {split} subjects: Dice against budget"
    plot(values, hours, budgets, methods, results / f"{name}.png", title)
    return md


def architectures(rows: list[dict[str, Any]], in_channels: int, num_classes: int) -> list[str]:
    """Markdown: the architecture each run chose (DynUNet for the hand-made reference) and its
    forward GFLOP on one patch, per budget and column: what a run's CPU time went into."""
    cells: dict[tuple[int, str], list[tuple[float, str]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["seed"]):
        if not r.get("arch"):
            continue
        if r["sampler"] == "dynunet":  # "DynUNet 32x32x32, adam, 3870 steps"
            code = r["arch"].split(",")[0]
            patch = parse_patch(code.split()[-1])
            gflop = _dynunet_gflop(patch, in_channels, num_classes)
        elif r.get("space"):  # "32x32x32/Lpp.-ap.-ac.xcp|+p+o+p"
            code, patch = r["arch"], parse_patch(r["arch"].split("/")[0])
            space = tuple(sorted(r["space"].items()))
            gflop = _searched_gflop(space, code, patch, in_channels, num_classes)
        else:
            continue
        cells[(r["budget"], method(r))].append((gflop, code))
    if not cells:
        return []
    order = [*ORDER, *sorted({m for _, m in cells} - set(ORDER))]
    out = []
    for (b, m), runs in sorted(cells.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        gflop = ", ".join(f"{g:.1f}" for g, _ in runs)
        codes = ", ".join(dict.fromkeys(f"`{c}`".replace("|", "\\|") for _, c in runs))
        out.append(f"| x{b} | {m} | {gflop} | {codes} |")
    return [
        "",
        "| budget | column | forward GFLOP on one patch, each seed | chosen architectures |",
        "|---|---|---|---|",
        *out,
    ]


@functools.cache
def _searched_gflop(
    space: tuple[tuple[str, int], ...], code: str, patch: tuple[int, ...], in_channels: int, num_classes: int
) -> float:
    from ronas_optuna.measure import forward_flops
    from ronas_optuna.network import RONASNet
    from ronas_optuna.space import Architecture, SearchSpace

    sp = SearchSpace.default(**dict(space), patch_sizes=[patch])
    net = RONASNet(sp, Architecture.from_code(sp, code), in_channels, num_classes)
    return forward_flops(net, (1, in_channels, *patch)) / 1e9


@functools.cache
def _dynunet_gflop(patch: tuple[int, ...], in_channels: int, num_classes: int) -> float:
    from ronas_optuna.bench.handmade import dynunet
    from ronas_optuna.measure import forward_flops

    return forward_flops(dynunet(in_channels, num_classes, patch), (1, in_channels, *patch)) / 1e9


def learning_curves(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: the references' learning curves (Dice on the tuning subjects at each eighth of
    their budget, mean over seeds), to show whether each converged."""
    out = []
    for b in sorted({r["budget"] for r in rows}):
        for label, sampler, key in (
            ("DynUNet", "dynunet", "curve"),
            ("same arch alone", "ronas", "scratch_curve"),
        ):
            runs = [
                r.get(key) for r in rows if r["budget"] == b and r["sampler"] == sampler and not r["variant"]
            ]
            runs = [c for c in runs if c]
            if not runs:
                continue
            n = min(len(c) for c in runs)
            dice = [sum(c[i][1] for c in runs) / len(runs) for i in range(n)]
            steps = [sum(c[i][0] for c in runs) / len(runs) for i in range(n)]
            cells = ", ".join(f"{d:.3f}" for d in dice)
            out.append(f"| x{b} | {label} | {len(runs)} | {steps[-1]:.0f} | {cells} |")
    if not out:
        return []
    return [
        "",
        "| budget | reference | seeds | steps | tuning-subject Dice after each eighth of its budget |",
        "|---|---|---:|---:|---|",
        *out,
    ]


def plot(values: dict, hours: dict, budgets: list[int], methods: list[str], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    rows = (len(methods) + 1) // 2  # the legend, in two columns below the axes, grows with the methods
    fig = Figure(figsize=(8, 4.5 + 0.18 * rows))
    ax = fig.subplots()
    for i, m in enumerate(methods):
        pts = [(b, crossed_bootstrap(values[(b, m)], n_boot=2000)) for b in budgets if (b, m) in values]
        if not pts:
            continue
        xs = [hours.get((b, m), hours.get((b, "ronas"), 1.0)) * (1 + 0.02 * i) for b, _ in pts]
        ys = [d.mean for _, d in pts]
        err = [[d.mean - d.low for _, d in pts], [d.high - d.mean for _, d in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("CPU-hours per run (x1, x4, x16)")
    ax.set_ylabel("Dice (95% CI over subjects and seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, ncol=2, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.18 * rows / (4.5 + 0.18 * rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=110)


def _echo(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("population", type=Path, help="a population folder (population.py's output)")
    ap.add_argument("--source", type=Path, help="generate the population from this MSD dataset first")
    ap.add_argument("--test-source", type=Path, help="(with --source) the test subjects' MSD dataset")
    ap.add_argument("--counts", type=int, nargs=3, default=[6, 4, 8], metavar=("TRAIN", "TUNING", "TEST"))
    ap.add_argument("--difficulty", type=float, default=Appearance.difficulty)
    ap.add_argument("--spacing", type=float, default=Appearance.spacing, help="the population's grid (mm)")
    ap.add_argument(
        "--on", choices=("tuning", "test"), required=True, help="the split every method is scored on"
    )
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--samplers", default="ronas,random", help="samplers of the finetune mode")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--only-seeds", type=int, nargs="+", help="run only these seeds: one process per seed on one store"
    )
    ap.add_argument(
        "--variant", action="append", default=[], help="field=value[,field=value]: a RONAS column"
    )
    ap.add_argument("--no-default", action="store_true", help="run only the --variant columns")
    ap.add_argument("--scratch-recipe", choices=("search", "nnunet-sgd", "adam"))
    ap.add_argument(
        "--handmade-recipe", choices=("auto", "nnunet-sgd", "adam"), help="DynUNet's recipe (default: auto)"
    )
    ap.add_argument("--store", type=Path, default=Path("population_curve"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ap.add_argument("--report", action="store_true", help="only gather the kept rows")
    ap.add_argument(
        "--status", action="store_true", help="only list what is done and what is left (runs nothing)"
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--overwrite", action="store_true", help="write over rows of another run already in --results"
    )
    ap.add_argument("--tiny", action="store_true", help="a smoke test: a few steps of a small network")
    ap.add_argument(
        "--restore", type=Path, help="a report's *_kept.jsonl: reuse its results (a run continued elsewhere)"
    )
    a = ap.parse_args(argv)
    if a.source is not None and not (a.population / "splits.json").exists():
        counts = dict(zip(SPLITS, a.counts))
        generate_population(
            a.source,
            a.population,
            counts,
            appearance=replace(Appearance(), difficulty=a.difficulty, spacing=a.spacing),
            test_source=a.test_source,
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if a.restore is not None:
        print(f"{a.restore}: {restore(a.restore, a.store / a.on)} kept result(s) restored")
    if a.status:
        print("\n".join(status(a.store / a.on, expected_studies(a))))
        return
    name = f"population_curve_{a.population.name}_{a.on}"
    rows = kept_rows(a.store / a.on)
    if not a.overwrite and (why := conflicting_rows(a.results / f"{name}.jsonl", rows, IDENTITY)):
        raise SystemExit(why)  # before hours of training, not after
    if not a.report:
        torch.set_num_threads(a.threads)
        runs = []
        for b in a.budgets:
            for mode in a.modes:
                for variant in ([] if a.no_default else [None]) + a.variant:
                    tag = f"x{b} {mode}" + (f" [{variant}]" if variant else "")
                    echo = functools.partial(_echo, tag)
                    runs += [(cfg, echo) for cfg in configs(a, b, mode, variant)]
        run_benchmarks(runs)  # a row another process computes is waited for after all the others
    if not (a.population / "dataset.json").is_file():
        print(
            f"{a.population}: no dataset.json; the report goes without the architectures' costs",
            file=sys.stderr,
        )
    print(report(a.store / a.on, name, a.results, overwrite=a.overwrite, population=a.population))


if __name__ == "__main__":
    main()
