"""The encoder-decoder forward pass, shared by the supernet and the derived network.

:func:`unet_forward` walks one architecture; it asks ``get_op(position, choice)`` for each weighted
module. The supernet answers from its candidate table, :class:`RONASNet` from its own chosen
modules, so both compute exactly the same function with the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ACTIVATION_FNS, FIXED, conv_kernel, position_candidates
from .space import Architecture, SearchSpace, pool_factor, position


def check_input(x: torch.Tensor, arch: Architecture) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is 5D and divisible by the total stride."""
    if x.dim() != 5:
        raise ValueError(f"expected input of shape (N, C, X, Y, Z), got {tuple(x.shape)}")
    stride = arch.total_stride()
    bad = [(s, k) for s, k in zip(x.shape[2:], stride) if s % k]
    if bad:
        raise ValueError(
            f"input spatial size {tuple(x.shape[2:])} is not divisible by the architecture's "
            f"total stride {stride}; pad the input (inference.sliding_window does) or pick "
            "another patch size"
        )


def chosen_positions(arch: Architecture, ds_levels: int) -> dict[str, str]:
    """The weighted positions an architecture uses and the choice at each."""
    depth = arch.space.depth
    used: dict[str, str] = {}
    for i in range(depth + 1):
        used[position("enc_conv1", i)] = str(arch[position("enc_conv1", i)])
        if arch[position("enc_conv2", i)] != "identity":
            used[position("enc_conv2", i)] = str(arch[position("enc_conv2", i)])
    for i in reversed(range(depth)):
        used[position("up", i)] = str(arch[position("down", i + 1)])
        if arch[position("skip", i)] == "add":
            used[position("skip", i)] = FIXED
        if arch[position("dec_conv", i)] != "identity":
            used[position("dec_conv", i)] = str(arch[position("dec_conv", i)])
    for i in range(min(ds_levels, depth) + 1):
        used[f"head{i}"] = FIXED
    return used


def unet_forward(
    x: torch.Tensor,
    arch: Architecture,
    get_op: Callable[[str, str], nn.Module],
    *,
    deep_supervision: bool,
    ds_levels: int,
) -> torch.Tensor | list[torch.Tensor]:
    """Run ``arch``; a list of logits (full resolution first) when ``deep_supervision``."""
    check_input(x, arch)
    depth = arch.space.depth
    feats: list[torch.Tensor] = []
    h = x
    for i in range(depth + 1):
        if i > 0:
            f = pool_factor(str(arch[position("down", i)]))
            if f != (1, 1, 1):
                h = F.max_pool3d(h, f, f)
        act = ACTIVATION_FNS[arch.activation(i)]
        h = act(get_op(position("enc_conv1", i), str(arch[position("enc_conv1", i)]))(h))
        c2 = str(arch[position("enc_conv2", i)])
        if c2 != "identity":
            h = act(get_op(position("enc_conv2", i), c2)(h))
        feats.append(h)
    n_heads = min(ds_levels, depth) + 1
    outputs: list[torch.Tensor] = []
    for i in reversed(range(depth)):
        act = ACTIVATION_FNS[arch.activation(i)]
        h = get_op(position("up", i), str(arch[position("down", i + 1)]))(h)
        if arch[position("skip", i)] == "add":
            h = h + get_op(position("skip", i), FIXED)(feats[i])
        c = str(arch[position("dec_conv", i)])
        h = act(get_op(position("dec_conv", i), c)(h)) if c != "identity" else act(h)
        if i < n_heads and (deep_supervision or i == 0):
            outputs.append(get_op(f"head{i}", FIXED)(h))
    if deep_supervision:
        return outputs[::-1]
    return outputs[-1]


def architecture_flops(arch: Architecture, patch: Sequence[int], in_channels: int, num_classes: int) -> int:
    """Forward FLOPs of ``arch``'s network on one patch in evaluation mode, counted from the
    architecture alone as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (2 x the
    multiply-accumulates of every convolution and transposed convolution; normalisations,
    activations, pooling and additions free): microseconds, no network, no forward pass.
    ``tests/test_network.py`` checks it against the counter on random architectures."""
    widths, depth = arch.space.widths, arch.space.depth
    voxels = [math.prod(patch)]
    for i in range(1, depth + 1):
        voxels.append(voxels[-1] // math.prod(pool_factor(str(arch[position("down", i)]))))

    def conv(choice: str, cin: int, cout: int, level: int) -> int:
        if choice == "identity":
            return 0
        kernel, _ = conv_kernel(choice)
        return 2 * cin * cout * math.prod(kernel) * voxels[level]

    total = 0
    for i in range(depth + 1):
        cin = in_channels if i == 0 else widths[i - 1]
        total += conv(str(arch[position("enc_conv1", i)]), cin, widths[i], i)
        total += conv(str(arch[position("enc_conv2", i)]), widths[i], widths[i], i)
    for i in range(depth):
        f = math.prod(pool_factor(str(arch[position("down", i + 1)])))
        total += 2 * widths[i + 1] * widths[i] * f * voxels[i + 1]  # transposed: over its input
        if arch[position("skip", i)] == "add":
            total += conv("conv1", widths[i], widths[i], i)
        total += conv(str(arch[position("dec_conv", i)]), widths[i], widths[i], i)
    return total + conv("conv1", widths[0], num_classes, 0)  # head0: the only head at inference


class RONASNet(nn.Module):
    """A standalone network: one architecture of a space, only the chosen modules.

    Args:
        space: The search space the architecture comes from.
        arch: The architecture (an :class:`Architecture` or its Optuna params).
        in_channels: Input channels (modalities).
        num_classes: Output classes, background included.
        deep_supervision: Return a list of logits (full resolution first) in training mode.
        ds_levels: Number of extra lower-resolution heads.
    """

    def __init__(
        self,
        space: SearchSpace,
        arch: Architecture | Mapping[str, Any],
        in_channels: int,
        num_classes: int,
        *,
        deep_supervision: bool = True,
        ds_levels: int = 2,
    ):
        super().__init__()
        self.space = space
        self.arch = arch if isinstance(arch, Architecture) else Architecture(space, arch)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.ds_levels = ds_levels
        cands = position_candidates(space, in_channels, num_classes, ds_levels)
        self.ops = nn.ModuleDict(
            {p: cands[p][c]() for p, c in chosen_positions(self.arch, ds_levels).items()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return unet_forward(
            x,
            self.arch,
            lambda p, c: self.ops[p],
            deep_supervision=self.deep_supervision and self.training,
            ds_levels=self.ds_levels,
        )

    def config(self) -> dict[str, Any]:
        """Plain-JSON arguments that rebuild this network (weights aside)."""
        return {
            "space": self.space.to_dict(),
            "arch": self.arch.to_params(),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "deep_supervision": self.deep_supervision,
            "ds_levels": self.ds_levels,
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RONASNet:
        space = SearchSpace.from_dict(cfg["space"])
        return cls(
            space,
            Architecture.from_params(space, cfg["arch"]),
            int(cfg["in_channels"]),
            int(cfg["num_classes"]),
            deep_supervision=bool(cfg["deep_supervision"]),
            ds_levels=int(cfg["ds_levels"]),
        )
