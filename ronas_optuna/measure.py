"""What an architecture costs, measured rather than guessed: a training step's peak memory, forward
FLOPs and inference latency of the standalone network.

Memory is measured the way the device sees it:

* on CUDA, ``torch.cuda.max_memory_allocated`` around one forward + loss + backward + optimizer
  step of a fresh network (its weights, gradients, optimizer state, the batch and every transient
  buffer), with the trainer's mixed precision;
* on the CPU (no allocator statistics to read), the bytes autograd keeps for the backward pass,
  counted with :func:`torch.autograd.graph.saved_tensors_hooks` (each storage once: views and
  re-saved tensors share it), plus the weights, their gradients and the optimizer's state. The
  forward runs, the backward does not, so this costs one forward pass.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` on the network in evaluation
mode with meta-device stand-ins for its weights (no memory, no arithmetic: convolutions and matrix
products are counted, normalisations and activations are not), per patch; a search's trials
take the same count from the architecture alone (:func:`ronas_optuna.network.architecture_flops`, no
forward pass; equal on random architectures, ``tests/test_measure.py``).
Costs depend only on the architecture, patch, batch and device, so :class:`CostCache` measures each
once per process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from .attrs import (
    ATTR_FLOPS,
    ATTR_LATENCY,
    ATTR_MEMORY,
    ATTR_MEMORY_METHOD,
    ATTR_OVER_BUDGET,
    ATTR_PARAMS,
    ATTR_PATCH,
    CONSTRAINTS_KEY,
)
from .losses import deep_supervision_loss

if TYPE_CHECKING:
    import optuna

#: How each optimizer's state scales with the weights (Adam: two moments; SGD: momentum).
OPTIMIZER_STATES = {"adam": 2, "sgd": 1}


@dataclass(frozen=True)
class Cost:
    """One architecture's measured cost at one patch and batch.

    Attributes:
        params: Trainable parameters.
        flops: Forward FLOPs per patch (convolutions and matrix products).
        memory_bytes: Peak memory of one training step at the batch size.
        memory_method: ``"cuda-peak"`` or ``"saved-tensors"`` (the CPU count, see the module).
        latency_ms: Median inference time of one patch (batch 1), when measured.
    """

    params: int
    flops: int
    memory_bytes: int
    memory_method: str
    latency_ms: float | None = None

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / 1e9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def saved_tensor_bytes(
    forward: Callable[[], Any], *, exclude: Sequence[torch.Tensor] = ()
) -> tuple[int, Any]:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs, those
    of ``exclude`` left out (a network's weights, which a training step holds anyway).

    Returns:
        ``(bytes, forward's result)``; keep the result alive only as long as you need it (it
        holds the graph).
    """
    storages: dict[tuple[str, int], int] = {}
    held = {(str(t.device), t.untyped_storage().data_ptr()) for t in exclude}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[(str(t.device), s.data_ptr())] = s.nbytes()
        # detached: the same storage without the grad_fn, or a tensor saved by its own grad_fn
        # (an activation's output) would hold that node in a cycle nothing frees
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return sum(n for key, n in storages.items() if key not in held), out


