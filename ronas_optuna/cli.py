"""The ``ronas`` command line (click)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from . import lock

# Light modules only at import time: `ronas --help` and a usage error must not pay for torch.
from .attrs import ATTR_ARCH, ATTR_TIME, STUDY_GLOBAL_BATCH, STUDY_RANKS
from .bench.config import BenchmarkConfig
from .errors import UserError
from .launch import keep_rank_stderr, run_ranks
from .registry import sampler_names
from .settings import SearchSettings
from .storage import StorageURL, close_storages

if TYPE_CHECKING:
    import optuna

#: What the command line prints as one line (exit 1): the package's own errors, and the operating
#: system's word that a path the user named is missing, not allowed, or of the wrong kind. Any other
#: exception is a bug and keeps its traceback.
USER_ERRORS = (UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into a one-line message and exit code 1 (no traceback); click's usage
    errors exit with 2; anything else is an internal error and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def field_options(cls: type, *, skip: tuple[str, ...] = ()) -> Decorator:
    """One click option per field of dataclass ``cls`` declared with ``settings.option`` (its
    default, help and bounds; a class with ``option_fields()``, such as :class:`SearchSettings`,
    names its own, flat); a list field is a comma-separated option."""
    own = getattr(cls, "option_fields", None)
    pairs = own() if own is not None else [(f.name, f) for f in dataclasses.fields(cls)]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name, f in reversed(pairs):
            if "help" not in f.metadata or name in skip:
                continue
            fn = _option_for(name, f)(fn)
        return fn

    return decorate


def _option_for(name: str, f: dataclasses.Field[Any]) -> Decorator:
    flag, meta = "--" + name.replace("_", "-"), f.metadata
    kind = str(f.type).replace(" | None", "")
    default: Any = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    if kind == "bool":
        return click.option(f"{flag}/--no-{flag[2:]}", default=default, show_default=True, help=meta["help"])
    typ: Any
    if kind == "list[str]":
        typ, default = str, ",".join(default)
    elif kind == "str":
        typ = click.Choice(meta["choices"]) if meta["choices"] else str
    elif kind == "int":
        typ = click.IntRange(min=meta["min"], max=meta["max"])
    else:
        low = 0 if meta["positive"] else meta["min"]
        typ = click.FloatRange(min=low, max=meta["max"], min_open=bool(meta["positive"]))
    return click.option(flag, type=typ, default=default, show_default=default is not None, help=meta["help"])


def _help(cls: type, name: str) -> str:
    """The help text a dataclass field was declared with."""
    return str(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"])


@dataclasses.dataclass(frozen=True)
class TrainingLength:
    """How long ``--train-alone`` retrains: ``steps`` or ``seconds`` of wall-clock time (0: not)."""

    steps: int = 0
    seconds: float = 0.0

    @property
    def retrains(self) -> bool:
        return self.steps > 0 or self.seconds > 0


#: Seconds per unit of a duration on the command line.
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class _TrainingLengthType(click.ParamType):
    """``400`` (steps) or a duration with its unit: ``90s``, ``30m``, ``2h``."""

    name = "steps|duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> TrainingLength:
        if isinstance(value, TrainingLength):
            return value
        text = str(value).strip().lower()
        try:
            if text[-1:] in _UNITS:
                seconds = float(text[:-1]) * _UNITS[text[-1]]
                if seconds >= 0 and math.isfinite(seconds):
                    return TrainingLength(seconds=seconds)
            elif int(text) >= 0:
                return TrainingLength(steps=int(text))
        except ValueError:
            pass
        self.fail(f"{value!r} is neither a number of steps nor a duration such as 90s, 30m or 2h", param, ctx)


TRAINING_LENGTH = _TrainingLengthType()

settings_options = field_options(SearchSettings)


def _settings(options: dict[str, Any]) -> SearchSettings:
    """Pop the settings' options out of a command's keyword arguments."""
    names = [name for name, _ in SearchSettings.option_fields()]
    return SearchSettings.from_options(**{n: options.pop(n) for n in names})


def _storage_checked(create: bool) -> Callable[[click.Context, click.Parameter, str], StorageURL]:
    """A ``--storage`` callback: the value read once into a :class:`StorageURL`, refused for what
    :meth:`StorageURL.check` can tell before any heavy import (one line, exit code 1)."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> StorageURL:
        from .errors import StorageError

        try:
            return StorageURL.parse(value).check(create=create)
        except StorageError as e:
            raise click.ClickException(str(e)) from None

    return check


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ronas_optuna")
def main() -> None:
    """RONAS: reinforcement-learning neural architecture search for 3D medical segmentation."""
    logging.basicConfig(format="ronas: %(message)s", level=logging.WARNING)
    ctx = click.get_current_context()
    ctx.with_resource(lock.released_after())  # the run folders a command took are free when it returns
    ctx.call_on_close(close_storages)  # and its database files settled


