"""Can the loader feed the network? Patches per second against the supernet's step time.

Loads an MSD dataset (default: Task901 at 2 mm), then measures, in one run: patches per second from
the ``DataLoader`` (foreground oversampling and augmentation on) with 0 and 2 workers, and the
training-step time of a default-space supernet path at the same patch size and batch. The loader keeps
up when its batches per second exceed the network's steps per second.

    python benchmarks/data_throughput.py [DATA] [--spacing 2] [--batch 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ronas_optuna import SearchSpace, Supernet
from ronas_optuna.data import MSDDataset, PatchDataset, candidate_patch_sizes, make_loader
from ronas_optuna.losses import deep_supervision_loss

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "Task901_BrainTissueTemplates"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", default=str(DEFAULT))
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ds = MSDDataset(args.data, spacing=args.spacing, cache_dir=tmp)
        cases = ds.load_all()
        print(
            f"{args.data}: {len(cases)} cases at {args.spacing} mm, shapes "
            f"{[c.image.shape[1:] for c in cases]}, preprocessing {time.perf_counter() - t:.1f} s"
        )
    patch = candidate_patch_sizes(ds.median_shape(), depth=4, n=1)[0]
    print(f"patch {patch}, batch {args.batch}")
    for workers in (0, 2):
        pd = PatchDataset(cases, patch, length=args.batches * args.batch, seed=0)
        loader = make_loader(pd, args.batch, num_workers=workers)
        t = time.perf_counter()
        n = sum(x.shape[0] for x, _ in loader)
        dt = time.perf_counter() - t
        print(f"loader, {workers} worker(s): {n / dt:7.1f} patches/s  ({n / dt / args.batch:6.2f} batches/s)")
    device = torch.device(args.device)
    space = SearchSpace.default()
    sn = Supernet(space, ds.in_channels, ds.num_classes).to(device).train()
    opt = torch.optim.Adam(sn.parameters(), lr=1e-3)
    arch = space.sample(np.random.default_rng(0))
    x = torch.randn(args.batch, ds.in_channels, *patch, device=device)
    y = torch.randint(0, ds.num_classes, (args.batch, *patch), device=device)
    times = []
    for i in range(args.steps + 1):
        t = time.perf_counter()
        loss = deep_supervision_loss(sn(x, arch), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    print(
        f"supernet step on {device} ({arch.code}): {step * 1e3:.0f} ms = {1 / step:.2f} steps/s "
        f"= {args.batch / step:.1f} patches/s needed"
    )


if __name__ == "__main__":
    main()
