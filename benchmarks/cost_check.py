"""Is a measured cost needed? The old analytic memory estimate, the CPU count and (on CUDA) the
device's own peak, side by side over random architectures.

For each of ``--archs`` random architectures of a search space, at the patch and batch given:

* ``estimate``: the rule ronas_optuna used before it measured (every leaf module's output counted
  twice, fp32, plus weights, gradients and Adam state: 16 bytes per parameter), computed here;
* ``count``: :func:`ronas_optuna.measure.cpu_training_memory` (autograd's saved tensors, each
  storage once, plus weights, gradients and Adam state);
* ``cuda``: :func:`ronas_optuna.measure.cuda_training_memory` (``max_memory_allocated`` around one
  fp32 training step, and with ``--amp`` a bf16 one), when ``--device cuda``;
* FLOPs from ``FlopCounterMode`` against the hand count of convolution multiply-accumulates x 2.

It prints the relative error of each against the reference (CUDA's peak on a GPU, the count on
the CPU), the median and the worst. The package keeps an estimate only where it agrees within
10%; the CPU one did not (results/cost_check_cpu.txt), so the measurement replaced it.

    python benchmarks/cost_check.py                       # README space, 32^3 patch, CPU
    python benchmarks/cost_check.py --depth 4 --base-width 16 --max-width 320 --patch 64
    python benchmarks/cost_check.py --device cuda --depth 5 --base-width 32 --patch 128 --amp
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ronas_optuna.measure import cpu_training_memory, cuda_training_memory, forward_flops
from ronas_optuna.network import RONASNet
from ronas_optuna.space import SearchSpace


def old_estimate(net: nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
    """The retired analytic rule: ``(train bytes fp32, forward MACs per batch)``."""
    meta = copy.deepcopy(net).to("meta").eval()
    macs = acts = 0

    def hook(m: nn.Module, inp: Any, out: torch.Tensor) -> None:
        nonlocal macs, acts
        if isinstance(m, nn.Conv3d):
            macs += out.numel() * m.weight.shape[1] * m.weight[0, 0].numel()
        elif isinstance(m, nn.ConvTranspose3d):
            macs += inp[0].numel() * m.weight.shape[1] * m.weight[0, 0].numel()
        acts += out.numel()

    leaves = [m for m in meta.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(hook) for m in leaves]
    with torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in net.parameters())
    return params * 16 + acts * 2 * 4, macs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=50)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--max-width", type=int, default=32)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="also measure a bf16 step on CUDA")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    patch = (a.patch,) * 3
    space = SearchSpace.default(
        depth=a.depth, base_width=a.base_width, max_width=a.max_width, patch_sizes=[patch]
    )
    shape = (a.batch, 1, *patch)
    device = torch.device(a.device)
    rng = np.random.default_rng(a.seed)
    errors: dict[str, list[float]] = {"estimate": [], "count": [], "flops": []}
    t_count = 0.0
    print(f"space depth {a.depth}, widths {a.base_width}-{a.max_width}, patch {a.patch}^3, batch {a.batch}")
    print("arch                                    estimate MB  count MB  cuda MB  (amp MB)  GFLOP/patch")
    for _ in range(a.archs):
        arch = space.sample(rng)
        net = RONASNet(space, arch, 1, a.classes)
        estimate, macs = old_estimate(net, shape)
        t0 = time.perf_counter()
        count = cpu_training_memory(copy.deepcopy(net), shape, a.classes)
        t_count += time.perf_counter() - t0
        flops = forward_flops(net, (1, *shape[1:]))
        errors["flops"].append(abs(flops - 2 * macs / a.batch) / flops)
        ref, cuda, amp = float(count), None, None
        if device.type == "cuda":
            cuda = cuda_training_memory(copy.deepcopy(net), shape, a.classes, device, amp=False)
            ref = float(cuda)
            errors["count"].append((count - cuda) / cuda)
            if a.amp:
                amp = cuda_training_memory(copy.deepcopy(net), shape, a.classes, device, amp=True)
        errors["estimate"].append((estimate - ref) / ref)
        on_gpu = "" if cuda is None else f"{cuda / 1e6:8.1f}"
        with_amp = "" if amp is None else f"{amp / 1e6:8.1f}"
        print(
            f"{arch.code:40s} {estimate / 1e6:11.1f} {count / 1e6:9.1f} {on_gpu:>8s} {with_amp:>9s}"
            f" {flops / 1e9:12.3f}"
        )
    ref_name = "CUDA peak (fp32)" if device.type == "cuda" else "CPU count"
    print(f"\nrelative error against the {ref_name}, {a.archs} architectures:")
    for name, errs in errors.items():
        if errs:
            worst = max(errs, key=abs)
            within = sum(abs(e) <= 0.10 for e in errs)
            print(
                f"  {name:9s} median {statistics.median(errs):+.1%}  worst {worst:+.1%}  "
                f"within 10%: {within}/{len(errs)}"
            )
    print(f"CPU count: {t_count / a.archs:.3f} s per architecture (one forward)")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")


if __name__ == "__main__":
    main()