# ------------------------------------------------------------------------------------ check-data
@main.command("check-data")
@click.argument("data", type=click.Path(path_type=Path))
def check_data(data: Path) -> None:
    """Validate an MSD dataset folder; non-zero exit code on any error."""
    from .data.check import check_dataset

    report = check_dataset(data)
    click.echo(report.format())
    if not report.ok:
        sys.exit(1)


# ------------------------------------------------------------------------------------ search
def _progress_callback(n: int, label: str) -> tuple[Any, Callable[..., None]]:
    bar = click.progressbar(length=n, label=label, show_pos=True, file=sys.stderr)

    def cb(study: Any, trial: Any) -> None:
        bar.update(1)

    return bar, cb


@main.command()
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option(
    "--storage",
    default="sqlite:///ronas.db",
    show_default=True,
    help="Optuna storage URL, or a journal file ending in .log.",
    callback=_storage_checked(create=True),
)
@click.option("--study", "study_name", default="ronas", show_default=True)
@click.option(
    "--trials", default=20, show_default=True, type=click.IntRange(min=1), help="Run this many more."
)
@click.option(
    "--total",
    type=click.IntRange(min=1),
    default=None,
    help="Run until the study has this many finished trials (replaces --trials; re-run after a crash "
    "to converge).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds: start no trial after this (stops at --trials or --timeout, whichever first).",
)
@click.option("--sampler", type=click.Choice(sampler_names()), default="ronas", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Plan, checkpoint and cache folder (default: <storage stem>_runs/<study>).",
)
@click.option(
    "--override",
    is_flag=True,
    help="On resume, let the given budget options (steps, lr, batch, ...) replace the plan's.",
)
@click.option(
    "--fresh-supernet",
    is_flag=True,
    help="Start the shared weights over: the run's checkpoints are renamed aside (kept), the study's "
    "trials are not touched. For a run whose checkpoints are all unreadable.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Data-parallel ranks on this machine (starts torchrun); each trains --batch-size patches per step.",
)
@settings_options
@user_errors
def search(
    data: Path | None,
    storage: StorageURL,
    study_name: str,
    trials: int,
    total: int | None,
    timeout: float | None,
    sampler: str,
    device: str,
    run_dir: Path | None,
    override: bool,
    fresh_supernet: bool,
    nproc: int,
    **options: Any,
) -> None:
    """Search architectures on DATA (an MSD folder); resumes when the study exists."""
    ctx = click.get_current_context()
    if total is not None and ctx.get_parameter_source("trials") == ParameterSource.COMMANDLINE:
        raise click.UsageError("give --trials (this many more) or --total (until the study has this many)")
    if data is not None and not data.is_dir():
        raise click.BadParameter(f"{data}: not a folder", param_hint="DATA")
    settings = _settings(options)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        code, line = run_ranks(nproc, sys.argv[1:])
        if line:
            click.echo(line, err=True)
        if code:
            sys.exit(code)
        return
    keep_rank_stderr()
    _quiet_optuna()
    from .device import rank_device, resolve_device
    from .team import init_team

    device = rank_device(device)
    team = init_team(resolve_device(device))
    if team is not None and not team.leader:
        _follow(team, device)
        return
    given = ParameterSource.COMMANDLINE
    explicit = [n for n in settings.to_dict() if ctx.get_parameter_source(n) == given]
    study, plan, objective = _lead(
        team,
        data,
        storage,
        study_name,
        sampler,
        run_dir,
        settings,
        explicit,
        override,
        device,
        fresh_supernet,
    )
    click.echo(f"study {study_name!r} in {storage}: {len(study.trials)} trial(s) so far; plan {plan.path}")
    _search(study, plan, objective, team, trials, total, timeout, device, storage)
    click.echo(_best_line(study))


