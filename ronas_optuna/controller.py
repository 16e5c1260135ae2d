"""The ENAS-style LSTM policy and its REINFORCE update, in plain torch (no Optuna here).

The policy emits one decision per LSTM step. The input of a step is the embedding of the previous
step's choice (a learned start token at step 0); each decision has its own embedding table and its own
softmax head, keyed by decision name as Optuna keys distributions. Logits are shaped as in ENAS:
``tanh_constant * tanh(logits / temperature)``.

:meth:`Controller.observe` feeds one (choices, reward) pair; every ``batch_size`` pairs it takes one
REINFORCE step on the batch mean of ``-(reward - baseline) * log_prob - entropy_weight * entropy``,
with an exponential-moving-average baseline, Adam and gradient-norm clipping.

Two options from the RL literature reuse what was learned from few, expensive rewards:

* ``replay_size`` / ``epochs`` / ``clip``: PPO's clipped surrogate (Schulman et al., 2017) over the
  last ``replay_size`` trials, ``epochs`` gradient steps per update, each sample weighted by the
  ratio of its probability now to its probability when it was first learned from.
* ``risk_quantile``: risk-seeking policy gradient (Petersen et al., ICLR 2021): the baseline is the
  ``1 - risk_quantile`` quantile of the last ``risk_window`` rewards and only trials above it are
  reinforced, so the policy optimises its best draws, which is what a search keeps.
* ``rank_rewards``: fitness shaping by rank (as natural evolution strategies do, Wierstra et al.,
  JMLR 2014): a reward's advantage is the normal score of its rank among the last ``risk_window``
  rewards, so only the order of values matters, not their scale or a heavy tail of bad ones.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.optim.adam import adam


@dataclass
class ControllerConfig:
    """Hyper-parameters of the controller (ENAS defaults where the paper is silent).

    Attributes:
        hidden_size: LSTM units.
        temperature: Logits are divided by it before the tanh shaping. 3 for a sampler on its own,
            chosen on NAS-Bench-201 CIFAR-10, the sampler's development table (10 seeds, Optuna
            5.1.0: regret 0.521 and 0.282 at 50 and 100 trials, against 0.838 and 0.714 at 5, which
            draws like Random that early). A supernet search (``ronas search``,
            :func:`~ronas_optuna.create_search`, ``ronas benchmark``) uses 5 instead
            (:data:`SEARCH_CONTROLLER`), chosen on the population benchmark's tuning split. Studies
            keep the temperature they started with.
        final_temperature: With ``anneal_rewards``, the temperature falls geometrically from
            ``temperature`` to this one over the first ``anneal_rewards`` rewards, and stays there:
            an entropy schedule, so that the policy explores early and settles by the end of a
            planned search (``None``: constant). From 3 to 1 over 50 trials it was not shown to
            change held-out Dice on Task901 (+0.004 [-0.005, 0.013], README), so it is off.
        anneal_rewards: Rewards the temperature schedule takes (0: constant).
        tanh_constant: Logit range; ``None`` disables the tanh shaping.
        entropy_weight: Weight of the entropy bonus.
        baseline_decay: Decay of the moving-average reward baseline.
        lr: Adam learning rate (above ENAS's 3.5e-4 to 1e-3: see ``batch_size``).
        batch_size: Rewards averaged per update. The paper used 20 children; lr 1e-2 and 2 were
            chosen on the real shared-weight objective (``benchmarks/archive/controller_tuning.py``), where a
            policy that settles within a few hundred trials also trains its own paths more;
            ``lr=5e-3, batch_size=5`` explores longer (``benchmarks/sampler_landscape.py``).
        grad_clip: Gradient-norm clip.
        normalize_advantage: Divide advantages by a moving standard deviation of the rewards, so
            that the step size does not depend on the reward's scale (Dice differences are small).
        replay_size: Trials kept for PPO-style updates (0: plain REINFORCE on each batch).
        epochs: Gradient steps per update on the replayed trials (``replay_size`` > 0).
        clip: PPO's clipping range of the probability ratio.
        risk_quantile: Reinforce only rewards in this top fraction of the last ``risk_window``
            rewards (``None``: the moving-average baseline, every trial).
        risk_window: Rewards the risk-seeking quantile, or the rank of ``rank_rewards``, is taken over.
        rank_rewards: The advantage of a reward is the normal score ``Φ⁻¹((rank - 0.5) / n)`` of
            its rank among the last ``risk_window`` rewards (itself included; ties share the mean
            rank), in place of the moving-average baseline and scale. Off: on NAS-Bench-201
            CIFAR-10 (10 seeds) it was not shown to differ from the default at 50 to 1,000 trials
            (docs/benchmarks.md, where a check on HPOLib's heavy-tailed losses is reported).
        startup_trials: The first this many trials of a study draw every decision uniformly at
            random (as TPE's ``n_startup_trials``); the policy still learns from them (0: none).
        repeat_reward: The reward of an architecture evaluated before (single-objective studies):
            ``"last"``, this evaluation's value; ``"mean"``, the mean of its evaluations so far (the
            earlier-numbered COMPLETE trials with the same decisions, and this one), which takes the
            noise out of an architecture the policy keeps drawing. On NAS-Bench-201 CIFAR-10 (10
            seeds) ``"mean"`` was not shown to differ (regret 0.057 against 0.024 at 1,000 trials,
            identical up to 300), so ``"last"`` stays.
        pareto_scale: How a multi-objective reward measures objectives before its additive
            epsilon-indicator against the earlier front (:func:`~ronas_optuna.sampler.pareto_reward`):
            ``"rank"``, each objective's mid-rank among the trials (scale-free, but a point that
            extends the front earns about ``1/n`` after ``n`` trials, however far it goes), or
            ``"value"``, each objective min-max normalised over the trials (how far a point
            advances the front counts).
    """

    hidden_size: int = 64
    temperature: float = 3.0
    final_temperature: float | None = None
    anneal_rewards: int = 0
    tanh_constant: float | None = 1.5
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.95
    lr: float = 1e-2
    batch_size: int = 2
    grad_clip: float = 5.0
    normalize_advantage: bool = True
    replay_size: int = 0
    epochs: int = 1
    clip: float = 0.2
    risk_quantile: float | None = None
    risk_window: int = 50
    rank_rewards: bool = False
    startup_trials: int = 0
    repeat_reward: str = "last"
    pareto_scale: str = "rank"

    def __post_init__(self) -> None:
        if self.rank_rewards and self.risk_quantile is not None:
            raise ValueError("rank_rewards and risk_quantile are two baselines: choose one")
        if self.pareto_scale not in ("rank", "value"):
            raise ValueError(f"pareto_scale must be 'rank' or 'value', got {self.pareto_scale!r}")
        if self.repeat_reward not in ("last", "mean"):
            raise ValueError(f"repeat_reward must be 'last' or 'mean', got {self.repeat_reward!r}")


#: The controller of a supernet search (``ronas search``, :func:`~ronas_optuna.create_search`,
#: ``ronas benchmark``): temperature 5, chosen on the population benchmark's tuning split (x1, 3 seeds
#: × 12 subjects: the fine-tuned network's validation Dice +0.054 [+0.015, +0.092] over 3). Broader
#: sampling trains the shared weights more evenly early on; a sampler on its own keeps 3.
SEARCH_CONTROLLER = ControllerConfig(temperature=5.0)


def rank_scores(values: Sequence[float]) -> np.ndarray:
    """Normal scores of ``values``' ranks, ``Φ⁻¹((rank - 0.5) / n)`` (ties share their mean rank):
    centred at 0, the same for any increasing transform of the values."""
    from scipy.stats import norm, rankdata

    v = np.asarray(values, dtype=float)
    return np.asarray(norm.ppf((rankdata(v) - 0.5) / len(v)), dtype=float)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Controller(nn.Module):
    """LSTM policy over named categorical decisions.

    Args:
        decisions: ``{name: number_of_choices}`` in emission order.
        config: Hyper-parameters.
        seed: Seeds the initial weights.
    """

    #: Changes whenever learning's arithmetic does (2: the fused :meth:`_score` and a foreach
    #: Adam), so that a stored state from another version is not mixed with a replay by this one.
    learning_version = 2

    def __init__(
        self,
        decisions: Mapping[str, int],
        config: ControllerConfig | None = None,
        *,
        seed: int | None = 0,
    ):
        super().__init__()
        if not decisions:
            raise ValueError("the controller needs at least one decision")
        self.config = config or ControllerConfig()
        if self.config.final_temperature is not None and not self.config.final_temperature > 0:
            raise ValueError(f"final_temperature must be > 0, got {self.config.final_temperature!r}")
        self.names = list(decisions)
        self.sizes = [int(decisions[n]) for n in self.names]
        h = self.config.hidden_size
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed) % 2**63)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            self.lstm = nn.LSTMCell(h, h)
            self.start = nn.Parameter(torch.zeros(1, h))
            self.embed = nn.ModuleDict({n: nn.Embedding(k, h) for n, k in decisions.items()})
            self.heads = nn.ModuleDict({n: nn.Linear(h, k) for n, k in decisions.items()})
            for p in self.parameters():
                nn.init.uniform_(p, -0.1, 0.1)
        self.optimizer = _Adam(list(self.parameters()), lr=self.config.lr)
        self.baseline: float | None = None
        self.reward_var: float | None = None
        self.n_updates = 0
        self.n_observed = 0
        self._batch: list[tuple[list[int], float, list[bool] | None]] = []
        # PPO replay: (choices, mask, advantage, log-probability when first learned from)
        self._replay: list[tuple[list[int], list[bool] | None, float, float]] = []
        self._recent: list[float] = []  # the risk-seeking or ranking window
        self.last_entropy = float("nan")
        self._np: dict[str, Any] | None = None
        # Padded layout of the heads for :meth:`_score`: row t holds decision t's choices.
        widest = max(self.sizes)
        self._offsets = torch.tensor([0, *self.sizes[:-1]]).cumsum(0)
        self._valid = torch.arange(widest)[None, :] < torch.tensor(self.sizes)[:, None]
        self._columns = torch.where(self._valid, self._offsets[:, None] + torch.arange(widest), 0)

    # ------------------------------------------------------------------ policy
    @property
    def temperature(self) -> float:
        """The temperature after the rewards observed so far (see :class:`ControllerConfig`)."""
        cfg = self.config
        if cfg.final_temperature is None or cfg.anneal_rewards <= 0:
            return cfg.temperature
        done = min(self.n_observed / cfg.anneal_rewards, 1.0)
        return float(cfg.temperature * (cfg.final_temperature / cfg.temperature) ** done)

    def _logits(self, h: torch.Tensor, name: str) -> torch.Tensor:
        logits = self.heads[name](h) / self.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return logits

    def _roll(self, generator: torch.Generator | None) -> tuple[list[int], float]:
        """Step the LSTM cell decision by decision, sampling each choice; the choices and the
        policy's entropy along them."""
        hx = torch.zeros(1, self.config.hidden_size)
        cx = torch.zeros(1, self.config.hidden_size)
        inp = self.start
        picked, ent = [], 0.0
        for name in self.names:
            hx, cx = self.lstm(inp, (hx, cx))
            log_probs = torch.log_softmax(self._logits(hx, name), dim=-1)
            c = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
            picked.append(int(c))
            ent -= float((log_probs.exp() * log_probs).sum())
            inp = self.embed[name](c)
        return picked, ent

    def _score(
        self, choices: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of known choices (batch x decisions), differentiable.

        With every choice known, so is every LSTM input: the whole sequence is one ``torch.lstm``
        call (what ``nn.LSTM`` runs, here on the cell's weights) and the heads one product with
        their weights padded to the widest decision. The same function as stepping the cell, up
        to float rounding, and with its backward pass about 6x faster: it is what learning, and so
        a joining worker's replay of a study, spends its time on. ``mask`` (batch x decisions, 0/1)
        keeps decisions out of the log-probability.
        """
        batch, h = choices.shape[0], self.config.hidden_size
        embeds = [cast(nn.Embedding, self.embed[n]) for n in self.names]
        heads = [cast(nn.Linear, self.heads[n]) for n in self.names]
        table = torch.cat([e.weight for e in embeds])
        previous = table[(choices[:, :-1] + self._offsets[:-1]).T]  # decisions-1 x batch x h
        inputs = torch.cat([self.start.expand(1, batch, h), previous])
        zeros = torch.zeros(1, batch, h)
        cell = self.lstm
        weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        hidden = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, False, False, False)[0]
        w = torch.cat([m.weight for m in heads])[self._columns]  # decisions x widest x h
        b = torch.cat([m.bias for m in heads])[self._columns]
        logits = (torch.einsum("tbh,tch->tbc", hidden, w) + b[:, None, :]) / self.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        padding = ~self._valid[:, None, :]
        log_probs = torch.log_softmax(logits.masked_fill(padding, float("-inf")), dim=-1)
        step = log_probs.gather(2, choices.T[:, :, None]).squeeze(2)  # decisions x batch
        logp = (step if mask is None else step * mask.T).sum(0)
        ent = -(log_probs.exp() * log_probs.masked_fill(padding, 0.0)).sum((0, 2))
        return logp, ent

    def _numpy_weights(self) -> dict[str, Any]:
        """The weights as float64 numpy arrays, cached until the next update (fast sampling)."""
        if self._np is None:
            with torch.no_grad():
                w = {k: v.detach().double().numpy().copy() for k, v in self.state_dict().items()}
            self._np = {
                "w_ih": w["lstm.weight_ih"],
                "w_hh": w["lstm.weight_hh"],
                "b": w["lstm.bias_ih"] + w["lstm.bias_hh"],
                "start": w["start"][0],
                "heads": [(w[f"heads.{n}.weight"], w[f"heads.{n}.bias"]) for n in self.names],
                "embed": [w[f"embed.{n}.weight"] for n in self.names],
            }
        return self._np

    def sample_uniform(self, generator: torch.Generator | None = None) -> list[int]:
        """One architecture with every decision drawn uniformly (one number per decision)."""
        u = torch.rand(len(self.names), generator=generator, dtype=torch.float64).numpy()
        return [min(int(x * k), k - 1) for x, k in zip(u, self.sizes)]

    def sample(self, generator: torch.Generator | None = None) -> list[int]:
        """Draw one architecture as a list of choice indices.

        The draw uses one uniform number per decision from ``generator`` (inverse-CDF sampling)
        and a numpy copy of the weights: about 10x faster than stepping ``nn.LSTMCell``, and the
        same function as :meth:`log_prob` up to float rounding.
        """
        w = self._numpy_weights()
        u = torch.rand(len(self.names), generator=generator, dtype=torch.float64).numpy()
        hs = self.config.hidden_size
        h = np.zeros(hs)
        c = np.zeros(hs)
        x = w["start"]
        out, entropy, temperature = [], 0.0, self.temperature
        for t in range(len(self.names)):
            gates = w["w_ih"] @ x + w["w_hh"] @ h + w["b"]
            i, f = _sigmoid(gates[:hs]), _sigmoid(gates[hs : 2 * hs])
            g, o = np.tanh(gates[2 * hs : 3 * hs]), _sigmoid(gates[3 * hs :])
            c = f * c + i * g
            h = o * np.tanh(c)
            wt, bt = w["heads"][t]
            logits = (wt @ h + bt) / temperature
            if self.config.tanh_constant is not None:
                logits = self.config.tanh_constant * np.tanh(logits)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            entropy -= float((p * np.log(p)).sum())
            k = min(int(np.searchsorted(np.cumsum(p), u[t] * p.sum(), side="right")), len(p) - 1)
            out.append(k)
            x = w["embed"][t][k]
        self.last_entropy = entropy
        return out

    def log_prob(self, choices: Sequence[Sequence[int]]) -> torch.Tensor:
        """Log-probabilities of a batch of choice-index lists (differentiable)."""
        return self._score(torch.as_tensor(choices, dtype=torch.long))[0]

    @torch.no_grad()
    def entropy(self, n: int = 1, generator: torch.Generator | None = None) -> float:
        """Policy entropy (nats) summed over decisions, estimated on ``n`` samples."""
        total = 0.0
        for _ in range(n):
            total += self._roll(generator)[1]
        return total / n

    @torch.no_grad()
    def most_likely(self) -> list[int]:
        """Greedy decoding: the arg-max choice at every step."""
        hx = torch.zeros(1, self.config.hidden_size)
        cx = torch.zeros(1, self.config.hidden_size)
        inp = self.start
        out = []
        for name in self.names:
            hx, cx = self.lstm(inp, (hx, cx))
            c = self._logits(hx, name).argmax(-1)
            out.append(int(c))
            inp = self.embed[name](c)
        return out

    @property
    def max_entropy(self) -> float:
        return sum(math.log(k) for k in self.sizes)

    # ------------------------------------------------------------------ learning
    def observe(self, choices: Sequence[int], reward: float, *, mask: Sequence[bool] | None = None) -> bool:
        """Add one reward; returns True when this completed a batch and the policy was updated.

        ``mask`` marks the decisions the policy chose (default: all); the others condition the
        LSTM but take no credit.
        """
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        if mask is not None and len(mask) != len(self.names):
            raise ValueError(f"mask has {len(mask)} entries for {len(self.names)} decisions")
        self._batch.append((list(choices), float(reward), None if mask is None else [bool(m) for m in mask]))
        self.n_observed += 1
        if len(self._batch) < self.config.batch_size:
            return False
        self._update(self._batch)
        self._batch = []
        return True

    # ------------------------------------------------------------------ state
    def state_bytes(self) -> bytes:
        """Everything learning has changed (weights, Adam, baseline, counters, the unfinished
        batch), bit for bit; :meth:`load_state_bytes` restores it into a controller built with the
        same decisions, config and seed."""
        buf = io.BytesIO()
        torch.save(
            {
                "module": self.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "baseline": self.baseline,
                "reward_var": self.reward_var,
                "n_updates": self.n_updates,
                "n_observed": self.n_observed,
                "batch": self._batch,
                "replay": self._replay,
                "recent": self._recent,
            },
            buf,
        )
        return buf.getvalue()

    def load_state_bytes(self, data: bytes) -> None:
        d = torch.load(io.BytesIO(data), weights_only=True)
        self.load_state_dict(d["module"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.baseline, self.reward_var = d["baseline"], d["reward_var"]
        self.n_updates, self.n_observed = int(d["n_updates"]), int(d["n_observed"])
        self._batch = [(list(c), float(r), None if m is None else list(m)) for c, r, m in d["batch"]]
        self._replay = [
            (list(c), None if m is None else list(m), float(a), float(lp)) for c, m, a, lp in d["replay"]
        ]
        self._recent = [float(r) for r in d["recent"]]
        self._np = None

    def _advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """Advantages of a batch (then the baseline and reward scale move on)."""
        cfg = self.config
        if self.baseline is None:
            self.baseline = float(rewards.mean())
            self.reward_var = float(rewards.var(unbiased=False)) if len(rewards) > 1 else 0.0
        std = math.sqrt(max(self.reward_var or 0.0, 0.0))
        if cfg.rank_rewards:
            self._recent = (self._recent + rewards.tolist())[-cfg.risk_window :]
            return torch.as_tensor(rank_scores(self._recent)[-len(rewards) :], dtype=rewards.dtype)
        if cfg.risk_quantile is not None:
            self._recent = (self._recent + rewards.tolist())[-cfg.risk_window :]
            threshold = float(np.quantile(self._recent, 1.0 - cfg.risk_quantile))
            adv = (rewards - threshold).clamp(min=0.0)
        else:
            adv = rewards - self.baseline
        if cfg.normalize_advantage:
            adv = adv / (std + 1e-8) if std > 1e-8 else adv * 0.0
        d = cfg.baseline_decay
        for r in rewards.tolist():
            diff = r - self.baseline
            self.baseline += (1 - d) * diff
            self.reward_var = d * (self.reward_var or 0.0) + (1 - d) * diff * diff
        return adv

    def _masks(self, masks: Sequence[list[bool] | None]) -> torch.Tensor | None:
        if all(m is None for m in masks):
            return None
        return torch.tensor([m if m is not None else [True] * len(self.names) for m in masks]).float()

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip, foreach=self.optimizer.foreach)
        self.optimizer.step()

    def _update(self, batch: list[tuple[list[int], float, list[bool] | None]]) -> None:
        cfg = self.config
        adv = self._advantages(torch.tensor([r for _, r, _ in batch]))
        choices = torch.tensor([c for c, _, _ in batch])
        masks = self._masks([m for _, _, m in batch])
        if cfg.replay_size > 0:
            self._update_replay(batch, adv, choices, masks)
        else:
            logp, ent = self._score(choices, masks)
            self._step(-(adv * logp).mean() - cfg.entropy_weight * ent.mean())
        self._np = None
        self.n_updates += 1

    def _update_replay(
        self,
        batch: list[tuple[list[int], float, list[bool] | None]],
        adv: torch.Tensor,
        choices: torch.Tensor,
        masks: torch.Tensor | None,
    ) -> None:
        """PPO's clipped surrogate over the batch and the replayed trials, ``epochs`` steps."""
        cfg = self.config
        with torch.no_grad():
            old = self._score(choices, masks)[0]
        fresh = [(c, m, float(a), float(lp)) for (c, _, m), a, lp in zip(batch, adv, old)]
        self._replay = (self._replay + fresh)[-cfg.replay_size :]
        choices = torch.tensor([c for c, _, _, _ in self._replay])
        masks = self._masks([m for _, m, _, _ in self._replay])
        adv = torch.tensor([a for _, _, a, _ in self._replay])
        old = torch.tensor([lp for _, _, _, lp in self._replay])
        for _ in range(cfg.epochs):
            logp, ent = self._score(choices, masks)
            ratio = torch.exp(logp - old)
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
            self._step(-surrogate.mean() - cfg.entropy_weight * ent.mean())


class _Adam:
    """``torch.optim.Adam`` (default betas and eps, ``foreach=True``: one update over all
    tensors) through its functional form ``torch.optim.adam.adam``: the same update and
    ``state_dict`` format bit for bit, without ``torch.optim.Optimizer``, whose first use imports
    ``torch._dynamo`` (seconds per process, on the path of a worker joining a study or of ``ronas
    export``). A parameter whose gradient is ``None`` is skipped, its step count unchanged, as
    ``torch.optim.Adam`` does."""

    betas = (0.9, 0.999)
    eps = 1e-8
    foreach = True

    def __init__(self, params: list[nn.Parameter], *, lr: float) -> None:
        self.params, self.lr = params, lr
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Gradients to ``None`` (``torch.optim``'s default)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in live:
            if i not in self.state:
                p = self.params[i]
                self.state[i] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        st = [self.state[i] for i in live]
        adam(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],  # type: ignore[misc]
            [s["exp_avg"] for s in st],
            [s["exp_avg_sq"] for s in st],
            [],
            [s["step"] for s in st],
            amsgrad=False,
            beta1=self.betas[0],
            beta2=self.betas[1],
            lr=self.lr,
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
            foreach=self.foreach,
        )

    def state_dict(self) -> dict[str, Any]:
        group = {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": 0,
            "amsgrad": False,
            "maximize": False,
            "foreach": self.foreach,
            "capturable": False,
            "differentiable": False,
            "fused": None,
            "decoupled_weight_decay": False,
            "params": list(range(len(self.params))),
        }
        return {
            "state": dict(sorted(self.state.items())),
            "param_groups": [group],
        }  # live tensors, as torch's

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        self.state = {int(i): {k: v.clone() for k, v in s.items()} for i, s in d["state"].items()}
