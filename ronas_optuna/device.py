"""Which device a run uses: the user's ``--device`` and, in a data-parallel job, this rank's GPU."""

from __future__ import annotations

import os

import torch

from .errors import SettingsError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else goes to ``torch.device``.

    Raises:
        SettingsError: not a device name, or a CUDA device this machine or PyTorch build lacks.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingsError(f"--device {device!r}: not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"--device {device}: this machine or PyTorch build has no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingsError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu" and dev.type != "mps":
        raise SettingsError(f"--device {device}: only cpu and cuda devices are supported")
    return dev


def rank_device(device: str) -> str:
    """``cuda`` becomes this rank's GPU (``LOCAL_RANK``); anything else stays."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device
