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

from .attrs import STUDY_PLAN
from .data.msd import MSDDataset
from .data.patches import candidate_patch_sizes
from .files import atomic_write_text
from .settings import SearchSettings
from .space import SearchSpace, parse_patch

PLAN_ATTR = STUDY_PLAN


@dataclass
class SearchPlan:
    """Every setting of a search run: the user's settings and what follows from the dataset."""

    data: str
    run_dir: str
    spacing: list[float]
    patch_sizes: list[list[int]]
    train_ids: list[str]
    val_ids: list[str]
    in_channels: int
    num_classes: int
    settings: SearchSettings = field(default_factory=SearchSettings)
    space: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- construction
    @classmethod
    def resolve(
        cls,
        data: str | os.PathLike[str],
        run_dir: str | os.PathLike[str],
        settings: SearchSettings | None = None,
    ) -> SearchPlan:
        """Resolve a plan from a dataset (loads and caches the preprocessed cases)."""
        s = settings or SearchSettings()
        run_dir = Path(run_dir)
        ds = MSDDataset(data, spacing=s.data.spacing, cache_dir=run_dir / "cache")
        train_ids, val_ids = ds.split(s.data.val_fraction, seed=s.seed)
        space = space_for(ds, train_ids, s)
        return cls(
            data=str(Path(data).resolve()),
            run_dir=str(run_dir.resolve()),
            spacing=list(ds.preprocessor.spacing),
            patch_sizes=[list(parse_patch(str(c))) for c in space["patch"].choices],
            train_ids=train_ids,
            val_ids=val_ids,
            in_channels=ds.in_channels,
            num_classes=ds.num_classes,
            settings=s,
            space=space.to_dict(),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; the settings in their flat form (:meth:`SearchSettings.to_dict`)."""
        return {**asdict(self), "settings": self.settings.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchPlan:
        """A plan from :meth:`to_dict`, or from the flat layout of version 0.1 plans."""
        known = {f.name for f in fields(cls)} - {"settings"}
        if "settings" in d:
            settings = SearchSettings.from_dict(d["settings"])
        else:  # 0.1: settings beside the resolved fields; ``spacing`` there is the resolved one
            settings = SearchSettings.from_dict({k: v for k, v in d.items() if k != "spacing"})
        return cls(settings=settings, **{k: v for k, v in d.items() if k in known})

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
        atomic_write_text(self.path, self.to_json())
        if study is not None:
            study.set_user_attr(PLAN_ATTR, self.to_dict())

    @classmethod
    def from_study(cls, study: optuna.Study) -> SearchPlan | None:
        d = study.user_attrs.get(PLAN_ATTR)
        return None if d is None else cls.from_dict(d)

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)


def space_for(dataset: MSDDataset, train_ids: list[str], settings: SearchSettings) -> SearchSpace:
    """The default space of ``settings`` with patch sizes fitted to the training cases' median
    shape (the search's, a benchmark fold's)."""
    s = settings.space
    patches = candidate_patch_sizes(
        dataset.median_shape(train_ids), depth=s.depth, n=s.n_patch_sizes, max_voxels=s.max_patch_voxels
    )
    return SearchSpace.default(
        depth=s.depth, base_width=s.base_width, max_width=s.max_width, patch_sizes=patches
    )