def _best_line(study: optuna.Study) -> str:
    """The best trial by validation Dice, and the size of the front of a two-objective study."""
    from .final import best_trial

    best = best_trial(study)
    line = (
        f"best: trial {best.number}, Dice {best.values[0]:.4f}, architecture {best.user_attrs.get(ATTR_ARCH)}"
    )
    if study._is_multi_objective():
        line += f"; Pareto front: {len(study.best_trials)} trial(s) (ronas export --pareto DIR writes them)"
    return line


def _lead(
    team: Any,
    data: Path | None,
    storage: StorageURL,
    study_name: str,
    sampler: str,
    run_dir: Path | None,
    settings: SearchSettings,
    explicit: list[str],
    override: bool,
    device: str,
    fresh_supernet: bool = False,
) -> tuple[Any, Any, Any]:
    """The leader's study and plan, and in a data-parallel job the objective every rank shares."""
    from .distributed import plan_failed, start_leader
    from .runner import build_objective
    from .search import create_search

    try:
        search = create_search(
            data,
            storage=storage,
            study_name=study_name,
            settings=settings,
            sampler=sampler,
            run_dir=run_dir,
            override=override,
            explicit=explicit,
        )
        study, plan = search.study, search.plan
    except Exception:
        plan_failed(team)
        raise
    if fresh_supernet:
        from .runner import set_aside_checkpoints

        for moved in set_aside_checkpoints(plan):
            click.echo(f"set aside {moved}; the shared weights start over")
    if team is None:
        return study, plan, None
    objective = start_leader(team, plan.to_dict(), lambda: build_objective(plan, device=device, team=team))
    study.set_user_attr(STUDY_RANKS, team.world)
    study.set_user_attr(STUDY_GLOBAL_BATCH, team.world * plan.settings.data.batch_size)
    return study, plan, objective


def _search(
    study: Any,
    plan: Any,
    objective: Any,
    team: Any,
    trials: int,
    total: int | None,
    timeout: float | None,
    device: str,
    storage: StorageURL,
) -> None:
    """Run the trials with a progress bar; releases the followers at the end."""
    from .runner import run_search, trials_to_run

    n = trials_to_run(study, trials, total)
    bar, cb = _progress_callback(n or 0, "searching")
    before = len(study.get_trials(deepcopy=False))
    try:
        with bar:
            run_search(
                study,
                plan,
                n,
                timeout=timeout,
                device=device,
                artifacts=storage.artifact_dir,
                callback=cb,
                objective=objective,
            )
    finally:
        if team is not None:
            from .distributed import stop

            stop(team)
            team.close()
    note = _warmup_note(study.get_trials(deepcopy=False)[before:], timeout) if timeout is not None else ""
    if note:
        click.echo(note)


def _follow(team: Any, device: str) -> None:
    """A follower rank: the leader's plan, its weights, then its commands until it stops."""
    from .distributed import run_follower
    from .plan import SearchPlan
    from .runner import build_objective

    def build(plan: dict[str, Any]) -> Any:
        return build_objective(SearchPlan.from_dict(plan), device=device, checkpoint=False, team=team)

    run_follower(team, build)


