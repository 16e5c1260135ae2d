"""GPU performance: supernet path vs derived network vs MONAI DynUNet (nnU-Net-like), side by side.

For each patch size (96^3 and 128^3 by default), batch 2, fp32 and AMP (bf16 where supported, else
fp16 with a gradient scaler), one run measures the training-step time (forward, Dice+CE with deep
supervision, backward, Adam), voxels per second and peak memory of:

* ``supernet``: the default space's supernet running a plain U-Net path (3x3x3 convs, 2x2x2 pooling,
  all skips, ReLU) -- the architecture most comparable to DynUNet;
* ``derived``: the same path as a standalone network (``supernet.derive``);
* ``dynunet``: MONAI ``DynUNet``, kernels 3, strides 1,2,2,2,2,2, filters 32,64,128,256,320,320,
  instance norm, deep supervision (skipped when MONAI is not installed: ``pip install monai``).

Targets: supernet <= 1.05 x derived; default-space throughput >= DynUNet's; peak memory at 128^3,
batch 2, AMP <= 10.8 GB. The variants are interleaved rep by rep. ``--tiny`` runs a CPU smoke test.

Then the measured-memory check (``--memory-archs`` random architectures of a depth-4 space, widths
16-320, 64^3, batch 2): the CPU count a search records where it has no GPU
(:func:`ronas_optuna.measure.cpu_training_memory`) against CUDA's own fp32 peak for the same step
(:func:`ronas_optuna.measure.cuda_training_memory`); target: within 10%.

    python benchmarks/gpu_bench.py                # CUDA, full
    python benchmarks/gpu_bench.py --tiny         # CPU smoke test (CI)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ronas_optuna import Architecture, SearchSpace, Supernet
from ronas_optuna.losses import deep_supervision_loss
from ronas_optuna.measure import cpu_training_memory, cuda_training_memory
from ronas_optuna.network import RONASNet


def plain_unet(space: SearchSpace) -> Architecture:
    p = {}
    for n, d in space.items():
        if n.startswith(("enc", "dec")):
            p[n] = "conv3_d1"
        elif n.startswith("down"):
            p[n] = "222"
        elif n.startswith("skip"):
            p[n] = "add"
        elif n.startswith("act"):
            p[n] = "relu"
        else:
            p[n] = d.choices[0]
    return Architecture(space, p)


def dynunet(in_ch: int, n_cls: int, depth: int):
    try:
        from monai.networks.nets import DynUNet
    except ImportError:
        return None
    filters = [32, 64, 128, 256, 320, 320][: depth + 1]
    strides = [1] + [2] * depth
    return DynUNet(
        3,
        in_ch,
        n_cls,
        kernel_size=[3] * (depth + 1),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name="instance",
        deep_supervision=True,
        deep_supr_num=2,
        res_block=False,
    )


class Runner:
    def __init__(self, name, model, arch, device, amp, channels_last):
        self.name, self.model, self.arch, self.device, self.amp = name, model, arch, device, amp
        self.channels_last = channels_last and device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 or device.type != "cuda" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and self.dtype == torch.float16)
        self.times: list[float] = []
        self.peak = 0

    def step(self, x, y):
        if self.channels_last:
            x = x.to(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            out = self.model(x, self.arch) if self.arch is not None else self.model(x)
            if isinstance(out, torch.Tensor) and out.dim() == 6:  # DynUNet stacks its heads
                out = list(out.unbind(1))
            loss = deep_supervision_loss(out, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)

    def timed(self, x, y):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t = time.perf_counter()
        self.step(x, y)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        self.times.append(time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--base-width", type=int, default=32)
    ap.add_argument("--max-width", type=int, default=320)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test at a tiny size")
    ap.add_argument("--memory-archs", type=int, default=20, help="architectures of the memory check")
    args = ap.parse_args()
    if args.tiny:
        args.patches, args.reps, args.warmup, args.base_width, args.max_width = [32], 1, 1, 4, 16
        args.depth = 3
        device = torch.device("cpu")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    space = SearchSpace.default(depth=args.depth, base_width=args.base_width, max_width=args.max_width)
    arch = plain_unet(space)
    print(
        f"device: {name}; space depth {args.depth}, widths {space.widths}; path {arch.code}; "
        f"batch {args.batch}; {args.reps} reps after {args.warmup} warm-up"
    )
    print("| patch | precision | network | step ms | Mvoxel/s | peak GB | vs derived |")
    print("|---:|---|---|---:|---:|---:|---:|")
    precisions = (False, True) if device.type == "cuda" else (False,)  # CPU autocast is not the target
    for patch in args.patches:
        for amp in precisions:
            torch.manual_seed(0)
            sn = Supernet(space, 1, 3).to(device).train()
            runners = [
                Runner("supernet", sn, arch, device, amp, args.channels_last),
                Runner("derived", sn.derive(arch).train(), None, device, amp, args.channels_last),
            ]
            dyn = dynunet(1, 3, args.depth)
            if dyn is not None:
                runners.append(
                    Runner("dynunet", dyn.to(device).train(), None, device, amp, args.channels_last)
                )
            x = torch.randn(args.batch, 1, patch, patch, patch, device=device)
            y = torch.randint(0, 3, (args.batch, patch, patch, patch), device=device)
            try:
                for _ in range(args.warmup):
                    for r in runners:
                        r.step(x, y)
                for _ in range(args.reps):
                    for r in runners:
                        r.timed(x, y)
            except torch.cuda.OutOfMemoryError:
                print(f"| {patch} | {'amp' if amp else 'fp32'} | out of memory | | | | |")
                torch.cuda.empty_cache()
                continue
            base = statistics.median(runners[1].times)
            for r in runners:
                t = statistics.median(r.times)
                vox = args.batch * patch**3 / t / 1e6
                peak = f"{r.peak / 1e9:.2f}" if device.type == "cuda" else "n/a"
                print(
                    f"| {patch}^3 | {'amp' if amp else 'fp32'} | {r.name} | {t * 1e3:.1f} | {vox:.2f} | "
                    f"{peak} | {t / base:.3f} |"
                )
            if dyn is None:
                print(f"| {patch}^3 | {'amp' if amp else 'fp32'} | dynunet | (MONAI not installed) | | | |")
            del runners, sn
            if device.type == "cuda":
                torch.cuda.empty_cache()
    memory_check(args.memory_archs, device, tiny=args.tiny)


def memory_check(n: int, device: torch.device, *, tiny: bool = False) -> None:
    """The CPU count against CUDA's fp32 peak (and the AMP peak) for ``n`` random architectures."""
    import numpy as np

    depth, base, top, side = (2, 4, 8, 16) if tiny else (4, 16, 320, 64)
    space = SearchSpace.default(depth=depth, base_width=base, max_width=top)
    shape = (2, 1, side, side, side)
    print(
        f"\nmeasured memory, {n} random architectures, depth {depth}, widths {base}-{top}, {side}^3, batch 2"
    )
    print("| architecture | CPU count MB | CUDA fp32 MB | count / CUDA | CUDA AMP MB |")
    print("|---|---:|---:|---:|---:|")
    rng, ratios = np.random.default_rng(0), []
    for _ in range(n):
        arch = space.sample(rng)
        torch.manual_seed(0)
        net = RONASNet(space, arch, 1, 3)
        count = cpu_training_memory(net, shape, 3)
        if device.type != "cuda":
            print(f"| {arch.code} | {count / 1e6:.1f} | n/a | | |")
            continue
        fp32 = cuda_training_memory(net.cpu(), shape, 3, device, amp=False)
        amp = cuda_training_memory(net.cpu(), shape, 3, device, amp=True)
        ratios.append(count / fp32)
        print(
            f"| {arch.code} | {count / 1e6:.1f} | {fp32 / 1e6:.1f} | {count / fp32:.3f} | {amp / 1e6:.1f} |"
        )
    if ratios:
        within = sum(abs(r - 1) <= 0.10 for r in ratios)
        print(
            f"count / CUDA fp32 peak: median {statistics.median(ratios):.3f}, "
            f"range {min(ratios):.3f}-{max(ratios):.3f}, within 10%: {within}/{len(ratios)}"
        )


if __name__ == "__main__":
    main()
