"""The saved final network: a derived :class:`~ronas_optuna.network.RONASNet` with what it needs to
segment new volumes (preprocessing, patch size, labels), in one self-describing file.

Loading and predicting need only this module, the network and the preprocessing: not Optuna, the
objective or the search (``from ronas_optuna import FinalModel`` imports none of them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data.msd import Preprocessor
from .errors import CheckpointError
from .files import atomic_torch_save, read_checkpoint
from .network import RONASNet
from .space import Architecture

__all__ = ["MODEL_FORMAT", "FinalModel"]

MODEL_FORMAT = "ronas_optuna.model/1"


@dataclass
class FinalModel:
    """A derived network with everything needed to segment new volumes."""

    net: RONASNet
    preprocessor: Preprocessor
    patch_size: tuple[int, int, int]
    labels: dict[int, str]
    metrics: dict[str, Any]
    source: dict[str, Any]

    @property
    def arch(self) -> Architecture:
        return self.net.arch

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Atomic write; loadable with ``torch.load(weights_only=True)``."""
        payload = {
            "format": MODEL_FORMAT,
            "net": json.dumps(self.net.config()),
            "preprocessing": json.dumps(self.preprocessor.to_dict()),
            "patch_size": list(self.patch_size),
            "labels": json.dumps({str(k): v for k, v in self.labels.items()}),
            "metrics": json.dumps(self.metrics),
            "source": json.dumps(self.source),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }
        atomic_torch_save(payload, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FinalModel:
        payload = read_checkpoint(path)
        if payload.get("format") != MODEL_FORMAT:
            raise CheckpointError(f"{path}: not a ronas_optuna model file")
        try:
            config = json.loads(payload["net"])
            if not isinstance(config, dict):
                raise ValueError(f"'net' holds {config!r}, not a network description")
            patch = [int(v) for v in payload["patch_size"]]
            if len(patch) != 3 or min(patch) < 1:
                raise ValueError(f"patch size {patch} is not three positive sizes")
            net = RONASNet.from_config(config)
            net.load_state_dict(payload["state_dict"])
            return cls(
                net=net.eval(),
                preprocessor=Preprocessor.from_dict(json.loads(payload["preprocessing"])),
                patch_size=(patch[0], patch[1], patch[2]),
                labels={int(k): v for k, v in json.loads(payload["labels"]).items()},
                metrics=json.loads(payload["metrics"]),
                source=json.loads(payload["source"]),
            )
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: model file is incomplete or inconsistent ({reason})") from None
