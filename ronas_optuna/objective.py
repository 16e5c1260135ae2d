"""One NAS trial: draw an architecture, train the shared weights along it, validate, report.

The supernet and its Adam state persist across trials (and, through atomic checkpoints, across
processes). A failing trial (non-finite loss, CUDA out-of-memory, a bad case) returns NaN, which
Optuna records as FAIL; its reason is in the ``fail_reason`` user attr, the weights and optimizer
state along its path are restored to what they were before it, and the study goes on.

Memory budget (the paper's resource awareness): when ``memory_budget_gb`` is set, an architecture
whose estimated training-step memory exceeds it is not trained. The trial completes with the value
``budget_penalty`` (default 0.0, the Dice of a network that finds nothing), the excess in GB is stored
as Optuna's constraint (``trial.set_constraint("memory_gb", ...)`` on Optuna 5, which TPE and GP
read; :func:`constraints_func` for older versions), so the RL controller receives the penalty as its reward and learns to stay
inside the budget.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from .data.msd import MSDDataset, PreprocessedCase
from .data.patches import PatchDataset, foreground_locations, make_loader
from .inference import sliding_window
from .losses import deep_supervision_loss, dice_per_class
from .space import Architecture
from .supernet import CheckpointError, Supernet, measure_peak_memory

#: User-attr keys written per trial (namespaced like Optuna's system attrs).
ATTR_ARCH = "arch"
ATTR_FAIL = "fail_reason"
CONSTRAINTS_KEY = "constraints"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def constraints_func(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """For ``TPESampler(constraints_func=...)``: the memory-budget excess (GB), <= 0 is feasible."""
    return trial.user_attrs.get(CONSTRAINTS_KEY, [0.0])


class TrialFailure(RuntimeError):
    """Raised inside a trial for a recoverable failure; the trial becomes FAIL."""


class NASObjective:
    """The search objective: callable on an Optuna trial, returns validation Dice.

    Args:
        supernet: The shared weights (its space defines the architecture).
        dataset: The preprocessed dataset.
        train_ids: Training case ids (default: ``dataset.split(seed=seed)``).
        val_ids: Validation case ids, the same for every trial and every sampler.
        steps_per_trial: Optimiser steps along the sampled path per trial.
        batch_size: Patches per step.
        lr: Adam learning rate of the shared weights.
        weight_decay: Adam weight decay.
        patch_size: Patch size when the space has no ``patch`` decision.
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler).
        checkpoint: Supernet checkpoint path; loaded at start when it matches the supernet,
            written atomically every ``checkpoint_every`` trials and by :meth:`save`.
        checkpoint_every: Trials between checkpoints.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        seed: Seeds the patch stream (with the trial number).
        val_overlap: Sliding-window overlap for validation.
        memory_budget_gb: Optional budget for a training step (see the module docstring).
        budget_penalty: Value returned for an over-budget architecture.
        num_workers: Loader workers.
        channels_last: Use ``channels_last_3d`` memory format on CUDA.
        prune_checks: Intermediate validations per trial reported to the pruner (0: none).
        warmup_steps: Before the first trial, train this many steps, each along a uniformly random
            architecture (as in ENAS/SPOS), so that early rewards already rank architectures
            rather than initialisations. Done once; recorded in the checkpoint.
    """

    def __init__(
        self,
        supernet: Supernet,
        dataset: MSDDataset,
        *,
        train_ids: Sequence[str] | None = None,
        val_ids: Sequence[str] | None = None,
        steps_per_trial: int = 50,
        batch_size: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 3e-5,
        patch_size: Sequence[int] | None = None,
        amp: bool = True,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 10,
        device: str | torch.device = "auto",
        seed: int = 0,
        val_overlap: float = 0.25,
        memory_budget_gb: float | None = None,
        budget_penalty: float = 0.0,
        num_workers: int = 0,
        channels_last: bool = False,
        prune_checks: int = 0,
        warmup_steps: int = 0,
    ):
        if steps_per_trial < 1 or batch_size < 1:
            raise ValueError("steps_per_trial and batch_size must be >= 1")
        self.device = resolve_device(device)
        self.supernet = supernet
        self.dataset = dataset
        if train_ids is None or val_ids is None:
            tr, va = dataset.split(seed=seed)
            train_ids = train_ids if train_ids is not None else tr
            val_ids = val_ids if val_ids is not None else va
        self.train_ids, self.val_ids = list(train_ids), list(val_ids)
        if not self.train_ids or not self.val_ids:
            raise ValueError("need at least one training and one validation case")
        self.steps_per_trial, self.batch_size = steps_per_trial, batch_size
        self.lr, self.weight_decay = lr, weight_decay
        self.patch_size = tuple(patch_size) if patch_size is not None else None
        if "patch" not in supernet.space and self.patch_size is None:
            raise ValueError("give patch_size, or add a 'patch' decision to the search space")
        self.amp = amp and self.device.type == "cuda"
        self.amp_dtype = (
            torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.val_overlap = val_overlap
        self.memory_budget_gb = memory_budget_gb
        self.budget_penalty = budget_penalty
        self.num_workers = num_workers
        self.channels_last = channels_last and self.device.type == "cuda"
        self.prune_checks = prune_checks
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.trials_trained = 0
        self.warmup_steps = warmup_steps
        self.warmup_done = 0
        #: Called as ``hook(trial, arch, dice)`` at the end of each successful trial.
        self.hooks: list[Any] = []
        #: The best architecture's own weights as they were when it scored (this process's trials):
        #: ``{"trial", "value", "arch" (code), "state" (derived network state dict, CPU)}``. Shared
        #: weights keep moving after a trial, so :func:`~ronas_optuna.final.derive_best` compares this
        #: snapshot with the re-validated candidates, as a trainer keeps its best checkpoint.
        self.best_snapshot: dict[str, Any] | None = None
        self.supernet.to(self.device)
        if self.channels_last:
            self.supernet.to(memory_format=torch.channels_last_3d)
        self.optimizer = torch.optim.Adam(self.supernet.parameters(), lr=lr, weight_decay=weight_decay)
        if self.checkpoint is not None and self.checkpoint.exists():
            self._resume()
        self.train_cases: list[PreprocessedCase] = dataset.load_all(self.train_ids)
        self._locations = foreground_locations(self.train_cases, seed)  # once, not per trial
        self.val_cases: list[PreprocessedCase] = dataset.load_all(self.val_ids)
        self.num_classes = supernet.num_classes

    # ------------------------------------------------------------------ persistence
    def _resume(self) -> None:
        assert self.checkpoint is not None
        loaded = Supernet.load(self.checkpoint, expect=self.supernet, map_location=self.device)
        self.supernet.load_state_dict(loaded.state_dict())
        extra = getattr(loaded, "checkpoint_extra", {})
        if "optimizer" in extra:
            try:
                self.optimizer.load_state_dict(extra["optimizer"])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{self.checkpoint}: optimizer state does not fit ({e})") from None
        self.trials_trained = int(extra.get("trials_trained", 0))
        self.warmup_done = int(extra.get("warmup_done", 0))
        self.best_snapshot = extra.get("best_snapshot")

    def save(self) -> None:
        """Write the supernet and optimizer state atomically to ``checkpoint``."""
        if self.checkpoint is None:
            return
        self.supernet.save(
            self.checkpoint,
            extra={
                "optimizer": self.optimizer.state_dict(),
                "trials_trained": self.trials_trained,
                "warmup_done": self.warmup_done,
                "best_snapshot": self.best_snapshot,
            },
        )

    # ------------------------------------------------------------------ pieces
    def patch_for(self, arch: Architecture) -> tuple[int, int, int]:
        p = arch.patch_size or self.patch_size
        assert p is not None
        return (int(p[0]), int(p[1]), int(p[2]))

    def estimated_memory_gb(self, arch: Architecture) -> float:
        patch = self.patch_for(arch)
        cost = self.supernet.cost(arch, (self.batch_size, self.supernet.in_channels, *patch))
        key = "train_bytes_amp" if self.amp else "train_bytes_fp32"
        return cost[key] / 1e9

    def _snapshot(self, arch: Architecture) -> list[tuple[torch.nn.Parameter, torch.Tensor, dict[str, Any]]]:
        snap = []
        for p in self.supernet.path_parameters(arch):
            st = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in self.optimizer.state.get(p, {}).items()}
            snap.append((p, p.detach().clone(), st))
        return snap

    def _restore(self, snap: list[tuple[torch.nn.Parameter, torch.Tensor, dict[str, Any]]]) -> None:
        with torch.no_grad():
            for p, value, st in snap:
                p.copy_(value)
                if st:
                    self.optimizer.state[p] = st
                else:
                    self.optimizer.state.pop(p, None)
        self.optimizer.zero_grad(set_to_none=True)

    def train_steps(self, arch: Architecture, steps: int, *, start: int) -> float:
        """Train along ``arch``; returns the mean loss. Raises :class:`TrialFailure` on NaN."""
        net = self.supernet.train()
        ds = PatchDataset(
            self.train_cases,
            self.patch_for(arch),
            length=steps * self.batch_size,
            seed=self.seed,
            start=start,
            locations=self._locations,
        )
        loader = make_loader(
            ds, self.batch_size, num_workers=self.num_workers, pin_memory=self.device.type == "cuda"
        )
        losses = []
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.to(memory_format=torch.channels_last_3d)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                out = net(x, arch)
                loss = deep_supervision_loss(out, y)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.supernet.path_parameters(arch), 12.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        mean = float(torch.stack(losses).mean())  # one host sync per trial
        if not math.isfinite(mean):
            raise TrialFailure(f"non-finite training loss ({mean})")
        return mean

    @torch.no_grad()
    def validate(self, arch: Architecture | torch.nn.Module, cases: Sequence[PreprocessedCase] | None = None,
                 *, patch: Sequence[int] | None = None, overlap: float | None = None,
                 mirror: bool = False) -> tuple[float, list[float], list[list[float]]]:
        """Patient-wise Dice: ``(mean foreground Dice, per-class Dice, per-case per-class Dice)``.

        ``arch`` is an architecture (run on the supernet) or a standalone network.
        """
        cases = self.val_cases if cases is None else cases
        if isinstance(arch, Architecture):
            self.supernet.eval()
            net = lambda x: self.supernet(x, arch)  # noqa: E731
            patch = patch or self.patch_for(arch)
        else:
            arch.eval()
            net = arch
            assert patch is not None
        per_case = []
        for c in cases:
            probs = sliding_window(
                net, c.image, patch, self.num_classes,
                overlap=self.val_overlap if overlap is None else overlap,
                mirror=mirror, device=self.device, amp=self.amp,
            )
            pred = probs.argmax(0).cpu().numpy()
            per_case.append(dice_per_class(pred, c.label, self.num_classes))
        per_class = np.mean(np.asarray(per_case), axis=0).tolist()
        return float(np.mean(per_case)), per_class, per_case

    def warmup(self) -> None:
        """Train the remaining warm-up steps along uniformly random architectures."""
        rng = np.random.default_rng([self.seed, 7])
        space = self.supernet.space
        while self.warmup_done < self.warmup_steps:
            arch = space.sample(rng)
            self.train_steps(arch, 1, start=2**40 + self.warmup_done * self.batch_size)
            self.warmup_done += 1
        self.save()

    # ------------------------------------------------------------------ the trial
    def __call__(self, trial: optuna.Trial) -> float:
        if self.warmup_done < self.warmup_steps:
            self.warmup()
        arch = self.supernet.space.suggest(trial)
        patch = self.patch_for(arch)
        t0 = time.perf_counter()
        trial.set_user_attr(ATTR_ARCH, arch.code)
        cost = self.supernet.cost(arch, (self.batch_size, self.supernet.in_channels, *patch))
        trial.set_user_attr("params", int(cost["params"]))
        trial.set_user_attr("macs", int(cost["macs"] / self.batch_size))  # per patch
        trial.set_user_attr("patch", "x".join(map(str, patch)))
        est = cost["train_bytes_amp" if self.amp else "train_bytes_fp32"] / 1e9
        trial.set_user_attr("est_memory_gb", round(est, 4))
        if self.memory_budget_gb is not None:
            excess = est - self.memory_budget_gb
            trial.set_user_attr(CONSTRAINTS_KEY, [excess])
            if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read it directly
                trial.set_constraint("memory_gb", excess)
            else:
                trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, (excess,))
            if excess > 0:
                trial.set_user_attr("over_budget", True)
                trial.set_user_attr("seconds", time.perf_counter() - t0)
                return self.budget_penalty
        snap = self._snapshot(arch)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = trial.number * self.steps_per_trial * self.batch_size
        try:
            checks = max(0, self.prune_checks)
            chunks = [self.steps_per_trial // (checks + 1)] * checks
            chunks.append(self.steps_per_trial - sum(chunks))
            loss = 0.0
            done = 0
            for i, n in enumerate(chunks):
                if n == 0:
                    continue
                loss = self.train_steps(arch, n, start=start + done * self.batch_size)
                done += n
                if i < len(chunks) - 1:
                    dice = self.validate(arch)[0]
                    trial.report(dice, done)
                    if trial.should_prune():
                        self.trials_trained += 1
                        raise optuna.TrialPruned(f"pruned at step {done} with Dice {dice:.4f}")
            dice, per_class, _ = self.validate(arch)
        except TrialFailure as e:
            self._restore(snap)
            trial.set_user_attr(ATTR_FAIL, str(e))
            return float("nan")
        except torch.cuda.OutOfMemoryError as e:
            self._restore(snap)
            torch.cuda.empty_cache()
            trial.set_user_attr(ATTR_FAIL, f"CUDA out of memory: {str(e).splitlines()[0]}")
            return float("nan")
        except (ValueError, RuntimeError) as e:  # e.g. a bad case; optuna's errors are neither
            self._restore(snap)
            trial.set_user_attr(ATTR_FAIL, f"{type(e).__name__}: {e}")
            return float("nan")
        self.trials_trained += 1
        trial.set_user_attr("train_loss", round(loss, 5))
        trial.set_user_attr("dice_per_class", [round(d, 5) for d in per_class])
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        if self.device.type == "cuda":
            trial.set_user_attr("peak_memory_gb", round(torch.cuda.max_memory_allocated(self.device) / 1e9, 4))
        else:
            trial.set_user_attr("peak_memory_gb", round(est, 4))
        if self.best_snapshot is None or dice > self.best_snapshot["value"]:
            state = self.supernet.derive(arch).state_dict()  # derive() already copies the weights
            self.best_snapshot = {"trial": trial.number, "value": float(dice), "arch": arch.code,
                                  "state": {k: v.detach().cpu() for k, v in state.items()}}
        for hook in self.hooks:
            hook(trial, arch, dice)
        if self.checkpoint is not None and self.trials_trained % self.checkpoint_every == 0:
            self.save()
        return dice

    def measure_memory_gb(self, arch: Architecture) -> float:
        """Measured peak memory of one training step of ``arch`` on CUDA."""
        net = self.supernet.derive(arch)
        shape = (self.batch_size, self.supernet.in_channels, *self.patch_for(arch))
        return measure_peak_memory(net, shape, num_classes=self.num_classes, amp=self.amp, device=self.device) / 1e9
