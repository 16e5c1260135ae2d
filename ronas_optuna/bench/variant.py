"""Controller variants named on a command line: ``'default'`` or ``'field=value[,field=value]'``."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..controller import ControllerConfig


def controller_variant(text: str, base: ControllerConfig | None = None) -> ControllerConfig:
    """The :class:`ControllerConfig` that ``text`` names (booleans as true/false): ``base`` (default:
    ``ControllerConfig()``, a sampler's own defaults) with the named fields changed.

    Raises:
        ValueError: an unknown field or a value of the wrong kind, named in one line.
    """
    cfg = base if base is not None else ControllerConfig()
    if text == "default":
        return cfg
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in fields:
            raise ValueError(f"--variant: unknown ControllerConfig field {key!r}")
        current = getattr(cfg, key)
        if isinstance(current, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"--variant: {key} takes true or false, got {value!r}")
            changes[key] = value.lower() == "true"
        else:
            try:
                changes[key] = type(current if current is not None else 1.0)(value)
            except ValueError:
                raise ValueError(f"--variant: {key} takes a number, got {value!r}") from None
    return dataclasses.replace(cfg, **changes)
