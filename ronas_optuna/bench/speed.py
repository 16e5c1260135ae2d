"""How fast this machine trains: the unit that carries a CPU-time budget from one machine to another.

A reference network gets the compute its search spent, measured on the budget clock
(:func:`~.fold.budget_clock`: the process's CPU time on the CPU). A CPU second is not the same
compute on every machine: one search took twice the CPU seconds on one CPU that it takes on another.
So each process times a fixed workload once (:func:`machine_speed`: training steps of the hand-made
reference, MONAI's DynUNet, on a synthetic 32³ batch of two, with the process's threads), a search
keeps its budget in those *units* as well as in seconds, and a reference trains for that many units
on a clock that counts in them (:func:`unit_clock`), on whatever machine it runs.
"""

from __future__ import annotations

import functools
import logging
import platform
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.msd import PreprocessedCase
from ..device import resolve_device
from ..errors import SettingsError
from ..trainer import PathTrainer

#: The calibration workload: one training step of DynUNet (nnU-Net's configuration) on this patch,
#: with this batch and these classes. Changing it changes the unit: budgets kept before would be
#: read in another unit, so it is fixed.
PATCH = (32, 32, 32)
BATCH = 2
CLASSES = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineSpeed:
    """A machine's processor, the torch threads of the measurement, and the budget-clock seconds one
    unit (one calibration step) takes there. An ``uncalibrated`` speed (no MONAI to run the
    calibration) counts a unit as a second of this machine: budgets stay in its seconds."""

    cpu: str
    threads: int
    s_per_unit: float
    calibrated: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def units(self, seconds: float) -> float:
        return seconds / self.s_per_unit

    def seconds(self, units: float) -> float:
        return units * self.s_per_unit

    def row_fields(self, units: float) -> dict[str, Any]:
        """What a row keeps of a budget of ``units`` counted here (nothing when uncalibrated)."""
        return {"budget_units": round(units, 3), "machine": self.to_dict()} if self.calibrated else {}


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_speed(
    device: str | torch.device,
    clock: Callable[[], float],
    *,
    steps: int = 6,
    warmup: int = 1,
) -> MachineSpeed:
    """Seconds on ``clock`` per calibration step: the median of ``steps`` timed steps, after
    ``warmup`` untimed ones (allocations, kernel selection)."""
    from .handmade import RECIPES, dynunet  # MONAI: the bench extra

    dev = resolve_device(device)
    rng = np.random.default_rng(0)
    size = tuple(2 * p for p in PATCH)
    cases = [
        PreprocessedCase(
            f"calibration_{i}",
            rng.standard_normal((1, *size)).astype(np.float32),
            rng.integers(0, CLASSES, size).astype(np.uint8),
            {},
        )
        for i in range(2)
    ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = dynunet(1, CLASSES, PATCH).to(dev).train()
        params = list(net.parameters())
        recipe = RECIPES["nnunet-sgd"]
        trainer = PathTrainer(params, cases, batch_size=BATCH, lr=recipe.lr, device=dev, optimizer="sgd")
        if warmup > 0:
            trainer.train(net, params, PATCH, warmup)
        times = []
        for i in range(steps):
            _sync(dev)
            t0 = clock()
            trainer.train(net, params, PATCH, 1, start=(warmup + i) * BATCH)
            _sync(dev)
            times.append(clock() - t0)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return MachineSpeed(name, torch.get_num_threads(), float(statistics.median(times)))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def machine_speed(device: str | torch.device) -> MachineSpeed:
    """This process's :class:`MachineSpeed` on ``device``'s budget clock, measured on first use
    (a few seconds) and kept for the process's torch threads."""
    from .fold import budget_clock

    dev = resolve_device(device)
    return _cached_speed(str(dev), torch.get_num_threads(), budget_clock(str(dev)))


@functools.cache
def _cached_speed(device: str, threads: int, clock: Callable[[], float]) -> MachineSpeed:
    return calibrate(device, clock)


def calibrate(device: str, clock: Callable[[], float]) -> MachineSpeed:
    """:func:`measure_speed`, or without MONAI (the ``bench`` extra) an uncalibrated speed, said
    once in the log: a benchmark without the hand-made reference still runs, in seconds."""
    try:
        return measure_speed(device, clock)
    except SettingsError as e:
        log.warning("budgets are kept in this machine's seconds, not in units that carry to another: %s", e)
        return MachineSpeed(cpu_name(), torch.get_num_threads(), 1.0, calibrated=False)


def unit_clock(device: str | torch.device) -> Callable[[], float]:
    """The budget clock read in units of this machine's :func:`machine_speed`."""
    from .fold import budget_clock

    clock, speed = budget_clock(str(resolve_device(device))), machine_speed(device)
    return lambda: speed.units(clock())


def budget_units(row: Mapping[str, Any], here: MachineSpeed) -> float:
    """The compute a search's ``row`` spent, in units: its ``budget_units``; a row kept before
    budgets had units, or read on an uncalibrated machine, by its seconds, taken as seconds of this
    machine (``here``)."""
    if "budget_units" in row and here.calibrated:
        return float(row["budget_units"])
    seconds = float(row.get("budget_s", float(row.get("search_s", 0.0)) + float(row.get("export_s", 0.0))))
    return here.units(seconds)
