"""The one parser of step counts: positive integers, or "inf" for continuous time (Graves et al. 2023, §3.9)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from bfn.errors import ConfigError

#: a step count n, or "inf" (continuous time / the full process)
Steps = int | str

_INF = ("inf", "infinity", "continuous")


def parse_steps(value: Any) -> int | None:
    """One step count: a positive int (also from a string such as "784"), or None for "inf"/None/infinity."""
    if value is None:
        return None
    item = value.strip().lower() if isinstance(value, str) else value
    if item in _INF or (isinstance(item, float) and math.isinf(item)):
        return None
    if isinstance(item, bool):
        raise ConfigError(f"steps must be a positive integer or 'inf', got {value!r}")
    if isinstance(item, str):
        if not (item.isascii() and item.isdecimal()):
            raise ConfigError(f"steps must be a positive integer or 'inf', got {value!r} (e.g. --steps 10,100,inf)")
        item = int(item)
    if isinstance(item, float) and item.is_integer():
        item = int(item)
    if not isinstance(item, int) or item <= 0:
        raise ConfigError(f"steps must be a positive integer or 'inf', got {value!r}")
    return item


def parse_step_list(steps: Any) -> list[Steps]:
    """Step counts as a list of positive ints and "inf": "10,100,inf" or [10, "inf"]; duplicates dropped."""
    items: Iterable[Any] = steps.split(",") if isinstance(steps, str) else (
        [steps] if isinstance(steps, int | float) else steps)
    out: list[Steps] = []
    for raw in items:
        n = parse_steps(raw)
        value: Steps = "inf" if n is None else n
        if value not in out:
            out.append(value)
    if not out:
        raise ConfigError("give at least one step count, e.g. --steps 100,inf")
    return out
