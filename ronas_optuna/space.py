"""The macro search space: named categorical decisions and the :class:`Architecture` value.

The default space follows RONASMIS (Bae et al., MICCAI 2019): a 3D U-Net-like encoder-decoder with
``depth`` down-sampling stages (``depth + 1`` resolution levels) whose every macro choice is searched.

Axis convention: tensors are ``(N, C, X, Y, Z)`` with ``Z`` the through-plane (slice) axis after
reorientation to RAS. "In-plane" therefore means X and Y; ``331`` is a 3x3x1 kernel and ``221`` a
2x2x1 pooling window.

Decision names (``i`` is the level, 0 = full resolution):

========================  ==============================================================
``enc{i}_conv1``          first conv of encoder level ``i`` (changes the channel count)
``enc{i}_conv2``          second op of encoder level ``i``; may be ``identity``
``down{i}``               pooling into level ``i`` (``i >= 1``): ``222``, ``221``, ``none``
``skip{i}``               additive encoder skip into decoder level ``i``: ``add``/``none``
``dec{i}_conv``           op of decoder level ``i`` (``i < depth``), including ``conv1``
``act``                   activation, global by default (``per_level_activation`` for one
                          per level, named ``act{i}``)
``patch``                 optional: the input patch size, e.g. ``"96x96x64"``
========================  ==============================================================
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:  # Optuna is imported where a trial or distribution is used: a saved model needs none
    import optuna
    from optuna.distributions import CategoricalDistribution

Choice = str | int

#: Encoder conv ops: 3x3x3 at dilation 1, 2, 3 and the in-plane 3x3x1.
ENCODER_OPS: tuple[str, ...] = ("conv3_d1", "conv3_d2", "conv3_d3", "conv331")
#: Decoder ops, including the point-wise 1x1x1 conv.
DECODER_OPS: tuple[str, ...] = ("conv3_d1", "conv331", "conv1", "identity")
POOLINGS: tuple[str, ...] = ("222", "221", "none")
ACTIVATIONS: tuple[str, ...] = ("relu", "lrelu", "elu")
SKIPS: tuple[str, ...] = ("add", "none")

_CODE_ABBREV = {
    "conv3_d1": "a",
    "conv3_d2": "b",
    "conv3_d3": "c",
    "conv331": "p",
    "conv1": "o",
    "identity": "i",
    "222": "2",
    "221": "x",
    "none": "-",
    "add": "+",
    "relu": "R",
    "lrelu": "L",
    "elu": "E",
}


def pool_factor(choice: str) -> tuple[int, int, int]:
    """The (X, Y, Z) down-sampling factor of a ``down{i}`` choice."""
    return {"222": (2, 2, 2), "221": (2, 2, 1), "none": (1, 1, 1)}[choice]


#: The name pattern of each kind of per-level decision and weighted position (see the table above).
_POSITIONS = {
    "enc_conv1": "enc{}_conv1",
    "enc_conv2": "enc{}_conv2",
    "down": "down{}",
    "up": "up{}",
    "skip": "skip{}",
    "dec_conv": "dec{}_conv",
}


def position(kind: str, level: int) -> str:
    """The name of decision or position ``kind`` at ``level``: ``position("enc_conv1", 2)`` is
    ``"enc2_conv1"``; kinds are ``enc_conv1``, ``enc_conv2``, ``down``, ``up``, ``skip``, ``dec_conv``."""
    return _POSITIONS[kind].format(level)


@dataclass(frozen=True)
class Decision:
    """One named categorical decision of a :class:`SearchSpace`."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if not self.name or "." in self.name:
            raise ValueError(f"decision name {self.name!r} must be non-empty and contain no '.'")
        if len(self.choices) == 0:
            raise ValueError(f"decision {self.name!r} has no choices")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"decision {self.name!r} has duplicate choices: {self.choices}")
        for c in self.choices:
            if not isinstance(c, (str, int)) or isinstance(c, bool):
                raise ValueError(f"decision {self.name!r}: choice {c!r} must be a str or int")

    @property
    def distribution(self) -> CategoricalDistribution:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.choices)


