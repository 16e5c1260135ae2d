"""One fold of a benchmark: its cases and search space, fresh objectives, and the results kept in
the storage under a key of the settings (:func:`finished_study`, :func:`kept_row`), so that an
interrupted benchmark continues where it stopped and several processes can share one storage."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from ..controller import SEARCH_CONTROLLER
from ..data.msd import DataError, MSDDataset, PreprocessedCase
from ..device import resolve_device
from ..errors import StorageError
from ..evaluator import Evaluator
from ..files import previous_path
from ..objective import NASObjective
from ..plan import space_for
from ..settings import SearchSettings
from ..space import SearchSpace
from ..supernet import Supernet
from .config import BenchmarkConfig
from .variant import controller_variant


@dataclass
class FoldSetup:
    """What every study of one benchmark shares."""

    cfg: BenchmarkConfig
    fold: int
    dataset: MSDDataset
    space: SearchSpace
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    test_cases: list[PreprocessedCase]
    scratch_steps: int | None
    #: Where each search keeps its supernet checkpoint while it runs (``None``: none, no resume).
    checkpoints: Path | None = None

    def checkpoint(self, study_name: str) -> Path | None:
        return self.checkpoints / f"{study_name}.pt" if self.checkpoints is not None else None

    def resumable(self, name: str, *what: str) -> dict[str, Any]:
        """Where a reference network's training (``name``) keeps its checkpoint, and the tag that
        resumes it: this benchmark's key and ``what`` (a changed configuration starts over)."""
        tag = hashlib.sha256("\n".join([self.key(), *what]).encode()).hexdigest()[:16]
        return {"checkpoint": self.checkpoint(name), "tag": tag}

    def key(self) -> str:
        """What makes two results of one (fold, seed, method) comparable (the from-scratch steps are
        not part of it: a kept row keeps its own twin)."""
        cfg = self.cfg
        return json.dumps(
            {
                "data": Path(cfg.data).name,
                "settings": cfg.settings.to_dict(),
                "trials": cfg.trials,
                "timeout": cfg.timeout,
                "split": [self.train_ids, self.val_ids, self.test_ids],
                "handmade_recipe": cfg.handmade_recipe,
                # only when set: the keys of results kept before the option stay equal
                **({"controller": cfg.controller} if cfg.controller != "default" else {}),
                # the policy RONAS ran with, resolved: a changed default is not a kept result's
                "policy": dataclasses.asdict(controller_variant(cfg.controller, SEARCH_CONTROLLER)),
            },
            sort_keys=True,
        )

    def study_name(self, method: str, seed: int) -> str:
        return f"bench-{method}{f'-fold{self.fold}' if self.cfg.folds > 1 else ''}-seed{seed}"

    def objective(self, seed: int, checkpoint: Path | None = None) -> NASObjective:
        """A fresh supernet and objective; ``seed`` seeds its weights and patch stream. With a
        ``checkpoint`` that exists, the supernet resumes from it."""
        torch.manual_seed(seed)
        sn = Supernet(self.space, self.dataset.in_channels, self.dataset.num_classes)
        settings = self.cfg.settings.replace(seed=seed)
        return NASObjective.build(
            sn,
            self.dataset,
            settings=settings,
            train_ids=self.train_ids,
            val_ids=self.val_ids,
            device=self.cfg.device,
            checkpoint=checkpoint,
        )

    def test_dice(
        self, objective: NASObjective, net: torch.nn.Module, patch: tuple[int, int, int]
    ) -> tuple[float, dict[str, float]]:
        """Mean test Dice and each test case's own (mean over its foreground classes)."""
        res = objective.evaluator.evaluate(net, patch, cases=self.test_cases, overlap=0.5)
        return res.mean, per_case(self.test_ids, res.per_case)

    def monitor(self, patch: tuple[int, ...]) -> Callable[[torch.nn.Module], float] | None:
        """The learning-curve score of a reference network: Dice on the configured curve cases
        (``None``: no curve)."""
        if not self.cfg.curve_ids:
            return None
        evaluator = Evaluator(
            self.dataset.load_all(self.cfg.curve_ids),
            self.dataset.num_classes,
            device=resolve_device(self.cfg.device),
        )
        return lambda net: evaluator.evaluate(net, patch, overlap=0.25).mean