# ------------------------------------------------------------------------------------ export
@main.command()
@click.option("--storage", required=True, callback=_storage_checked(create=False))
@click.option("--study", "study_name", required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The model file (not with --pareto).")
@click.option("--use", type=click.Choice(["best", "policy"]), default="best", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--mirror/--no-mirror", default=False, show_default=True, help="Mirroring TTA in the evaluation."
)
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0, min_open=True),
    help="GB: the best network whose measured training step fits.",
)
@click.option(
    "--max-latency",
    type=click.FloatRange(min=0, min_open=True),
    help="ms per patch: the best network whose measured latency fits (searches with dice,latency).",
)
@click.option(
    "--pareto",
    type=click.Path(path_type=Path),
    help="Folder: one model per Pareto-front member of a two-objective study, with front.json.",
)
@click.option(
    "--train-alone",
    "train_alone",
    metavar="STEPS|DURATION",
    type=TRAINING_LENGTH,
    default="0",
    show_default=True,
    help="Retrain: the chosen architecture as a new network trained alone, from scratch, for STEPS "
    "steps or for a wall-clock DURATION (90s, 30m, 2h: e.g. as long as the search took) with the "
    "search's optimizer and batch on the fine-tuning's cases, instead of its shared weights. 0 "
    "keeps the shared weights.",
)
@user_errors
def export(
    storage: StorageURL,
    study_name: str,
    output: Path | None,
    use: str,
    device: str,
    mirror: bool,
    max_memory: float | None,
    max_latency: float | None,
    pareto: Path | None,
    train_alone: TrainingLength,
) -> None:
    """Derive the final network of a study from its shared weights (or retrain it alone), evaluate, save.

    With --use best, the top trials' architectures are re-validated with the shared weights as the
    search left them, beside the best trial's own weights as they were when it scored (a snapshot);
    whichever scores higher on the validation cases is saved, and the model file says which
    (source.weights: shared or snapshot). --use policy takes the controller's most likely
    architecture with the shared weights. --train-alone STEPS (or 30m) retrains the chosen
    architecture from scratch instead (source.weights: trained alone).
    """
    from .device import resolve_device
    from .limits import Limits
    from .runner import export as do_export
    from .runner import export_front, load

    if (output is None) == (pareto is None):
        raise click.UsageError("give -o MODEL or --pareto DIR (one of them)")
    limits = Limits(max_memory, max_latency) if max_memory or max_latency else None
    if pareto is not None and (limits is not None or use != "best" or train_alone.retrains):
        raise click.UsageError(
            "--pareto writes the whole front; --max-memory, --max-latency, --use and --train-alone "
            "do not apply"
        )
    if limits is not None and use != "best":
        raise click.UsageError("--max-memory and --max-latency pick among the trials: use --use best")
    _quiet_optuna()
    resolve_device(device)
    study, plan = load(storage, study_name)
    if pareto is not None:
        models = export_front(study, plan, pareto, device=device, mirror=mirror)
        for m in models:
            click.echo(
                f"{pareto / m.source['file']}: {m.arch.code}, validation Dice "
                f"{m.metrics['val_dice']:.4f}, {m.metrics['memory_gb']:.3f} GB "
                f"({m.metrics['memory_method']})"
            )
        click.echo(f"{len(models)} model(s) and {pareto / 'front.json'}")
        return
    assert output is not None
    model = do_export(
        study,
        plan,
        output,
        device=device,
        use=use,
        mirror=mirror,
        artifacts=storage.artifact_dir,
        limits=limits,
        train_alone=train_alone.steps,
        train_alone_seconds=train_alone.seconds,
    )
    alone = ""
    if train_alone.retrains:
        alone = f"trained alone for {model.metrics['train_alone_steps']} steps "
        alone += f"({model.metrics['train_alone_seconds']:.0f} s), "
    seen = " (trained on too: not held out)" if model.source.get("trained_on") == "train+val" else ""
    click.echo(
        f"model {output}: architecture {model.arch.code}, {alone}validation Dice "
        f"{model.metrics['val_dice']:.4f} on {model.metrics['val_cases']}{seen}, "
        f"{model.metrics['memory_gb']:.3f} GB per training step ({model.metrics['memory_method']})"
    )
    if model.source.get("beside_running_search"):
        click.echo(
            f"the search is still running: weights from its newest checkpoint, after "
            f"{model.source['checkpoint_trials']} trial(s)"
        )


