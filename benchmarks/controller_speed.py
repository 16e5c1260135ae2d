"""How long the controller takes to learn from one reward: the fused update against stepping the cell.

Learning is what a joining worker's replay of a study spends its time on. ``fused`` is
:class:`~ronas_optuna.Controller` as it is (one ``torch.lstm`` call over the known choices, the
heads in one padded product, a ``foreach`` Adam step); ``stepped`` is the same controller with the
previous arithmetic: the LSTM cell stepped decision by decision, one head at a time, and a
single-tensor Adam. Both learn from the same rewards on the default space, interleaved in rounds
so that other load on the machine falls on both.

    python benchmarks/controller_speed.py --rewards 400 --rounds 5
"""

from __future__ import annotations

import argparse
import time

import torch

from ronas_optuna import SearchSpace
from ronas_optuna.controller import Controller, _Adam


class _SingleTensorAdam(_Adam):
    foreach = False  # one tensor at a time, as before; clipping follows the optimizer


class Stepped(Controller):
    """The controller with the previous arithmetic (for this comparison only)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.optimizer = _SingleTensorAdam(list(self.parameters()), lr=self.config.lr)

    def _score(
        self, choices: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = choices.shape[0]
        hx = cx = torch.zeros(batch, self.config.hidden_size)
        inp, logp, ent = self.start.expand(batch, -1), torch.zeros(batch), torch.zeros(batch)
        for t, name in enumerate(self.names):
            hx, cx = self.lstm(inp, (hx, cx))
            log_probs = torch.log_softmax(self._logits(hx, name), dim=-1)
            step = log_probs.gather(1, choices[:, t : t + 1]).squeeze(1)
            logp = logp + (step if mask is None else step * mask[:, t])
            ent = ent - (log_probs.exp() * log_probs).sum(-1)
            inp = self.embed[name](choices[:, t])
        return logp, ent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rewards", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    sizes = {n: len(d.choices) for n, d in SearchSpace.default(depth=4).distributions().items()}
    ref = Controller(sizes, seed=0)
    archs = [ref.sample(torch.Generator().manual_seed(i)) for i in range(a.rewards)]
    rewards = [float(i % 7) / 7 for i in range(a.rewards)]
    seconds: dict[str, list[float]] = {"stepped": [], "fused": []}
    for _ in range(a.rounds):
        for name, cls in (("stepped", Stepped), ("fused", Controller)):
            ctrl = cls(sizes, seed=0)
            t0 = time.perf_counter()
            for arch, r in zip(archs, rewards):
                ctrl.observe(arch, r)
            seconds[name].append(time.perf_counter() - t0)
    per = {k: 1e3 * min(v) / a.rewards for k, v in seconds.items()}
    print(
        f"default space ({len(sizes)} decisions), {a.rewards} rewards, best of {a.rounds} rounds, one thread"
    )
    print("| learning | ms per reward |")
    print("|---|---:|")
    for k, v in per.items():
        print(f"| {k} | {v:.2f} |")
    print(f"stepped / fused: {per['stepped'] / per['fused']:.1f}x")


if __name__ == "__main__":
    main()
