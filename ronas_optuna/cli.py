"""The ``ronas`` command line (click)."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .data.msd import DataError
from .lock import RunFolderBusy
from .registry import sampler_names
from .settings import SearchSettings
from .supernet import CheckpointError

USER_ERRORS = (
    DataError,
    CheckpointError,
    RunFolderBusy,
    ValueError,
    FileNotFoundError,
    KeyError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into a one-line message and exit code 1 (no traceback); click's usage
    errors exit with 2; anything else is an internal error and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise click.ClickException(str(msg)) from None

    return wrapper


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per :class:`SearchSettings` field, with its default and help."""
    for f in reversed(SearchSettings.option_fields()):
        flag = "--" + f.name.replace("_", "-")
        low, high = f.metadata["min"], f.metadata["max"]
        kind = str(f.type).replace(" | None", "")
        if kind == "bool":
            fn = click.option(
                f"{flag}/--no-{flag[2:]}", default=f.default, show_default=True, help=f.metadata["help"]
            )(fn)
            continue
        if kind == "str":
            typ: Any = click.Choice(f.metadata["choices"])
        else:
            typ = {"int": click.IntRange(min=low, max=high), "float": float}[kind]
        fn = click.option(
            flag, type=typ, default=f.default, show_default=f.default is not None, help=f.metadata["help"]
        )(fn)
    return fn