class SearchSpace(Mapping[str, Decision]):
    """An ordered set of named categorical decisions.

    Args:
        decisions: The decisions, in the order the controller emits them.
        meta: Plain-JSON description of how the space was built (depth, widths, ...). The
            supernet reads its structure from here; extra decisions are allowed.
    """

    def __init__(self, decisions: Iterable[Decision], *, meta: Mapping[str, Any] | None = None):
        self._decisions: dict[str, Decision] = {}
        for d in decisions:
            if d.name in self._decisions:
                raise ValueError(f"duplicate decision name {d.name!r}")
            self._decisions[d.name] = d
        self.meta: dict[str, Any] = dict(meta or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(
        cls,
        *,
        depth: int = 4,
        base_width: int = 16,
        max_width: int = 320,
        encoder_ops: Sequence[str] = ENCODER_OPS,
        decoder_ops: Sequence[str] = DECODER_OPS,
        poolings: Sequence[str] = POOLINGS,
        activations: Sequence[str] = ACTIVATIONS,
        skips: Sequence[str] = SKIPS,
        allow_identity: bool = True,
        per_level_activation: bool = False,
        patch_sizes: Sequence[Sequence[int]] | None = None,
    ) -> SearchSpace:
        """The RONASMIS-style macro space.

        Args:
            depth: Number of down-sampling stages (``depth + 1`` levels).
            base_width: Channels at level 0; doubled per level, capped at ``max_width``.
            max_width: Channel cap.
            encoder_ops: Candidate encoder convs.
            decoder_ops: Candidate decoder ops.
            poolings: Candidate down-sampling per stage.
            activations: Candidate activations.
            skips: Candidate skip modes.
            allow_identity: Offer ``identity`` as the second op of each encoder level.
            per_level_activation: One activation decision per level instead of one global.
            patch_sizes: Optional candidate input patch sizes (each divisible by ``2**depth``).
        """
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if base_width < 1 or max_width < base_width:
            raise ValueError(f"need 1 <= base_width <= max_width, got {base_width}, {max_width}")
        for name, opts, allowed in (
            ("encoder_ops", encoder_ops, ENCODER_OPS),
            ("decoder_ops", decoder_ops, DECODER_OPS),
            ("poolings", poolings, POOLINGS),
            ("activations", activations, ACTIVATIONS),
            ("skips", skips, SKIPS),
        ):
            bad = [o for o in opts if o not in allowed]
            if bad or not opts:
                raise ValueError(f"{name}: unknown or empty options {bad or opts}; allowed {allowed}")
        widths = [min(base_width * 2**i, max_width) for i in range(depth + 1)]
        decisions: list[Decision] = []
        if patch_sizes:
            decisions.append(patch_decision(patch_sizes, depth))
        if not per_level_activation:
            decisions.append(Decision("act", tuple(activations)))
        conv2 = tuple(encoder_ops) + (("identity",) if allow_identity else ())
        for i in range(depth + 1):
            if i > 0:
                decisions.append(Decision(position("down", i), tuple(poolings)))
            if per_level_activation:
                decisions.append(Decision(f"act{i}", tuple(activations)))
            decisions.append(Decision(position("enc_conv1", i), tuple(encoder_ops)))
            decisions.append(Decision(position("enc_conv2", i), conv2))
        for i in reversed(range(depth)):
            decisions.append(Decision(position("skip", i), tuple(skips)))
            decisions.append(Decision(position("dec_conv", i), tuple(decoder_ops)))
        meta = {
            "kind": "ronasmis-unet",
            "depth": depth,
            "widths": widths,
            "per_level_activation": per_level_activation,
        }
        return cls(decisions, meta=meta)

    def with_decision(self, decision: Decision, *, first: bool = True) -> SearchSpace:
        """A copy with one more decision (e.g. patch size), first or last in order."""
        rest = [d for d in self._decisions.values() if d.name != decision.name]
        ds = [decision, *rest] if first else [*rest, decision]
        return SearchSpace(ds, meta=self.meta)

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, name: str) -> Decision:
        return self._decisions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decisions)

    def __len__(self) -> int:
        """Number of decisions (``size`` is the number of architectures)."""
        return len(self._decisions)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(self._decisions.values())

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return math.prod(len(d.choices) for d in self._decisions.values())

    @property
    def depth(self) -> int:
        return int(self.meta.get("depth", 0))

    @property
    def widths(self) -> list[int]:
        return list(self.meta.get("widths", []))

    def distributions(self) -> dict[str, CategoricalDistribution]:
        """Optuna distributions keyed by decision name."""
        return {n: d.distribution for n, d in self._decisions.items()}

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "decisions": [[d.name, list(d.choices)] for d in self._decisions.values()],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls((Decision(n, tuple(c)) for n, c in data["decisions"]), meta=dict(data.get("meta", {})))

    def fingerprint(self) -> str:
        """A short stable hash of the decisions and structure."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and (other is self or self.to_dict() == other.to_dict())

    @functools.cached_property
    def abbreviable(self) -> frozenset[str]:
        """Decisions whose every choice has a one-symbol code, unique within the decision."""
        ok = set()
        for n, d in self._decisions.items():
            syms = [_CODE_ABBREV.get(c) if isinstance(c, str) else None for c in d.choices]
            if None not in syms and len(set(syms)) == len(syms) and n != "patch":
                ok.add(n)
        return frozenset(ok)

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return f"SearchSpace({len(self)} decisions, {self.size:.3g} architectures)"

    # ------------------------------------------------------------------ architectures
    def suggest(self, trial: optuna.trial.BaseTrial) -> Architecture:
        """Ask ``trial`` for every decision (one ``suggest_categorical`` each)."""
        return Architecture(
            self,
            {n: cast(Choice, trial.suggest_categorical(n, d.choices)) for n, d in self._decisions.items()},
        )

    def sample(self, rng: Any) -> Architecture:
        """A uniformly random architecture; ``rng`` is a ``numpy.random.Generator``."""
        return Architecture(self, {n: d.choices[int(rng.integers(len(d.choices)))] for n, d in self.items()})

    def fair_sample(self, step: int, *, seed: int) -> Architecture:
        """The ``step``-th path of strict-fairness rounds (FairNAS, Chu et al. 2021).

        A round is ``K`` consecutive steps, ``K`` the most choices of any decision; within a
        round every choice of every decision is taken (a decision with fewer choices cycles
        through them again), each decision in its own order, shuffled per round from
        ``(seed, round)``. A pure function of ``step``, so a resumed warm-up continues exactly.
        """
        k = max(len(d.choices) for d in self.decisions)
        rnd, pos = divmod(step, k)
        rng = np.random.default_rng([seed, rnd])
        indices = []
        for d in self.decisions:
            n = len(d.choices)
            order = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])
            indices.append(int(order[pos]))
        return self.from_indices(indices)

    def handmade(self) -> Architecture:
        """The space's closest member to MONAI's DynUNet (nnU-Net's network) at its depth: leaky
        ReLU, two 3×3×3 convolutions per encoder stage, stride 2 on every axis at every level, an
        additive skip at every level (the space has no concatenation), one 3×3×3 convolution per
        decoder stage, and the largest patch. A warm start for a search (``start_from``).

        Raises:
            ValueError: a decision of a space built otherwise offers none of these choices.
        """
        preferred = {"act": "lrelu", "down": "222", "skip": "add", "conv": "conv3_d1"}
        choices: dict[str, Choice] = {}
        for d in self.decisions:
            if d.name == "patch":
                choices[d.name] = max(d.choices, key=lambda c: math.prod(parse_patch(str(c))))
                continue
            kind = "conv" if "conv" in d.name else next((k for k in preferred if d.name.startswith(k)), "")
            if preferred.get(kind) not in d.choices:
                raise ValueError(f"decision {d.name!r} has no DynUNet-like choice among {d.choices}")
            choices[d.name] = preferred[kind]
        return Architecture(self, choices)

    def from_indices(self, indices: Sequence[int]) -> Architecture:
        if len(indices) != len(self):
            raise ValueError(f"expected {len(self)} indices, got {len(indices)}")
        return Architecture(self, {d.name: d.choices[i] for d, i in zip(self.decisions, indices)})

    def table(self) -> str:
        """A Markdown table of the decisions."""
        rows = ["| decision | choices |", "|---|---|"]
        rows += [f"| `{d.name}` | {', '.join(f'`{c}`' for c in d.choices)} |" for d in self.decisions]
        return "\n".join(rows)


def patch_decision(patch_sizes: Sequence[Sequence[int]], depth: int) -> Decision:
    """A ``patch`` decision whose choices are strings like ``"96x96x64"``."""
    stride = 2**depth
    choices = []
    for p in patch_sizes:
        p = tuple(int(v) for v in p)
        if len(p) != 3 or any(v <= 0 or v % stride for v in p):
            raise ValueError(f"patch size {p} must be 3 positive multiples of {stride}")
        choices.append("x".join(map(str, p)))
    return Decision("patch", tuple(dict.fromkeys(choices)))


def parse_patch(choice: str) -> tuple[int, int, int]:
    try:
        x, y, z = (int(v) for v in str(choice).split("x"))
    except ValueError:
        raise ValueError(f"patch choice {choice!r} is not of the form 'XxYxZ'") from None
    return x, y, z


class Architecture(Mapping[str, Choice]):
    """One choice for every decision of a :class:`SearchSpace`; hashable and validated."""

    __slots__ = ("_choices", "_key", "space")

    def __init__(self, space: SearchSpace, choices: Mapping[str, Choice]):
        unknown = [n for n in choices if n not in space]
        if unknown:
            raise ValueError(f"unknown decision(s) {unknown}; the space has {list(space)}")
        missing = [n for n in space if n not in choices]
        if missing:
            raise ValueError(f"architecture lacks decision(s) {missing}")
        for n, c in choices.items():
            if c not in space[n].choices:
                raise ValueError(f"decision {n!r}: unknown choice {c!r}; choices {space[n].choices}")
        self.space = space
        self._choices = {n: choices[n] for n in space}
        self._key = tuple(self._choices.values())

    @classmethod
    def from_params(cls, space: SearchSpace, params: Mapping[str, Any]) -> Architecture:
        """From Optuna ``trial.params`` (extra keys such as a learning rate are ignored)."""
        missing = [n for n in space if n not in params]
        if missing:
            raise ValueError(f"params lack decision(s) {missing}")
        return cls(space, {n: params[n] for n in space})

    def to_params(self) -> dict[str, Choice]:
        return dict(self._choices)

    def indices(self) -> list[int]:
        return [self.space[n].choices.index(c) for n, c in self._choices.items()]

    # A readable code: groups separated by '|'; one symbol per decision, in order.
    @property
    def code(self) -> str:
        """A short readable code; see :meth:`from_code`.

        For example ``32x32x16/Lap.-cc.2ca.-pi|+i-i+a``: the patch, the activation (``L`` leaky
        ReLU), then per level its two encoder ops (``a`` 3x3x3, ``b``/``c`` dilated by 2/3, ``p``
        3x3x1, ``i`` identity), each level after the first opened by ``.`` and its pooling (``2``
        2x2x2, ``x`` 2x2x1, ``-`` none); after ``|``, from the deepest decoder level up, the skip
        (``+`` add, ``-`` none) and the decoder op (``o`` is 1x1x1). A choice without a symbol is
        written as its index in braces.
        """
        parts = []
        first_skip = True
        for n, c in self._choices.items():
            if n.startswith("down"):
                parts.append(".")
            elif n.startswith("skip") and first_skip:
                parts.append("|")
                first_skip = False
            if n == "patch":
                parts.append(f"{c}/")
                continue
            sym = _CODE_ABBREV.get(c) if isinstance(c, str) else None
            if sym is None or n not in self.space.abbreviable:
                sym = "{" + str(self.space[n].choices.index(c)) + "}"
            parts.append(sym)
        return "".join(parts)

    @classmethod
    def from_code(cls, space: SearchSpace, code: str) -> Architecture:
        rev = {v: k for k, v in _CODE_ABBREV.items()}
        choices: dict[str, Choice] = {}
        pos = 0
        ok = space.abbreviable
        try:
            for n, d in space.items():
                while n != "patch" and code[pos] in ".|":
                    pos += 1
                if n == "patch":
                    end = code.index("/", pos)
                    choices[n] = code[pos:end]
                    pos = end + 1
                elif code[pos] == "{":
                    end = code.index("}", pos)
                    choices[n] = d.choices[int(code[pos + 1 : end])]
                    pos = end + 1
                else:
                    if n not in ok:
                        raise ValueError
                    choices[n] = rev[code[pos]]
                    pos += 1
        except (ValueError, IndexError, KeyError):
            raise ValueError(f"architecture code {code!r} does not match the space") from None
        if pos != len(code):
            raise ValueError(f"architecture code {code!r} is longer than the space")
        return cls(space, choices)

    def __getitem__(self, name: str) -> Choice:
        return self._choices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._choices)

    def __len__(self) -> int:
        return len(self._choices)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Architecture):
            return self._key == other._key and self.space == other.space
        return NotImplemented

    def __repr__(self) -> str:
        return f"Architecture({self.code!r})"

    # --------------------------------------------------------------- structural helpers
    @property
    def patch_size(self) -> tuple[int, int, int] | None:
        return parse_patch(str(self._choices["patch"])) if "patch" in self._choices else None

    def total_stride(self) -> tuple[int, int, int]:
        """Product of the pooling factors along the path, per axis."""
        s = [1, 1, 1]
        for i in range(1, self.space.depth + 1):
            f = pool_factor(str(self._choices.get(position("down", i), "none")))
            s = [a * b for a, b in zip(s, f)]
        return s[0], s[1], s[2]

    def activation(self, level: int) -> str:
        return str(self._choices.get("act", self._choices.get(f"act{level}", "relu")))
