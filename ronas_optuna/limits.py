"""What an exported network must fit: limits on a trial's measured cost (``ronas export
--max-memory`` / ``--max-latency``), checked against the user attrs a search records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .attrs import ATTR_LATENCY, ATTR_MEMORY

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class Limits:
    """What an exported network must fit, by its trial's measured cost (``None``: no limit).

    Attributes:
        max_memory_gb: A training step's measured peak memory (user attr ``memory_gb``).
        max_latency_ms: Measured inference latency of one patch (user attr ``latency_ms``, which
            a search records when latency is one of its objectives).
    """

    max_memory_gb: float | None = None
    max_latency_ms: float | None = None

    def _pairs(self) -> list[tuple[str, float, str]]:
        out = []
        if self.max_memory_gb is not None:
            out.append((ATTR_MEMORY, self.max_memory_gb, "GB"))
        if self.max_latency_ms is not None:
            out.append((ATTR_LATENCY, self.max_latency_ms, "ms"))
        return out

    def fits(self, attrs: dict[str, Any]) -> bool:
        """``attrs`` (a trial's user attrs, or a cost's) are measured and within every limit."""
        return all(key in attrs and float(attrs[key]) <= limit for key, limit, _ in self._pairs())

    def __str__(self) -> str:
        return " and ".join(f"{key} <= {limit:g} {unit}" for key, limit, unit in self._pairs()) or "no limit"

    def refusal(self, trials: list[FrozenTrial]) -> str:
        """Why nothing fits: the smallest measured value of each limited cost."""
        parts = []
        for key, _, unit in self._pairs():
            measured = [(float(t.user_attrs[key]), t.number) for t in trials if key in t.user_attrs]
            if not measured:
                hint = " (search with --objectives dice,latency)" if key == ATTR_LATENCY else ""
                parts.append(f"no trial has a measured {key}{hint}")
            else:
                value, number = min(measured)
                parts.append(f"the smallest measured {key} is {value:.4g} {unit} (trial {number})")
        return "; ".join(parts)