def make_setup(
    cfg: BenchmarkConfig, dataset: MSDDataset, fold: int, split: tuple[list[str], ...]
) -> FoldSetup:
    train_ids, val_ids, test_ids = (list(x) for x in split)
    return FoldSetup(
        cfg,
        fold,
        dataset,
        space_for(dataset, train_ids, cfg.settings),
        train_ids,
        val_ids,
        test_ids,
        dataset.load_all(test_ids),
        cfg.scratch_steps,
    )


def fold_splits(cfg: BenchmarkConfig, case_ids: list[str]) -> list[tuple[list[str], list[str], list[str]]]:
    """``(train, validation, test)`` ids per fold; one fold keeps the configured single split."""
    if cfg.folds <= 1:
        _, val_ids, test_ids = split_three(case_ids, cfg.split_seed)
        val_ids = list(cfg.val_ids) if cfg.val_ids else val_ids
        test_ids = list(cfg.test_ids) if cfg.test_ids else test_ids
        rest = [i for i in case_ids if i not in val_ids and i not in test_ids]
        train_ids = list(cfg.train_ids) if cfg.train_ids else rest
        unknown = sorted(set(train_ids + val_ids + test_ids) - set(case_ids))
        if unknown:
            raise DataError(f"{cfg.data}: no case named {', '.join(unknown[:3])}")
        if set(train_ids) & set(val_ids + test_ids) or set(val_ids) & set(test_ids):
            raise DataError(f"{cfg.data}: the train, validation and test cases overlap")
        return [(train_ids, val_ids, test_ids)]
    if not 2 <= cfg.folds <= len(case_ids) or len(case_ids) < 3:
        raise DataError(f"--folds {cfg.folds}: need 2 to {len(case_ids)} folds and at least 3 cases")
    perm = [case_ids[i] for i in np.random.default_rng(cfg.split_seed).permutation(len(case_ids))]
    out = []
    for k in range(cfg.folds):
        test = sorted(perm[k :: cfg.folds])
        rest = [i for i in perm if i not in test]
        if len(rest) < 2:
            raise DataError(f"--folds {cfg.folds}: fold {k} leaves {len(rest)} case(s) to search on; need 2")
        n_val = max(1, round(0.2 * len(rest)))
        out.append((sorted(rest[n_val:]), sorted(rest[:n_val]), test))
    return out


