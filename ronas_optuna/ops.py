"""Candidate operations of the macro space and the weighted positions of the network.

A *position* is a place in the encoder-decoder that holds weights (``enc2_conv1``, ``up1``,
``skip0``, ``head0``, ...). :func:`position_candidates` lists, for every position, a factory per
choice. The supernet instantiates every candidate; a derived network only the chosen ones, so their
parameter names line up and the weights copy over one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .space import SearchSpace, pool_factor, position

Factory = Callable[[], nn.Module]


class ConvNorm(nn.Module):
    """Conv3d followed by InstanceNorm (the activation is applied by the network)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int, int],
        dilation: int = 1,
    ):
        super().__init__()
        padding = ((kernel[0] // 2) * dilation, (kernel[1] // 2) * dilation, (kernel[2] // 2) * dilation)
        self.conv = nn.Conv3d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False)
        self.norm = nn.InstanceNorm3d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.conv.dilation[0]
        if d > 1 and x.device.type == "cpu":
            return self.norm(dilated_conv_cpu(x, self.conv.weight, d))
        return self.norm(self.conv(x))


def dilated_conv_cpu(x: torch.Tensor, weight: torch.Tensor, d: int) -> torch.Tensor:
    """A 3x3x3 conv at dilation ``d`` (padding ``d``) computed as a dilation-1 conv on ``d**3``
    interleaved sub-grids ("space to batch").

    Exactly the same function as ``F.conv3d(x, weight, padding=d, dilation=d)``, but PyTorch's CPU
    backend has no fast dilated 3D kernel (about 10x slower), while this uses the fast one.
    """
    n, c, *size = x.shape
    pads = [(-s) % d for s in size]
    if any(pads):
        x = nn.functional.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
    a, b, e = (s // d for s in x.shape[2:])
    x = x.reshape(n, c, a, d, b, d, e, d).permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(n * d**3, c, a, b, e)
    y = nn.functional.conv3d(x, weight, padding=1)
    co = y.shape[1]
    y = y.reshape(n, d, d, d, co, a, b, e).permute(0, 4, 5, 1, 6, 2, 7, 3).reshape(n, co, a * d, b * d, e * d)
    return y[:, :, : size[0], : size[1], : size[2]]


def conv_kernel(choice: str) -> tuple[tuple[int, int, int], int]:
    """Kernel and dilation of one conv choice (``conv3_d1/2/3``, ``conv331``, ``conv1``)."""
    if choice.startswith("conv3_d"):
        return (3, 3, 3), int(choice[-1])
    if choice == "conv331":
        return (3, 3, 1), 1
    if choice == "conv1":
        return (1, 1, 1), 1
    raise ValueError(f"unknown conv op {choice!r}")


def conv_op(choice: str, cin: int, cout: int) -> ConvNorm:
    """The module for one conv choice (see :func:`conv_kernel`)."""
    kernel, dilation = conv_kernel(choice)
    return ConvNorm(cin, cout, kernel, dilation=dilation)


class UpNorm(nn.Module):
    """Transposed conv that undoes a pooling (kernel = stride), then InstanceNorm."""

    def __init__(self, pooling: str, cin: int, cout: int):
        super().__init__()
        f = pool_factor(pooling)
        self.conv = nn.ConvTranspose3d(cin, cout, kernel_size=f, stride=f, bias=False)
        self.norm = nn.InstanceNorm3d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def up_op(pooling: str, cin: int, cout: int) -> nn.Module:
    """Up-sampling that undoes ``pooling`` and maps ``cin`` to ``cout`` channels."""
    return UpNorm(pooling, cin, cout)


ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "lrelu": lambda t: nn.functional.leaky_relu(t, 0.01),
    "elu": nn.functional.elu,
}

#: Choice key of positions that have one fixed module (skip projections and heads).
FIXED = "fixed"


def position_candidates(
    space: SearchSpace, in_channels: int, num_classes: int, ds_levels: int
) -> dict[str, dict[str, Factory]]:
    """Every weighted position of the network and a module factory per choice."""
    widths = space.widths
    depth = space.depth
    if not widths or len(widths) != depth + 1:
        raise ValueError("search space meta lacks 'widths'/'depth'; build it with SearchSpace.default")
    pos: dict[str, dict[str, Factory]] = {}

    def convs(name: str, cin: int, cout: int) -> dict[str, Factory]:
        return {str(c): partial(conv_op, str(c), cin, cout) for c in space[name].choices if c != "identity"}

    for i in range(depth + 1):
        cin = in_channels if i == 0 else widths[i - 1]
        pos[position("enc_conv1", i)] = convs(position("enc_conv1", i), cin, widths[i])
        pos[position("enc_conv2", i)] = convs(position("enc_conv2", i), widths[i], widths[i])
    for i in reversed(range(depth)):
        pos[position("up", i)] = {
            str(p): partial(up_op, str(p), widths[i + 1], widths[i])
            for p in space[position("down", i + 1)].choices
        }
        if "add" in space[position("skip", i)].choices:
            pos[position("skip", i)] = {FIXED: partial(conv_op, "conv1", widths[i], widths[i])}
        pos[position("dec_conv", i)] = convs(position("dec_conv", i), widths[i], widths[i])
    for i in range(min(ds_levels, depth) + 1):
        pos[f"head{i}"] = {FIXED: partial(nn.Conv3d, widths[i], num_classes, 1)}
    return pos
