"""What optuna-dashboard shows: study note, architecture diagrams, prediction overlays, the model.

Artifacts live in an ``optuna.artifacts.FileSystemArtifactStore``; by default a folder named
``<storage file stem>_artifacts`` beside a SQLite file
(:attr:`~ronas_optuna.storage.StorageURL.artifact_dir`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState
from torch import nn

from .attrs import ATTR_ARCH, ATTR_MEMORY
from .evaluator import Evaluator
from .space import Architecture, pool_factor, position
from .storage import StorageURL

if TYPE_CHECKING:
    from .plan import SearchPlan

_OP_COLOURS = {
    "conv3_d1": "#4c72b0",
    "conv3_d2": "#55a868",
    "conv3_d3": "#c44e52",
    "conv331": "#8172b2",
    "conv1": "#ccb974",
    "identity": "#dddddd",
}


def artifact_store(directory: str | os.PathLike[str]) -> FileSystemArtifactStore:
    Path(directory).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


def draw_architecture(arch: Architecture, path: str | os.PathLike[str], title: str = "") -> Path:
    """A U-shaped diagram: one box per op, pooling per stage, additive skips."""
    depth = arch.space.depth
    widths = arch.space.widths
    fig = Figure(figsize=(2.2 * (depth + 1) + 2, 1.2 * (depth + 1) + 1.5))
    ax = fig.subplots()
    ax.set_axis_off()

    def box(x: float, y: float, text: str, colour: str) -> None:
        ax.add_patch(Rectangle((x - 0.45, y - 0.28), 0.9, 0.56, color=colour, alpha=0.85))
        ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=7,
            color="white" if colour != "#dddddd" else "black",
        )

    for i in range(depth + 1):
        y = depth - i
        x0 = i * 0.6
        for j, key in enumerate((position("enc_conv1", i), position("enc_conv2", i))):
            op = str(arch[key])
            box(x0 + j, y, op, _OP_COLOURS.get(op, "gray"))
        ax.text(x0 - 0.6, y, f"L{i}\n{widths[i]}ch", ha="right", va="center", fontsize=7)
        if i > 0:
            f = "x".join(map(str, pool_factor(str(arch[position("down", i)]))))
            label = "no pooling" if arch[position("down", i)] == "none" else f"max-pool {f}"
            ax.annotate("", xy=(x0, y + 0.3), xytext=(x0 - 0.6, y + 0.7), arrowprops=dict(arrowstyle="->"))
            ax.text(x0 - 0.45, y + 0.5, label, fontsize=6)
        if i < depth:
            xd = 2 * (depth + 1) * 0.6 + 2.5 - i * 0.6
            op = str(arch[position("dec_conv", i)])
            box(xd, y, op, _OP_COLOURS.get(op, "gray"))
            if arch[position("skip", i)] == "add":
                ax.plot([x0 + 1.45, xd - 0.45], [y, y], "k--", lw=0.8)
                ax.text((x0 + xd) / 2 + 0.5, y + 0.08, "+ 1x1x1", fontsize=6, ha="center")
    ax.set_xlim(-1.8, 2 * (depth + 1) * 0.6 + 3.5)
    ax.set_ylim(-0.8, depth + 0.9)
    ax.set_title(title or f"{arch.code}  (act {arch.activation(0)})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def draw_overlay(
    image: np.ndarray, label: np.ndarray, pred: np.ndarray, path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Mid-slice (the axial slice with most foreground) of image, label and prediction."""
    fg = (label > 0).sum(axis=(0, 1))
    z = int(np.argmax(fg)) if fg.any() else label.shape[2] // 2
    img = image[0, :, :, z].T
    fig = Figure(figsize=(7, 3.6))
    axes = fig.subplots(1, 2)
    for ax, seg, name in zip(axes, (label, pred), ("label", "prediction")):
        ax.imshow(img, cmap="gray", origin="lower")
        masked = np.ma.masked_where(seg[:, :, z].T == 0, seg[:, :, z].T)
        ax.imshow(masked, cmap="tab10", alpha=0.45, origin="lower", vmin=0, vmax=9, interpolation="nearest")
        ax.set_title(f"{name} (slice z={z})", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def upload_trial_figures(
    trial: optuna.Trial,
    arch: Architecture,
    value: float,
    net: nn.Module,
    patch: tuple[int, int, int],
    evaluator: Evaluator,
    store: FileSystemArtifactStore,
) -> list[str]:
    """Architecture diagram and an overlay of ``net`` on the first validation case, attached to
    the running ``trial``."""
    ids = []
    with tempfile.TemporaryDirectory() as tmp:
        p = draw_architecture(
            arch,
            Path(tmp) / f"trial{trial.number}_architecture.png",
            f"trial {trial.number}: {arch.code}  Dice {value:.3f}",
        )
        ids.append(
            upload_artifact(
                artifact_store=store, file_path=str(p), study_or_trial=trial, mimetype="image/png"
            )
        )
        case = evaluator.cases[0]
        pred = evaluator.predict(net, case, patch, overlap=0.25)
        p = draw_overlay(
            case.image,
            case.label,
            pred,
            Path(tmp) / f"trial{trial.number}_overlay.png",
            f"trial {trial.number}, case {case.case_id}: label (left) and prediction (right)",
        )
        ids.append(
            upload_artifact(
                artifact_store=store, file_path=str(p), study_or_trial=trial, mimetype="image/png"
            )
        )
    return ids


class TrialFigures:
    """Objective hook: figures for every ``every``-th trial and for each new best trial.

    Trial artifacts can only be attached while the trial runs, so this is one of
    :class:`~ronas_optuna.NASObjective`'s ``hooks``, called just before the trial returns.
    """

    def __init__(self, evaluator: Evaluator, store: FileSystemArtifactStore, *, every: int = 10):
        self.evaluator, self.store, self.every = evaluator, store, every

    def __call__(
        self,
        trial: optuna.Trial,
        arch: Architecture,
        value: float,
        net: nn.Module,
        patch: tuple[int, int, int],
    ) -> None:
        best = _best_dice(trial.study)
        if best is None or value > best or (self.every and trial.number % self.every == 0):
            upload_trial_figures(trial, arch, value, net, patch, self.evaluator, self.store)


def _best_dice(study: optuna.Study) -> float | None:
    """The best validation Dice so far (the first objective), ``None`` before any."""
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def front_table(study: optuna.Study) -> list[str]:
    """Markdown rows of a two-objective study's Pareto front, cheapest first."""
    if not study._is_multi_objective():
        return []
    cost = study.metric_names[1] if study.metric_names else "cost"
    rows = [
        "## Pareto front",
        "",
        f"| trial | Dice | {cost} | memory GB | architecture |",
        "|---:|---:|---:|---:|---|",
    ]
    for t in sorted(study.best_trials, key=lambda t: (t.values[1], t.number)):
        memory = t.user_attrs.get(ATTR_MEMORY)
        rows.append(
            f"| {t.number} | {t.values[0]:.4f} | {t.values[1]:.4g} | "
            f"{'?' if memory is None else f'{memory:.4f}'} | `{t.user_attrs.get(ATTR_ARCH, '?')}` |"
        )
    return [*rows, ""]


def study_note(study: optuna.Study, plan: SearchPlan, space_table: str) -> str:
    """Markdown note: dataset, split, space, current best, the Pareto front of a two-objective
    study, how to reproduce."""
    s = plan.settings
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if done:
        best = max(done, key=lambda t: (t.values[0], -t.number))
        best_txt = (
            f"trial {best.number}: Dice **{best.values[0]:.4f}**, architecture "
            f"`{best.user_attrs.get(ATTR_ARCH, '?')}`"
        )
    else:
        best_txt = "no completed trial yet"
    return "\n".join(
        [
            f"# RONAS search `{study.study_name}`",
            "",
            f"- dataset: `{plan.data}` at spacing {plan.spacing} mm",
            f"- split: train {plan.train_ids}, validation {plan.val_ids}",
            f"- budget: {s.training.steps_per_trial} steps/trial, batch {s.data.batch_size}, "
            f"lr {s.training.lr}, seed {s.seed}",
            f"- memory budget: {s.objectives.memory_budget_gb} GB"
            if s.objectives.memory_budget_gb
            else "- memory budget: none",
            f"- objectives: {s.objectives.metrics}",
            f"- current best: {best_txt}",
            "",
            *front_table(study),
            "## Reproduce",
            "",
            f"`ronas search {plan.data} --storage <URL> --study {study.study_name}` (resumes; the plan is in "
            f"`{plan.run_dir}/plan.json`), then "
            f"`ronas export --storage <URL> --study {study.study_name} -o model.pt`.",
            "",
            "## Search space",
            "",
            space_table,
        ]
    )


def save_study_note(study: optuna.Study, plan: SearchPlan) -> None:
    from optuna_dashboard import save_note

    save_note(study, study_note(study, plan, plan.search_space().table()))


def upload_model(
    study: optuna.Study, model_path: str | os.PathLike[str], store: FileSystemArtifactStore
) -> str:
    """Attach the exported model file to the study (finished trials cannot take artifacts)."""
    return upload_artifact(
        artifact_store=store,
        file_path=str(model_path),
        study_or_trial=study,
        mimetype="application/octet-stream",
    )


def run_dashboard(storage: str, artifacts: str | None, host: str = "127.0.0.1", port: int = 8080) -> None:
    import optuna_dashboard

    where = StorageURL.parse(storage)
    store = artifact_store(artifacts or where.artifact_dir)
    target: str | optuna.storages.BaseStorage = where.url
    if where.journal:  # a journal file, opened from its snapshot as `ronas search` does
        target = where.open(create=False)
    optuna_dashboard.run_server(target, host=host, port=port, artifact_store=store)