def _settings(options: dict[str, Any]) -> SearchSettings:
    """Pop the settings' options out of a command's keyword arguments."""
    names = [f.name for f in SearchSettings.option_fields()]
    return SearchSettings(**{n: options.pop(n) for n in names})


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ronas_optuna")
def main() -> None:
    """RONAS: reinforcement-learning neural architecture search for 3D medical segmentation."""
    logging.basicConfig(format="ronas: %(message)s", level=logging.WARNING)


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
    storage: str,
    study_name: str,
    trials: int,
    total: int | None,
    timeout: float | None,
    sampler: str,
    device: str,
    run_dir: Path | None,
    override: bool,
    nproc: int,
    **options: Any,
) -> None:
    """Search architectures on DATA (an MSD folder); resumes when the study exists."""
    from .dashboard import default_artifact_dir
    from .distributed import init_team, rank_device, share_state
    from .runner import prepare, run_search, trials_to_run
    from .trainer import resolve_device

    _quiet_optuna()
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        _torchrun(nproc)
        return
    device = rank_device(device)
    team = init_team(resolve_device(device))
    if team is not None and not team.leader:
        _follow(team, device)
        return
    settings = _settings(options)
    ctx = click.get_current_context()
    if total is not None and ctx.get_parameter_source("trials") == ParameterSource.COMMANDLINE:
        raise click.UsageError("give --trials (this many more) or --total (until the study has this many)")
    resolve_device(device)
    if data is not None and not data.is_dir():
        raise click.BadParameter(f"{data}: not a folder", param_hint="DATA")
    explicit = [n for n in settings.to_dict() if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    try:
        study, plan = prepare(
            str(data) if data else None,
            storage,
            study_name,
            sampler=sampler,
            run_dir=run_dir,
            settings=settings,
            explicit=explicit,
            override=override,
        )
    except Exception:
        if team is not None:
            team.broadcast(("error",))  # the followers exit; this rank reports the error
        raise
    objective = None
    if team is not None:
        team.broadcast(("plan", plan.to_dict()))
        objective = plan.build(device=device, team=team)
        share_state(team, objective)
        study.set_user_attr("ronas:ranks", team.world)
        study.set_user_attr("ronas:global_batch_size", team.world * plan.settings.batch_size)
    done = len(study.trials)
    click.echo(f"study {study_name!r} in {storage}: {done} trial(s) so far; plan {plan.path}")
    n = trials_to_run(study, trials, total)
    bar, cb = _progress_callback(n or 0, "searching")
    try:
        with bar:
            run_search(
                study,
                plan,
                n,
                timeout=timeout,
                device=device,
                artifacts=default_artifact_dir(storage),
                callback=cb,
                objective=objective,
            )
    finally:
        if team is not None:
            team.stop()
    best = study.best_trial
    click.echo(
        f"best: trial {best.number}, Dice {best.value:.4f}, architecture {best.user_attrs.get('arch')}"
    )


def _torchrun(nproc: int) -> None:
    """Start this command again under torchrun with ``nproc`` ranks (without ``--nproc``)."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    code = subprocess.call([*cmd, "-m", "ronas_optuna", *args])
    if code:
        sys.exit(code)


def _follow(team: Any, device: str) -> None:
    """A follower rank: the leader's plan, its weights, then its commands until it stops."""
    from .distributed import follow, share_state
    from .plan import SearchPlan

    msg = team.broadcast()
    if msg[0] == "error":
        sys.exit(1)
    objective = SearchPlan.from_dict(msg[1]).build(device=device, checkpoint=False, team=team)
    share_state(team, objective)
    follow(team, objective)


# ------------------------------------------------------------------------------------ export
@main.command()
@click.option("--storage", required=True)
@click.option("--study", "study_name", required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--use", type=click.Choice(["best", "policy"]), default="best", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--mirror/--no-mirror", default=False, show_default=True, help="Mirroring TTA in the evaluation."
)
@user_errors
def export(storage: str, study_name: str, output: Path, use: str, device: str, mirror: bool) -> None:
    """Derive the final network of a study (shared weights, no retraining), evaluate, save."""
    from .dashboard import default_artifact_dir
    from .runner import export as do_export
    from .runner import load
    from .trainer import resolve_device

    _quiet_optuna()
    resolve_device(device)
    study, plan = load(storage, study_name)
    model = do_export(
        study, plan, output, device=device, use=use, mirror=mirror, artifacts=default_artifact_dir(storage)
    )
    click.echo(
        f"model {output}: architecture {model.arch.code}, validation Dice "
        f"{model.metrics['val_dice']:.4f} on {model.metrics['val_cases']}"
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
    from .final import FinalModel
    from .inference import group_modalities, output_paths, predict_files
    from .trainer import resolve_device

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
@click.option("--samplers", default=",".join(sampler_names()), show_default=True)
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--trials", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--storage", default="sqlite:///ronas_benchmark.db", show_default=True)
@click.option(
    "--scratch-steps",
    default=None,
    type=click.IntRange(min=0),
    help="Steps of each search's final architecture trained alone (default: the per-study total; 0: none).",
)
@click.option(
    "--hpo-trials",
    default=None,
    type=click.IntRange(min=0),
    help="Trials of the no-sharing TPE reference (0: skip).",
)
@click.option(
    "--folds",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rotate the held-out test cases over this many folds (the number of cases: leave-one-out).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds per search (every sampler gets the same wall time).",
)
@click.option(
    "--handmade/--no-handmade",
    default=False,
    show_default=True,
    help="Add MONAI DynUNet (nnU-Net defaults) trained for the RONAS search's time: CPU time on the CPU, "
    "wall time on a GPU (needs [bench]).",
)
@click.option("--handmade-lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--device", default="auto", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for table and plot (default: beside the storage).",
)
@settings_options
@user_errors
def benchmark(
    data: Path,
    samplers: str,
    seeds: int,
    trials: int,
    storage: str,
    scratch_steps: int | None,
    hpo_trials: int | None,
    folds: int,
    timeout: float | None,
    handmade: bool,
    handmade_lr: float,
    device: str,
    output: Path | None,
    **options: Any,
) -> None:
    """Compare samplers on the same shared-supernet objective (one study per sampler and seed)."""
    from .bench import BenchmarkConfig, run_benchmark
    from .trainer import resolve_device

    resolve_device(device)
    _quiet_optuna()
    cfg = BenchmarkConfig(
        data=str(data),
        samplers=[s.strip() for s in samplers.split(",") if s.strip()],
        seeds=seeds,
        trials=trials,
        storage=storage,
        settings=_settings(options),
        scratch_steps=scratch_steps,
        hpo_trials=hpo_trials,
        folds=folds,
        timeout=timeout,
        handmade=handmade,
        handmade_lr=handmade_lr,
        device=device,
        output=str(output) if output else None,
    )
    result = run_benchmark(cfg, echo=click.echo)
    click.echo(result.markdown)
    click.echo(f"table: {result.table_path}\nplot: {result.plot_path}")


# ------------------------------------------------------------------------------------ demo
@main.command()
@click.option("--storage", default="sqlite:///ronas_demo.db", show_default=True)
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
def demo(storage: str, study_name: str, seconds: float, trials: int, workdir: Path, device: str) -> None:
    """Synthetic dataset, a search on a time budget into SQLite, final model, a prediction (about 2
    minutes on 2 CPU cores)."""
    from .dashboard import default_artifact_dir
    from .data.synthetic import make_msd_dataset
    from .runner import export as do_export
    from .runner import prepare, run_search

    _quiet_optuna()
    t0 = time.perf_counter()
    data = workdir / "data"
    if not (data / "dataset.json").exists():
        make_msd_dataset(data, n_cases=6, shape=(48, 48, 32), n_classes=3, seed=0)
    click.echo(f"dataset: {data} (6 synthetic cases, 3 classes)")
    settings = SearchSettings(
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
        exploit_steps=150,  # the chosen path keeps training on all cases the search may use
    )
    study, plan = prepare(str(data), storage, study_name, sampler="ronas", settings=settings)
    artifacts = default_artifact_dir(storage)
    bar, cb = _progress_callback(trials, f"searching for up to {seconds:.0f} s")
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
    best = study.best_trial
    click.echo(
        f"search: {len(study.trials)} trials; best trial {best.number}: Dice {best.value:.4f} "
        f"({best.user_attrs.get('arch')})"
    )
    model = do_export(study, plan, plan.model_path, objective=objective, artifacts=artifacts)
    click.echo(
        f"final model (shared weights, no retraining): {plan.model_path}, validation Dice "
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


if __name__ == "__main__":
    main()