def split_three(ids: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded train / validation / test split (at least one case each)."""
    if len(ids) < 3:
        raise DataError(f"the benchmark needs at least 3 cases (train, validation, test), got {len(ids)}")
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n = max(1, round(0.2 * len(ids)))
    return sorted(perm[2 * n :]), sorted(perm[n : 2 * n]), sorted(perm[:n])


def per_case(case_ids: list[str], scores: list[list[float]]) -> dict[str, float]:
    """Each case's Dice, the mean over its foreground classes (rounded to 5 digits)."""
    return {c: round(float(np.mean(v)), 5) for c, v in zip(case_ids, scores, strict=True)}


def total_steps(cfg: BenchmarkConfig) -> int:
    """Shared-weight steps one search plans: warm-up, trials, in-supernet fine-tuning."""
    s = cfg.settings
    return s.training.warmup_steps + cfg.trials * s.training.steps_per_trial + s.finetune.steps


def budget_clock(device: str) -> Callable[[], float]:
    """The clock that budgets are measured on: this process's CPU time on the CPU (other processes
    sharing the machine do not shrink a budget), wall time on an accelerator."""
    return time.process_time if resolve_device(device).type == "cpu" else time.perf_counter


#: The references whose rows depend on ``handmade_recipe`` (no other row's key compares it).
DYNUNET_METHODS = ("dynunet", "dynunet-recipe")


#: Study user attr: a search's row up to its twin (the derived network's scores, its architecture
#: and patch, the budget its references get), kept when its export is done, so that a rerun trains
#: only the twin; restorable without the study's trials or checkpoint (``population_curve.py
#: --restore``).
DERIVED = "benchmark:derived"


def finished_study(
    setup: FoldSetup,
    storage: Any,
    study_name: str,
    *,
    resumable: Path | None = None,
    method: str | None = None,
) -> optuna.Study | None:
    """The study's kept result for these settings, or ``None``. An unfinished study (no result) is
    deleted, unless it is a search of these settings whose checkpoint ``resumable`` is still there,
    or whose derived network is kept (:data:`DERIVED`): then it is returned without a result, to be
    continued. Raises ``StorageError`` for a finished
    study of other settings. ``method`` (the study's sampler or reference) leaves the DynUNet recipe
    out of the comparison unless it is DynUNet's; ``None`` compares everything."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None
    attrs = study.user_attrs
    dynunet = method is None or method in DYNUNET_METHODS  # the recipe changes only their rows
    if "benchmark:result" not in attrs:
        if claim_alive(attrs.get(CLAIM)):
            return study  # another process is computing its row (:func:`kept_row`)
        same = resumable is not None and _same_key(attrs.get("benchmark:key"), setup.key(), dynunet=dynunet)
        if (
            same
            and resumable is not None
            and (DERIVED in attrs or resumable.exists() or previous_path(resumable).exists())
        ):
            return study
        optuna.delete_study(study_name=study_name, storage=storage)
        return None
    if not _same_key(attrs.get("benchmark:key"), setup.key(), dynunet=dynunet):
        raise StorageError(
            f"{setup.cfg.storage}: study {study_name!r} holds a benchmark result with other settings; "
            "use another --storage (results are never replaced)"
        )
    return study


def _same_key(stored: Any, key: str, *, dynunet: bool = True) -> bool:
    """Whether a kept result's key equals ``key``, its settings read as this version reads them (a
    setting added since then takes its default, as it did in the run that made the result). A key
    written before the resolved policy was recorded is compared without it; the DynUNet recipe
    only where the result is DynUNet's (``dynunet``)."""
    try:
        old, new = json.loads(stored), json.loads(key)
        old["settings"] = SearchSettings.from_dict(old["settings"]).to_dict()
    except (TypeError, ValueError, KeyError):
        return False
    if "policy" not in old:
        new.pop("policy", None)
    if not dynunet:
        old.pop("handmade_recipe", None)
        new.pop("handmade_recipe", None)
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def kept_row(
    setup: FoldSetup,
    storage: Any,
    method: str,
    seed: int,
    run: Callable[[], dict[str, Any]],
    *,
    poll_s: float = 60.0,
) -> dict[str, Any]:
    """A reference's row, kept in a study of its own (no trials) so that it is reused like a search.

    The study is claimed (:data:`CLAIM`: host and process) before ``run()`` starts, so a process
    that needs the same row meanwhile (every seed's process needs the fold's DynUNet recipe) waits
    for it, polling every ``poll_s`` seconds, instead of computing it again beside the first. The
    claim is renewed every :data:`CLAIM_BEAT_S` seconds while ``run()`` computes; one not renewed for
    :data:`CLAIM_STALE_S` seconds (its process is gone, on any machine, or this machine's process of
    that number is another one now), or whose process has left this machine, is taken over. Creating
    the study is the one step only one process can win, so two processes never both compute the row."""
    name = setup.study_name(method, seed)
    said, unclaimed_before = False, False
    while True:
        study, holder = _claim(setup, storage, name, method, take_unclaimed=unclaimed_before)
        if isinstance(study, dict):
            return study  # the kept row
        if study is not None:
            break
        unclaimed_before = holder == _UNCLAIMED
        if not unclaimed_before:
            busy(name, f"{holder} is computing it")
        if not said and not unclaimed_before:
            print(f"waiting for {name}: {holder} is computing it", flush=True)
            said = True
        time.sleep(_CLAIM_GAP_S if unclaimed_before else poll_s)
    try:
        with renewed_claim(study):
            row = run()
    except BaseException:
        optuna.delete_study(study_name=name, storage=storage)  # the claim goes with the attempt
        raise
    study.set_user_attr("benchmark", setup.cfg.to_dict())
    keep_result(study, setup, row)
    return row


class Busy(Exception):
    """A row another live process is computing, met inside :func:`not_waiting`."""


_WAITING = contextvars.ContextVar("benchmark_waiting", default=True)


