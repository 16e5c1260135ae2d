"""What an architecture costs: parameters, multiply-accumulates and an estimate of a training step's
memory, counted on a meta-device forward pass (no memory is allocated)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


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
