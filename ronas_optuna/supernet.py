"""The persistent shared-weight supernet: every candidate op, one path per forward.

Every weighted position (see :mod:`ronas_optuna.ops`) holds one module per choice.
``supernet(x, arch)`` runs only the chosen modules, so a step costs what the subnetwork alone costs;
:meth:`Supernet.derive` copies the chosen modules into a standalone :class:`~ronas_optuna.RONASNet`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .files import atomic_torch_save, cpu_copy, read_checkpoint
from .network import RONASNet, chosen_positions, unet_forward
from .ops import position_candidates
from .space import Architecture, SearchSpace

CHECKPOINT_FORMAT = "ronas_optuna.supernet/1"


class Supernet(nn.Module):
    """Shared weights of every architecture of a :class:`SearchSpace`.

    Args:
        space: The macro search space (from :meth:`SearchSpace.default`).
        in_channels: Input channels (modalities).
        num_classes: Output classes, background included.
        deep_supervision: In training mode return logits at ``ds_levels + 1`` resolutions.
        ds_levels: Number of lower-resolution deep-supervision heads.
    """

    def __init__(
        self,
        space: SearchSpace,
        in_channels: int,
        num_classes: int,
        *,
        deep_supervision: bool = True,
        ds_levels: int = 2,
    ):
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        self.space = space
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.ds_levels = ds_levels
        cands = position_candidates(space, in_channels, num_classes, ds_levels)
        self.candidates = nn.ModuleDict(
            {p: nn.ModuleDict({c: f() for c, f in fs.items()}) for p, fs in cands.items()}
        )

    # ------------------------------------------------------------------ running a path
    def _arch(self, arch: Architecture | Mapping[str, Any] | str) -> Architecture:
        if isinstance(arch, Architecture):
            if arch.space is not self.space and arch.space != self.space:
                raise ValueError("architecture belongs to another search space")
            return arch
        if isinstance(arch, str):
            return Architecture.from_code(self.space, arch)
        return Architecture.from_params(self.space, arch)

    def forward(
        self, x: torch.Tensor, arch: Architecture | Mapping[str, Any] | str
    ) -> torch.Tensor | list[torch.Tensor]:
        """Logits of ``arch`` (a list, full resolution first, in training with deep supervision)."""
        a = self._arch(arch)
        return unet_forward(
            x,
            a,
            lambda p, c: self._candidate(p, c),
            deep_supervision=self.deep_supervision and self.training,
            ds_levels=self.ds_levels,
        )

    def path(self, arch: Architecture | Mapping[str, Any] | str) -> SupernetPath:
        """``arch`` as a module that runs on these shared weights (no copy; see :meth:`derive`)."""
        return SupernetPath(self, self._arch(arch))

    def path_modules(self, arch: Architecture | Mapping[str, Any] | str) -> dict[str, nn.Module]:
        """The modules ``arch`` uses, keyed by position."""
        a = self._arch(arch)
        return {p: self._candidate(p, c) for p, c in chosen_positions(a, self.ds_levels).items()}

    def _candidate(self, position: str, choice: str) -> nn.Module:
        choices = self.candidates[position]
        assert isinstance(choices, nn.ModuleDict)
        return choices[choice]

    def path_parameters(self, arch: Architecture | Mapping[str, Any] | str) -> list[nn.Parameter]:
        return [p for m in self.path_modules(arch).values() for p in m.parameters()]

    def derive(self, arch: Architecture | Mapping[str, Any] | str) -> RONASNet:
        """A standalone network of ``arch`` holding copies of the shared weights."""
        a = self._arch(arch)
        net = RONASNet(
            self.space,
            a,
            self.in_channels,
            self.num_classes,
            deep_supervision=self.deep_supervision,
            ds_levels=self.ds_levels,
        )
        for p, m in self.path_modules(a).items():
            net.ops[p] = copy.deepcopy(m)
        return net.to(next(self.parameters()).device).train(self.training)

    # ------------------------------------------------------------------ checkpoints
    def config(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "deep_supervision": self.deep_supervision,
            "ds_levels": self.ds_levels,
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> None:
        """Write a checkpoint atomically (temporary file, fsync, ``os.replace``).

        A failure at any point leaves a previous checkpoint at ``path`` untouched.
        ``extra`` holds plain data (tensors, numbers, strings) saved beside the weights.
        """
        atomic_torch_save(self.checkpoint_payload(extra=extra), path)

    def checkpoint_payload(self, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What :meth:`save` writes, as CPU copies (safe to write while training goes on)."""
        return cpu_copy(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint(),
                "config": json.dumps(self.config()),
                "state_dict": self.state_dict(),
                "extra": dict(extra or {}),
            }
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        expect: Supernet | None = None,
        map_location: str | torch.device = "cpu",
    ) -> Supernet:
        """Load a checkpoint written by :meth:`save`.

        Args:
            path: The checkpoint file.
            expect: If given, refuse a checkpoint whose space or arguments differ from it.
            map_location: Where to put the tensors.

        Raises:
            CheckpointError: The file is missing, truncated, corrupt, or does not match.
        """
        return cls.load_checkpoint(path, expect=expect, map_location=map_location).net

    @classmethod
    def load_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        expect: Supernet | None = None,
        map_location: str | torch.device = "cpu",
    ) -> SupernetCheckpoint:
        """Like :meth:`load`, with the ``extra`` data saved beside the weights."""
        payload = read_checkpoint(path, map_location)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not a ronas_optuna supernet checkpoint")
        cfg = json.loads(payload["config"])
        net = cls(
            SearchSpace.from_dict(cfg["space"]),
            cfg["in_channels"],
            cfg["num_classes"],
            deep_supervision=cfg["deep_supervision"],
            ds_levels=cfg["ds_levels"],
        )
        if expect is not None and expect.fingerprint() != payload["fingerprint"]:
            raise CheckpointError(
                f"{path}: checkpoint was made for another search space or supernet configuration "
                f"(fingerprint {payload['fingerprint']}, expected {expect.fingerprint()})"
            )
        if net.fingerprint() != payload["fingerprint"]:
            raise CheckpointError(f"{path}: fingerprint does not match its own configuration")
        try:
            net.load_state_dict(payload["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the configuration: {e}") from None
        return SupernetCheckpoint(net, dict(payload.get("extra", {})))


class SupernetPath(nn.Module):
    """One architecture of a :class:`Supernet`, callable like a standalone network.

    It holds the supernet itself, not a copy: training it trains the shared weights, and
    ``train()``/``eval()`` switch the supernet's mode.
    """

    def __init__(self, supernet: Supernet, arch: Architecture):
        super().__init__()
        self.supernet = supernet
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.supernet(x, self.arch)

    def parameters_on_path(self) -> list[nn.Parameter]:
        return self.supernet.path_parameters(self.arch)


@dataclass
class SupernetCheckpoint:
    """A loaded supernet and the plain data saved beside its weights."""

    net: Supernet
    extra: dict[str, Any]
