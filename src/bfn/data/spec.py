"""`DataSpec`: the one description of a dataset that every layer shares, from the registry through the model and
its saved `config.json` to the pictures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from bfn.errors import CheckpointError, ConfigError

Kind = Literal["continuous", "discretized", "discrete"]
KINDS: tuple[str, ...] = ("continuous", "discretized", "discrete")


@dataclass(frozen=True)
class DataSpec:
    """What a model, an evaluation or a picture must know of the data.

    Attributes:
        kind: "continuous" (real values), "discretized" (K ordered bins on [-1, 1], stored as bin centres) or
            "discrete" (K unordered classes, stored as class indices 0..K-1).
        shape: shape S of one example, without the batch dim: (C, H, W) images, (L,) sequences, (D,) vectors.
        num_classes: K of discrete data (None otherwise).
        num_bins: K of discretized data (None otherwise).
        num_labels: number of conditioning labels (e.g. 10 digits), None for unlabelled data.
        name: the registry name of the dataset ("" when unknown).
        layout: how an example is organised: "image", "sequence" or "flat" ("" when not declared).
    """

    kind: Kind
    shape: tuple[int, ...]
    num_classes: int | None = None
    num_bins: int | None = None
    num_labels: int | None = None
    name: str = ""
    layout: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown data kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if any(s < 1 for s in self.shape):
            raise ConfigError(f"a data shape needs positive sizes, got {self.shape}")

    @property
    def classes(self) -> int:
        """K of discrete data (2 when not given: binary data)."""
        return self.num_classes or 2

    @property
    def levels(self) -> int | None:
        """The number of values a variable takes: K classes, K bins, or None for continuous data."""
        if self.kind == "discrete":
            return self.classes
        return self.num_bins if self.kind == "discretized" else None

    @property
    def dims(self) -> int:
        """Variables per example, D = prod(S) (the divisor of bits/dim)."""
        return math.prod(self.shape)

    @property
    def image_like(self) -> bool:
        """Whether an example can be drawn as a picture: (C, H, W) with 1 or 3 channels, or (H, W)."""
        if len(self.shape) == 3:
            return self.shape[0] in (1, 3)
        return len(self.shape) == 2

    def to_dict(self) -> dict[str, Any]:
        """The JSON form saved in a model's config.json."""
        return {"kind": self.kind, "shape": list(self.shape), "num_classes": self.num_classes,
                "num_bins": self.num_bins, "num_labels": self.num_labels, "name": self.name, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "config.json") -> DataSpec:
        """A spec from its JSON form; anything malformed is a one-line CheckpointError naming `where`."""

        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{where} {what}; it was not written by bfn or is damaged, restore it or retrain")

        if not isinstance(d, dict):
            raise bad("lacks the data description")
        shape = d.get("shape")
        if d.get("kind") not in KINDS:
            raise bad(f"names an unknown data kind {d.get('kind')!r}")
        if not isinstance(shape, list | tuple) or not 1 <= len(shape) <= 4 or not all(_count(s) for s in shape):
            raise bad(f"has an invalid data shape {shape!r}")
        counts = {k: d.get(k) for k in ("num_classes", "num_bins", "num_labels")}
        if not all(v is None or _count(v) for v in counts.values()):
            raise bad(f"has invalid class/bin/label counts {counts}")
        return cls(kind=d["kind"], shape=tuple(shape), name=str(d.get("name") or ""),
                   layout=str(d.get("layout") or ""), **counts)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