# ------------------------------------------------------------------------------------ predict
@main.command()
@click.argument("model", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--overlap", default=0.5, show_default=True, type=click.FloatRange(0, 0.95))
@click.option("--mirror/--no-mirror", default=False, show_default=True, help="Mirroring TTA.")
@click.option("--device", default="auto", show_default=True)
@user_errors
def predict(
    model: Path, inputs: tuple[Path, ...], output: Path, overlap: float, mirror: bool, device: str
) -> None:
    """Segment NIfTI INPUTS with MODEL; labels keep each input's affine and shape."""
    from .device import resolve_device
    from .inference import group_modalities, output_paths, predict_files
    from .model import FinalModel

    dev = resolve_device(device)
    m = FinalModel.load(model)
    cases = group_modalities(inputs) if m.net.in_channels > 1 else [[p] for p in inputs]
    output_paths(cases, output)  # refuse to replace an input before any work
    with click.progressbar(length=len(cases), label="predicting", file=sys.stderr) as bar:
        written = predict_files(
            m.net,
            m.preprocessor,
            m.patch_size,
            cases,
            output,
            num_classes=m.net.num_classes,
            overlap=overlap,
            mirror=mirror,
            device=dev,
            progress=lambda _: bar.update(1),
        )
    for w in written:
        click.echo(str(w))


# ------------------------------------------------------------------------------------ dashboard
@main.command()
@click.option("--storage", required=True)
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    default=None,
    help="Artifact folder (default: <storage stem>_artifacts beside the database).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@user_errors
def dashboard(storage: str, artifacts: Path | None, host: str, port: int) -> None:
    """Start optuna-dashboard with the artifact store wired."""
    from .dashboard import run_dashboard

    run_dashboard(storage, str(artifacts) if artifacts else None, host=host, port=port)


# ------------------------------------------------------------------------------------ benchmark
@main.command()
@click.argument("data", type=click.Path(path_type=Path, exists=True, file_okay=False))
@field_options(BenchmarkConfig, skip=("output",))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None, help=_help(BenchmarkConfig, "output")
)
@settings_options
@user_errors
def benchmark(data: Path, samplers: str, output: Path | None, **options: Any) -> None:
    """Compare samplers on the same shared-supernet objective (one study per sampler and seed); with
    --objectives dice,memory, by the held-out hypervolume of their fronts."""
    from .bench.compare import run_benchmark
    from .bench.pareto import run_pareto_benchmark
    from .device import resolve_device

    settings = _settings(options)
    resolve_device(options["device"])
    _quiet_optuna()
    cfg = BenchmarkConfig(
        data=str(data),
        samplers=[s.strip() for s in samplers.split(",") if s.strip()],
        settings=settings,
        output=str(output) if output else None,
        **options,
    )
    run = run_pareto_benchmark if "," in settings.objectives.metrics else run_benchmark
    result = run(cfg, echo=click.echo)
    click.echo(result.markdown)
    click.echo(f"table: {result.table_path}\nplot: {result.plot_path}")