@contextlib.contextmanager
def not_waiting() -> Iterator[None]:
    """Meanwhile a row (a search or a reference) that another live process is computing raises
    :class:`Busy` instead of being waited for: the caller does other rows first."""
    token = _WAITING.set(False)
    try:
        yield
    finally:
        _WAITING.reset(token)


def busy(name: str, why: str) -> None:
    """Raise :class:`Busy` for study ``name`` inside :func:`not_waiting`; otherwise nothing."""
    if not _WAITING.get():
        raise Busy(f"{name}: {why}")


#: A study's user attr naming the process computing its row: ``{"host", "pid", "beat"}`` (``beat``: when
#: it was last renewed, the claimant's clock).
CLAIM = "benchmark:claim"

#: Between a study's creation and its claim are milliseconds: a study still without a claim this
#: many seconds after it was first seen belongs to a process that died in between.
_CLAIM_GAP_S = 5.0
_UNCLAIMED = "a process that has just created it"


#: Seconds between renewals of a claim (its ``beat``, the claimant's clock) while the row is computed.
CLAIM_BEAT_S = 60.0
#: A claim not renewed for this many seconds is a gone process's (generous: hosts' clocks differ).
CLAIM_STALE_S = 900.0


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()}


def claim_alive(claim: Any) -> bool:
    """Whether a claim's process may still be computing: one renewed in the last
    :data:`CLAIM_STALE_S` seconds (a claim without a ``beat`` counts as renewed) and, on this
    machine, running and not this process."""
    if not isinstance(claim, dict):
        return False
    host, pid, beat = claim.get("host"), claim.get("pid"), claim.get("beat")
    if _is_mine(claim):
        return False
    if isinstance(beat, (int, float)) and time.time() - beat > CLAIM_STALE_S:
        return False
    if host != socket.gethostname():
        return True
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _claim(
    setup: FoldSetup, storage: Any, name: str, method: str, *, take_unclaimed: bool
) -> tuple[optuna.Study | dict[str, Any] | None, str]:
    """The study ``name`` created and claimed for this process; its kept row (a dict) when it has
    one of these settings (``StorageError`` for other settings); ``(None, holder)`` while another
    process holds it. A study whose claimant is gone (or, with ``take_unclaimed``, that still has
    no claim) is deleted and created again: of several processes taking it over, one creates it."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # deleted meanwhile by a process taking it over: try again
            return None, _UNCLAIMED
        attrs = study.user_attrs
        if "benchmark:result" in attrs:
            finished_study(setup, storage, name, method=method)  # raises for other settings
            return dict(attrs["benchmark:result"]), ""
        held = attrs.get(CLAIM)
        if isinstance(held, dict) and claim_alive(held):
            return None, f"{held.get('host')}:{held.get('pid')}"
        if held is None and not take_unclaimed:
            return None, _UNCLAIMED
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
        return _claim(setup, storage, name, method, take_unclaimed=False)
    try:
        claim(study)
    except KeyError:  # taken over in between (this process stalled for seconds): try again
        return None, _UNCLAIMED
    return study, ""


def claim(study: optuna.Study) -> None:
    """Write this process's claim on ``study`` (:data:`CLAIM`)."""
    study.set_user_attr(CLAIM, _me())


def claimed_by_me(study: optuna.Study) -> bool:
    """Whether the claim ``study`` holds now (read from its storage) is this process's."""
    return _is_mine(study.user_attrs.get(CLAIM))


def _is_mine(claim: Any) -> bool:
    return isinstance(claim, dict) and (claim.get("host"), claim.get("pid")) == (
        socket.gethostname(),
        os.getpid(),
    )


@contextlib.contextmanager
def renewed_claim(study: optuna.Study) -> Iterator[None]:
    """Renew this process's claim on ``study`` every :data:`CLAIM_BEAT_S` seconds meanwhile (a
    renewal the storage refuses is left to the next one)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(CLAIM_BEAT_S):
            with contextlib.suppress(Exception):
                claim(study)

    thread = threading.Thread(target=beat, name="benchmark-claim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def keep_result(study: optuna.Study, setup: FoldSetup, row: dict[str, Any]) -> None:
    """Store a finished result with the key it is reused under (the key first: a study with a
    result always has its key)."""
    study.set_user_attr("benchmark:key", setup.key())
    study.set_user_attr("benchmark:result", row)
