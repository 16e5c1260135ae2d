"""Data-parallel scaling (issue 14): steps per second, time per trial and the communication share of
a step, for 1 and 2 ranks (gloo on the CPU here; ``--backend nccl --device cuda`` on a GPU machine).

Every configuration trains the same path of the README benchmark's search space on DATA with the
same per-rank batch, then validates it with the cases split across ranks; communication is the time
in the gradient all-reduce and the batch-Dice sums.

    python benchmarks/distributed_scaling.py ../shared/data/Task901_BrainTissueTemplates --ranks 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ronas_optuna import SearchSpace, Supernet
from ronas_optuna.bench import README_SETTINGS
from ronas_optuna.data import MSDDataset, candidate_patch_sizes
from ronas_optuna.evaluator import Evaluator
from ronas_optuna.space import Architecture
from ronas_optuna.team import Team
from ronas_optuna.trainer import PathTrainer


class _TimedTeam(Team):
    seconds = 0.0
    ddp = False  # DistributedDataParallel averages the gradients instead

    def average_gradients(self, parameters):  # type: ignore[no-untyped-def]
        if _TimedTeam.ddp:
            return
        t = time.perf_counter()
        super().average_gradients(parameters)
        _TimedTeam.seconds += time.perf_counter() - t

    def sum_tensor(self, t):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = super().sum_tensor(t)
        _TimedTeam.seconds += time.perf_counter() - t0
        return out


def _rank(rank: int, world: int, ddp: bool, a: argparse.Namespace, init: str, out: str) -> None:
    torch.set_num_threads(max(1, a.threads // world))
    if a.device == "cuda":
        torch.cuda.set_device(rank)
        a.device = f"cuda:{rank}"
    team = None
    if world > 1:
        dist.init_process_group(a.backend, init_method=f"file://{init}", rank=rank, world_size=world)
        team = _TimedTeam(rank, world)
    s = README_SETTINGS
    ds = MSDDataset(a.data, spacing=s.data.spacing, cache_dir=a.cache)
    train, val = ds.case_ids[:-1], ds.case_ids[-1:] * 2  # two validation volumes to split
    shape = ds.median_shape(train)
    patches = candidate_patch_sizes(shape, depth=s.space.depth, n=1, max_voxels=s.space.max_patch_voxels)
    widths = {"base_width": s.space.base_width, "max_width": s.space.max_width}
    space = SearchSpace.default(depth=s.space.depth, patch_sizes=patches, **widths)
    torch.manual_seed(0)
    sn = Supernet(space, ds.in_channels, ds.num_classes).to(a.device)
    trainer = PathTrainer(
        sn.parameters(), ds.load_all(train), batch_size=a.batch, lr=s.training.lr, device=a.device, team=team
    )
    arch = Architecture.from_params(space, {n: d.choices[0] for n, d in space.distributions().items()})
    net, patch = sn.path(arch).train(), patches[0]
    params = net.parameters_on_path()
    trainer.train(net, params, patch, 2)  # warm-up
    _TimedTeam.seconds, _TimedTeam.ddp = 0.0, ddp
    t0 = time.perf_counter()
    forward: torch.nn.Module = net
    if ddp:  # a wrapper per trial (the path changes), over the whole supernet's parameters
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(net, find_unused_parameters=True)
    trainer.train(forward, params, patch, a.steps, start=100)
    train_s = time.perf_counter() - t0
    comm_s = _TimedTeam.seconds
    ev = Evaluator(ds.load_all(val), ds.num_classes, device=a.device)
    t0 = time.perf_counter()
    ev.evaluate(sn.path(arch), patch, cases=ev.cases[rank::world])
    if team is not None:
        dist.barrier()
    val_s = time.perf_counter() - t0
    if rank == 0:
        Path(out).write_text(json.dumps({"train_s": train_s, "comm_s": comm_s, "val_s": val_s}))
    if team is not None:
        team.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2, help="patches per rank and step")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the ranks")
    p.add_argument("--backend", default="gloo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache", default="scaling_cache")
    p.add_argument("--ddp", action="store_true", help="also DistributedDataParallel instead of ours")
    a = p.parse_args()
    dev = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {a.threads} threads"
    print(f"{Path(a.data).name}, {dev}, {a.backend}, batch {a.batch} per rank, {a.steps} steps")
    print(
        "| ranks | gradients | global batch | steps/s | patches/s | speed-up (patches/s) "
        "| our comm share of a step | validation s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    base = None
    runs = [(w, False) for w in a.ranks] + [(w, True) for w in a.ranks if a.ddp and w > 1]
    for world, ddp in runs:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out.json")
            mp.spawn(_rank, args=(world, ddp, a, os.path.join(tmp, "init"), out), nprocs=world)
            r = json.loads(Path(out).read_text())
        sps = a.steps / r["train_s"]
        pps = sps * a.batch * world
        base = base or pps
        how = "DDP (whole supernet)" if ddp else ("bucketed, path only" if world > 1 else "-")
        print(
            f"| {world} | {how} | {a.batch * world} | {sps:.2f} | {pps:.2f} | {pps / base:.2f}x | "
            f"{100 * r['comm_s'] / r['train_s']:.1f}% | {r['val_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