def _batch(
    net: nn.Module, shape: Sequence[int], num_classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, *spatial = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn((n, c, *spatial), generator=g).to(device)
    y = torch.randint(0, num_classes, (n, *spatial), generator=g).to(device)
    return x, y


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 5 or min(shape) < 1:
        raise ValueError(f"input_shape must be (N, C, X, Y, Z) with positive sizes, got {tuple(input_shape)}")
    return shape


def cpu_training_memory(
    net: nn.Module, input_shape: Sequence[int], num_classes: int, *, optimizer: str = "adam"
) -> int:
    """The CPU count of a training step's memory: the saved activations (the input's and the
    loss's included) plus weights, gradients and ``OPTIMIZER_STATES[optimizer]`` copies of the
    weights, all as stored; a weight a layer saves for its backward is counted once, as a weight."""
    shape = _check_shape(input_shape)
    net = net.train()
    x, y = _batch(net, shape, num_classes, torch.device("cpu"))
    trained = [p for p in net.parameters() if p.requires_grad]
    saved, loss = saved_tensor_bytes(lambda: deep_supervision_loss(net(x), y), exclude=trained)
    del loss  # frees the graph: nothing runs backward
    weights = sum(p.numel() * p.element_size() for p in trained)
    return saved + weights * (2 + OPTIMIZER_STATES[optimizer])


def cuda_training_memory(
    net: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    device: torch.device,
    *,
    amp: bool = True,
    amp_dtype: torch.dtype = torch.bfloat16,
    optimizer: str = "adam",
) -> int:
    """Peak CUDA memory of one training step of ``net`` (moved to ``device``) from a clean start:
    ``torch.cuda.max_memory_allocated`` minus what was allocated before the network existed."""
    shape = _check_shape(input_shape)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    net = net.to(device).train()
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = _batch(net, shape, num_classes, device)
    with torch.autocast("cuda", dtype=amp_dtype, enabled=amp):
        loss = deep_supervision_loss(net(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del net, opt, x, y, loss
    torch.cuda.empty_cache()
    return int(peak)


def forward_flops(net: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of ``net`` on a batch of ``input_shape``, counted in evaluation mode with its
    weights and buffers stood in by meta-device tensors (``torch.func.functional_call``: no copy of
    the network, no arithmetic; ``net`` keeps its weights and mode)."""
    shape = _check_shape(input_shape)
    tensors = [*net.named_parameters(), *net.named_buffers()]  # a module reached twice (MONAI's
    # DynUNet holds its skip path twice) is named once; functional_call ties the other names to it
    meta = {k: torch.empty_like(v, device="meta") for k, v in tensors}
    counter = FlopCounterMode(display=False)
    training = net.training
    net.eval()
    try:
        with torch.no_grad(), counter:
            functional_call(net, meta, (torch.empty(shape, device="meta"),))
    finally:
        net.train(training)
    return int(counter.get_total_flops())


def inference_latency_ms(
    net: nn.Module, patch: Sequence[int], device: torch.device, *, repeats: int = 3
) -> float:
    """Median wall time of one patch through ``net`` (batch 1, evaluation mode), after a warm-up."""
    in_channels = int(getattr(net, "in_channels", 1))
    x = torch.randn((1, in_channels, *patch), device=device)
    net = net.to(device).eval()
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first run warms up
                times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(
    make_net: Callable[[], nn.Module],
    input_shape: Sequence[int],
    num_classes: int,
    *,
    device: torch.device | str = "cpu",
    amp: bool = False,
    amp_dtype: torch.dtype = torch.bfloat16,
    optimizer: str = "adam",
    latency: bool = False,
    flops: int | None = None,
) -> Cost:
    """Measure a fresh network from ``make_net()`` at ``input_shape`` ``(N, C, X, Y, Z)``.

    Memory is the CUDA peak on a CUDA ``device`` (with ``amp``), the CPU count otherwise; FLOPs
    are per patch (``flops``: already counted, e.g. from the architecture by
    :func:`ronas_optuna.network.architecture_flops`, and not counted again); ``latency`` adds the
    inference time of one patch on ``device``.
    """
    shape = _check_shape(input_shape)
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}, got {optimizer!r}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
        net = make_net()
        params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        if flops is None:
            flops = forward_flops(net, (1, *shape[1:]))
        if device.type == "cuda":
            memory = cuda_training_memory(  # from the CPU, so its weights count in the peak
                net.cpu(), shape, num_classes, device, amp=amp, amp_dtype=amp_dtype, optimizer=optimizer
            )
            method = "cuda-peak"
        else:
            memory = cpu_training_memory(net, shape, num_classes, optimizer=optimizer)
            method = "saved-tensors"
        ms = inference_latency_ms(net, shape[2:], device) if latency else None
    return Cost(params, flops, memory, method, ms)


class CostCache:
    """:func:`measure` once per ``key`` (an architecture code, patch and batch) in this process."""

    def __init__(self) -> None:
        self._costs: dict[Any, Cost] = {}

    def __len__(self) -> int:
        return len(self._costs)

    def get(self, key: Any, measure_it: Callable[[], Cost]) -> Cost:
        if key not in self._costs:
            self._costs[key] = measure_it()
        return self._costs[key]


def record_cost(trial: optuna.Trial, cost: Cost, patch: Sequence[int]) -> None:
    """``cost`` and the architecture's ``patch`` as the trial's user attrs: parameters, FLOPs,
    patch, measured step memory and how it was measured, and latency when measured."""
    trial.set_user_attr(ATTR_PARAMS, cost.params)
    trial.set_user_attr(ATTR_FLOPS, cost.flops)
    trial.set_user_attr(ATTR_PATCH, "x".join(map(str, patch)))
    trial.set_user_attr(ATTR_MEMORY, cost.memory_gb)
    trial.set_user_attr(ATTR_MEMORY_METHOD, cost.memory_method)
    if cost.latency_ms is not None:
        trial.set_user_attr(ATTR_LATENCY, cost.latency_ms)


def record_budget(trial: optuna.Trial, memory_gb: float, budget_gb: float) -> bool:
    """Store ``memory_gb - budget_gb`` as the trial's constraint (``trial.set_constraint`` on
    Optuna 5, which TPE and GP read; the system attr :func:`~ronas_optuna.attrs.constraints_func`
    reads for older versions) and as a user attr; ``True`` when the architecture exceeds the
    budget (then also marked ``over_budget``)."""
    excess = memory_gb - budget_gb
    trial.set_user_attr(CONSTRAINTS_KEY, [excess])
    if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read it directly
        trial.set_constraint("memory_gb", excess)
    else:
        trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, (excess,))
    if excess > 0:
        trial.set_user_attr(ATTR_OVER_BUDGET, True)
    return excess > 0
