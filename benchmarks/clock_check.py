"""Does the budget clock hold when the machine is shared? The same work timed alone and beside busy
processes, side by side in one run.

Every CPU comparison of the benchmarks gives a reference network the RONAS run's budget on
:func:`ronas_optuna.bench.fold.budget_clock`: the process's CPU time, so that other processes on the
machine do not shrink it. That is only fair if the CPU time of a piece of work does not grow when
other processes run beside it (shared caches and memory bandwidth, a busy host). This script times
``--steps`` training steps of a README-sized RONAS network (one torch thread) alone, then again while
``--busy`` other processes run the same steps in a loop, in ``--rounds`` alternating rounds, and prints
the CPU and wall seconds per step of each and their ratio (busy / alone). A CPU ratio near 1 says
the clock is fair beside other processes of this machine; the wall ratio shows how much they slowed
the work.

    python benchmarks/clock_check.py                 # 1 busy process (2 cores: one each)
    python benchmarks/clock_check.py --busy 3        # more processes than cores
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event

import numpy as np
import torch

from ronas_optuna.losses import deep_supervision_loss
from ronas_optuna.network import RONASNet
from ronas_optuna.space import SearchSpace


def training_steps(patch: int) -> Callable[[int], None]:
    """``run(n)``: ``n`` Adam steps of a README-sized network (depth 3, widths 8-32) on one thread."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = SearchSpace.default(depth=3, base_width=8, max_width=32, patch_sizes=[(patch,) * 3])
    net = RONASNet(space, space.sample(np.random.default_rng(0)), 1, 3).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 1, patch, patch, patch)
    y = torch.randint(0, 3, (2, patch, patch, patch))

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            deep_supervision_loss(net(x), y).backward()
            opt.step()

    return run


def _busy(patch: int, stop: Event) -> None:
    run = training_steps(patch)
    while not stop.is_set():
        run(1)


def timed(run: Callable[[int], None], steps: int) -> tuple[float, float]:
    """CPU and wall seconds per step of ``steps`` steps."""
    c0, w0 = time.process_time(), time.perf_counter()
    run(steps)
    return (time.process_time() - c0) / steps, (time.perf_counter() - w0) / steps


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps timed per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds alone and busy")
    ap.add_argument("--busy", type=int, default=1, help="processes running beside the timed one")
    ap.add_argument("--patch", type=int, default=32)
    a = ap.parse_args(argv)
    run = training_steps(a.patch)
    run(2)  # warm-up
    alone: list[tuple[float, float]] = []
    busy: list[tuple[float, float]] = []
    ctx = mp.get_context("spawn")
    for _ in range(a.rounds):
        alone.append(timed(run, a.steps))
        stop = ctx.Event()
        procs = [ctx.Process(target=_busy, args=(a.patch, stop), daemon=True) for _ in range(a.busy)]
        for p in procs:
            p.start()
        time.sleep(3.0)  # the busy processes are training before the timing starts
        busy.append(timed(run, a.steps))
        stop.set()
        for p in procs:
            p.join()
    lines = [f"{a.steps} steps x {a.rounds} rounds, {a.patch}^3 patch, {a.busy} busy process(es) beside"]
    for i, what in enumerate(("CPU", "wall")):
        one = statistics.median(t[i] for t in alone)
        many = statistics.median(t[i] for t in busy)
        lines.append(f"{what:>4} s/step: alone {one:.4f}, busy {many:.4f}, ratio busy/alone {many / one:.3f}")
    out = "\n".join(lines)
    print(out)
    return out


if __name__ == "__main__":
    main()