# ------------------------------------------------------------------------------------ demo
@main.command()
@click.option(
    "--storage", default="sqlite:///ronas_demo.db", show_default=True, callback=_storage_checked(create=True)
)
@click.option("--study", "study_name", default="demo", show_default=True)
@click.option(
    "--seconds",
    default=90.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Search budget (warm-up and trials; no trial starts after it).",
)
@click.option("--trials", default=60, show_default=True, type=click.IntRange(min=1), help="Trial cap.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("ronas_demo"),
    show_default=True,
    help="Where the synthetic dataset and predictions go.",
)
@click.option("--device", default="auto", show_default=True)
@user_errors
def demo(
    storage: StorageURL, study_name: str, seconds: float, trials: int, workdir: Path, device: str
) -> None:
    """Synthetic dataset, a search on a time budget into SQLite, final model, a prediction (about 2
    minutes on 2 CPU cores)."""
    from .data.synthetic import make_msd_dataset
    from .runner import export as do_export
    from .runner import prepare, run_search

    _quiet_optuna()
    t0 = time.perf_counter()
    data = workdir / "data"
    if not (data / "dataset.json").exists():
        make_msd_dataset(data, n_cases=6, shape=(48, 48, 32), n_classes=3, seed=0)
    click.echo(f"dataset: {data} (6 synthetic cases, 3 classes)")
    settings = SearchSettings.from_options(
        spacing=1.5,
        depth=3,
        base_width=8,
        max_width=32,
        n_patch_sizes=2,
        steps_per_trial=30,
        batch_size=2,
        lr=1e-2,
        seed=0,
        warmup_steps=300,
        finetune_steps=150,  # the chosen path keeps training on all cases the search may use
    )
    study, plan = prepare(str(data), storage, study_name, sampler="ronas", settings=settings)
    artifacts = storage.artifact_dir
    bar, cb = _progress_callback(trials, f"searching for up to {seconds:.0f} s")
    before = len(study.get_trials(deepcopy=False))
    with bar:
        objective = run_search(
            study,
            plan,
            trials,
            timeout=seconds,
            device=device,
            artifacts=artifacts,
            figures_every=8,
            callback=cb,
        )
    click.echo(f"search: {len(study.trials)} trials; {_best_line(study)}")
    note = _warmup_note(study.get_trials(deepcopy=False)[before:], seconds, "--seconds")
    if note:
        click.echo(note)
    model = do_export(study, plan, plan.model_path, objective=objective, artifacts=artifacts)
    click.echo(
        f"final model (shared weights after in-supernet fine-tuning, never retrained alone): "
        f"{plan.model_path}, validation Dice "
        f"{model.metrics['val_dice']:.4f} with full sliding-window inference"
    )
    from .inference import predict_files

    assert objective.dataset is not None  # built from the plan's dataset
    case = objective.dataset.cases[0]
    out = predict_files(
        model.net,
        model.preprocessor,
        model.patch_size,
        [str(case.images[0])],
        workdir / "predictions",
        num_classes=model.net.num_classes,
    )
    click.echo(f"prediction: {out[0]} (same affine and shape as {case.images[0]})")
    click.echo(f"done in {time.perf_counter() - t0:.0f} s")
    click.echo(f"inspect: ronas dashboard --storage {storage}   (artifacts in {artifacts})")


def _warmup_note(trials: list[Any], seconds: float, flag: str = "--timeout") -> str:
    """A line when the warm-up took most of a time budget (``ronas demo --seconds``, ``ronas search
    --timeout``; a slow or busy machine): the search then had few trials, which the user should know
    and can change."""
    warmup = sum(float((t.user_attrs.get(ATTR_TIME) or {}).get("warmup", 0.0)) for t in trials)
    if warmup <= seconds / 2:
        return ""
    took = f"{warmup:.0f}" if warmup >= 10 else f"{warmup:.1f}"
    return (
        f"note: the warm-up took {took} s of the {seconds:g}-second budget on this machine, leaving "
        f"little for the trials; {flag} {math.ceil(seconds + warmup)} gives them about what they would "
        "have had"
    )


if __name__ == "__main__":
    main()
