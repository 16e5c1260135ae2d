"""One resolved configuration per search run, written to disk once and reused (like nnU-Net's plans).

``SearchPlan.resolve`` turns a dataset and a few options into every concrete setting (spacing, patch
candidates, widths, split, training budget, paths). The plan is saved as ``plan.json`` in the run
folder and as the study's ``ronas:plan`` user attr; resuming or exporting reads it back instead of
re-deriving anything, so a run is reproducible from its plan alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna

from .data.msd import DataError, MSDDataset
from .data.patches import candidate_patch_sizes
from .objective import NASObjective
from .space import SearchSpace
from .supernet import Supernet

PLAN_ATTR = "ronas:plan"


@dataclass
class SearchPlan:
    """Every setting of a search run; plain JSON."""

    data: str
    run_dir: str
    spacing: list[float]
    patch_sizes: list[list[int]]
    train_ids: list[str]
    val_ids: list[str]
    in_channels: int
    num_classes: int
    depth: int = 4
    base_width: int = 16
    max_width: int = 320
    steps_per_trial: int = 50
    batch_size: int = 2
    lr: float = 1e-3
    seed: int = 0
    amp: bool = True
    memory_budget_gb: float | None = None
    checkpoint_every: int = 5
    warmup_steps: int = 0
    num_workers: int = 0
    space: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- construction
    @classmethod
    def resolve(
        cls,
        data: str | os.PathLike[str],
        run_dir: str | os.PathLike[str],
        *,
        spacing: float | list[float] | None = None,
        depth: int = 4,
        base_width: int = 16,
        max_width: int = 320,
        n_patch_sizes: int = 3,
        max_patch_voxels: int = 128**3,
        val_fraction: float = 0.2,
        seed: int = 0,
        **train: Any,
    ) -> SearchPlan:
        """Resolve a plan from a dataset (loads and caches the preprocessed cases)."""
        run_dir = Path(run_dir)
        ds = MSDDataset(data, spacing=spacing, cache_dir=run_dir / "cache")
        train_ids, val_ids = ds.split(val_fraction, seed=seed)
        patches = candidate_patch_sizes(
            ds.median_shape(train_ids), depth=depth, n=n_patch_sizes, max_voxels=max_patch_voxels
        )
        space = SearchSpace.default(
            depth=depth, base_width=base_width, max_width=max_width, patch_sizes=patches
        )
        known = {f.name for f in fields(cls)}
        bad = [k for k in train if k not in known]
        if bad:
            raise ValueError(f"unknown plan option(s) {bad}")
        return cls(
            data=str(Path(data).resolve()),
            run_dir=str(run_dir.resolve()),
            spacing=list(ds.preprocessor.spacing),
            patch_sizes=[list(p) for p in patches],
            train_ids=train_ids,
            val_ids=val_ids,
            in_channels=ds.in_channels,
            num_classes=ds.num_classes,
            depth=depth,
            base_width=base_width,
            max_width=max_width,
            seed=seed,
            space=space.to_dict(),
            **train,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchPlan:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / "plan.json"

    @property
    def checkpoint(self) -> Path:
        return Path(self.run_dir) / "supernet.pt"

    @property
    def model_path(self) -> Path:
        return Path(self.run_dir) / "model.pt"

    def save(self, study: optuna.Study | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, self.path)
        if study is not None:
            study.set_user_attr(PLAN_ATTR, asdict(self))

    @classmethod
    def from_study(cls, study: optuna.Study) -> SearchPlan | None:
        d = study.user_attrs.get(PLAN_ATTR)
        return None if d is None else cls.from_dict(d)

    # ---------------------------------------------------------------- building
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)

    def build(self, *, device: str = "auto", checkpoint: bool = True) -> NASObjective:
        """Dataset, supernet (resumed from the checkpoint when it exists) and objective."""
        if not Path(self.data).is_dir():
            raise DataError(f"{self.data}: the plan's dataset folder no longer exists")
        ds = MSDDataset(self.data, spacing=self.spacing, cache_dir=Path(self.run_dir) / "cache")
        space = self.search_space()
        supernet = Supernet(space, self.in_channels, self.num_classes)
        return NASObjective(
            supernet,
            ds,
            train_ids=self.train_ids,
            val_ids=self.val_ids,
            steps_per_trial=self.steps_per_trial,
            batch_size=self.batch_size,
            lr=self.lr,
            amp=self.amp,
            checkpoint=self.checkpoint if checkpoint else None,
            checkpoint_every=self.checkpoint_every,
            device=device,
            seed=self.seed,
            memory_budget_gb=self.memory_budget_gb,
            num_workers=self.num_workers,
            warmup_steps=self.warmup_steps,
        )
