"""The persistent shared-weight supernet: every candidate op, one path per forward.

Every weighted position (see :mod:`ronas_optuna.ops`) holds one module per choice.
``supernet(x, arch)`` runs only the chosen modules, so a step costs what the subnetwork alone costs;
:meth:`Supernet.derive` copies the chosen modules into a standalone :class:`~ronas_optuna.RONASNet`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from .network import RONASNet, chosen_positions, unet_forward
from .ops import position_candidates
from .space import Architecture, SearchSpace

CHECKPOINT_FORMAT = "ronas_optuna.supernet/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or belongs to another space/configuration."""


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

    # ------------------------------------------------------------------ cost
    def cost(
        self, arch: Architecture | Mapping[str, Any] | str, input_shape: Sequence[int]
    ) -> dict[str, float]:
        """Parameters, multiply-accumulates and an estimated training-step memory.

        Args:
            arch: The architecture.
            input_shape: ``(X, Y, Z)`` (batch 1, ``in_channels``) or ``(N, C, X, Y, Z)``.

        Returns:
            ``params``, ``macs`` (forward, per batch), ``activations`` (elements kept for the
            backward pass) and ``train_bytes_fp32`` / ``train_bytes_amp``: weights, gradients and
            Adam state plus activations, an estimate of a training step's peak memory.
        """
        return estimate_cost(self.derive(arch), input_shape)

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


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor (in dicts, lists, tuples) replaced by a detached CPU copy."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class BackgroundWriter:
    """Atomic ``torch.save`` on one daemon thread, so training need not wait for the disk.

    A payload submitted while another waits replaces it (only the newest state matters);
    :meth:`flush` waits until everything submitted is on disk and re-raises a write's error.
    A process killed mid-write leaves the previous file and a temporary file, which
    :func:`remove_stale_temp_files` deletes at the next start.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._pending: tuple[Any, Path] | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, payload: Any, path: str | os.PathLike[str]) -> None:
        with self._cv:
            self._pending = (payload, Path(path))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ronas-checkpoint", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def flush(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._pending is None and not self._busy)
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None)
                assert self._pending is not None
                (payload, path), self._pending = self._pending, None
                self._busy = True
            try:
                atomic_torch_save(payload, path)
            except BaseException as e:  # reported by flush()
                with self._cv:
                    self._error = e
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) through a uniquely named temporary file and ``os.replace``."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` through a uniquely named temporary file and ``os.replace``."""
    _atomic_write(path, lambda f: f.write(data))


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(folder: str | os.PathLike[str], older_than_s: float = 60.0) -> list[Path]:
    """Delete this package's temporary files (``.<name>.<random>.tmp...``) that an interrupted
    write left in ``folder``; recent ones may belong to a write in progress and stay."""
    now = time.time()
    removed = []
    for p in Path(folder).glob(".*.tmp*"):
        if p.is_file() and now - p.stat().st_mtime > older_than_s:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with clear errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in first.lower() or "weights only" in first.lower():
            first = "not a file ronas_optuna wrote"  # torch's advice to unpickle it would be unsafe
        raise CheckpointError(f"{path}: unreadable or corrupt file ({type(e).__name__}: {first})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: unexpected checkpoint content")
    return payload


def estimate_cost(net: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Count parameters, MACs and saved activations of ``net`` on a meta-device forward pass."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, getattr(net, "in_channels", 1), *shape)
    if len(shape) != 5:
        raise ValueError(f"input_shape must be (X, Y, Z) or (N, C, X, Y, Z), got {input_shape}")
    params = sum(p.numel() for p in net.parameters())
    meta = copy.deepcopy(net).to("meta").eval()
    macs = 0
    acts = 0

    def hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal macs, acts
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            w = m.weight
            if isinstance(m, nn.Conv3d):
                macs += out.numel() * w.shape[1] * w[0, 0].numel()
            else:  # each input voxel scatters a kernel to every output channel
                macs += inp[0].numel() * w.shape[1] * w[0, 0].numel()
        if not list(m.children()):
            acts += out.numel()

    hooks = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    # Activations: each leaf output, plus one activation-function output per norm, is kept.
    acts = acts * 2
    static = params * 4 * 4  # weights, grads, Adam m and v in fp32
    return {
        "params": float(params),
        "macs": float(macs),
        "activations": float(acts),
        "train_bytes_fp32": float(static + acts * 4),
        "train_bytes_amp": float(static + acts * 2),
    }


def measure_peak_memory(
    net: nn.Module,
    input_shape: Sequence[int],
    *,
    num_classes: int,
    amp: bool = True,
    device: str | torch.device = "cuda",
) -> int:
    """Peak CUDA memory in bytes of one forward/backward/Adam step of ``net``.

    Counts what the step adds to the device: weights, input, activations, gradients, Adam state.

    ``input_shape`` is ``(N, C, X, Y, Z)``. Raises ``RuntimeError`` without CUDA.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("measure_peak_memory needs a CUDA device")
    device = torch.device(device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(*input_shape, device=device)
    y = torch.randint(0, num_classes, (input_shape[0], *input_shape[2:]), device=device)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype, enabled=amp):
        out = net(x)
        out = out[0] if isinstance(out, list) else out
        loss = nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
