"""Training-step time of the supernet path against the derived standalone network.

For N random architectures, interleaved in one run (A, B, A, B, ...), time one forward/backward/Adam
step of ``supernet(x, arch)`` and of ``supernet.derive(arch)``. Prints per-architecture and median
ratios; on CUDA also the peak-memory ratio. Target: median ratio <= 1.05.

    python benchmarks/supernet_overhead.py                 # CPU, small
    python benchmarks/supernet_overhead.py --device cuda --patch 96 --archs 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ronas_optuna import SearchSpace, Supernet
from ronas_optuna.losses import deep_supervision_loss


def step_fn(module, arch, x, y, opt, device):
    def run():
        out = module(x, arch) if arch is not None else module(x)
        loss = deep_supervision_loss(out, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def timed(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def peak(fn, device):
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return torch.cuda.max_memory_allocated(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    space = SearchSpace.default(depth=args.depth, base_width=args.base_width)
    sn = Supernet(space, 1, 3).to(device).train()
    rng = np.random.default_rng(args.seed)
    x = torch.randn(args.batch, 1, *(args.patch,) * 3, device=device)
    y = torch.randint(0, 3, (args.batch, *(args.patch,) * 3), device=device)
    ratios, mem_ratios = [], []
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"patch {args.patch}^3, batch {args.batch}, {args.archs} random architectures, {args.reps} reps each"
    )
    print(f"{'architecture':40s} {'supernet ms':>12s} {'derived ms':>11s} {'ratio':>7s}")
    for _ in range(args.archs):
        arch = space.sample(rng)
        derived = sn.derive(arch).train()
        opt_s = torch.optim.Adam(sn.parameters(), lr=0.0)  # lr 0: the weights stay comparable
        opt_d = torch.optim.Adam(derived.parameters(), lr=0.0)
        fs, fd = step_fn(sn, arch, x, y, opt_s, device), step_fn(derived, None, x, y, opt_d, device)
        fs(), fd()  # warm-up (cudnn autotune, allocator)
        ts, td = [], []
        for _ in range(args.reps):  # interleaved
            ts.append(timed(fs, 1))
            td.append(timed(fd, 1))
        s, d = statistics.median(ts), statistics.median(td)
        ratios.append(s / d)
        if device.type == "cuda":
            mem_ratios.append(peak(fs, device) / peak(fd, device))
        print(f"{arch.code:40s} {1e3 * s:12.1f} {1e3 * d:11.1f} {s / d:7.3f}")
    print(f"median time ratio supernet/derived: {statistics.median(ratios):.3f} (target <= 1.05)")
    if mem_ratios:
        print(f"median peak-memory ratio supernet/derived: {statistics.median(mem_ratios):.3f}")


if __name__ == "__main__":
    main()
