"""The paper's evaluation protocol per benchmark (Graves et al. 2023, §7; the official `test.py` recipes): which
bound, how many Monte Carlo repeats, and in which unit the paper reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.utils.steps import Steps

Unit = Literal["nats/image", "bits/dim", "bits/char"]


@dataclass(frozen=True)
class Protocol:
    """One benchmark's recipe: the bound L^n + L^r (steps n, or "inf"), repeats per test example as the official
    code runs them, the reporting unit, and the paper's published figure (for context, never mixed with ours)."""

    benchmark: str
    steps: Steps
    repeats: int
    unit: Unit
    paper_value: float
    paper_source: str


MNIST = Protocol("binarized MNIST", 784, 2000, "nats/image", 77.87,
                 "Graves et al. 2023, Table 1 (dynamically binarized MNIST, test); official test.py: "
                 "n_steps=784 n_repeats=2000")
CIFAR10 = Protocol("CIFAR-10", 10, 100, "bits/dim", 2.66,
                   "Graves et al. 2023 (CIFAR-10, 8-bit, discretized, test); official test.py: n_steps=10 "
                   "n_repeats=100")
TEXT8 = Protocol("text8", "inf", 1, "bits/char", 1.41,
                 "Graves et al. 2023 (text8, test); official test.py: n_steps=0 (continuous time) n_repeats=1")


def paper_protocol(data: DataSpec) -> Protocol:
    """The protocol of the benchmark `data` belongs to (by its registry name and kind); ConfigError for data the
    paper did not evaluate."""
    name = data.name
    if name.startswith("mnist") and data.kind == "discrete":
        return MNIST
    if name.startswith("cifar10"):
        return CIFAR10
    if data.kind == "discrete" and len(data.shape) == 1 and data.num_classes == 27:
        return TEXT8  # text8 and the text8-alphabet corpora (e.g. Shakespeare): bits per character
    raise ConfigError(f"the paper has no evaluation protocol for {name or 'this'} {data.kind} data; give the bounds "
                      "with --steps (e.g. --steps 100,inf) instead of --protocol paper")


def headline(protocol: Protocol, result: dict) -> str:
    """One line: our bound in the protocol's unit with its standard error, beside the paper's figure."""
    res = result["results"][str(protocol.steps)]
    if protocol.unit == "nats/image":
        value, se = res["nats"], res["nats_se"]
    else:  # bits/dim and bits/char are both bits per variable
        value, se = res["bits_per_dim"], res["bits_per_dim_se"]
    err = f" ± {se:.4g}" if se is not None else ""
    return (f"paper protocol ({protocol.benchmark}): {res['bound']} = {value:.4g}{err} {protocol.unit} over "
            f"{result['n_examples']} test examples, {result['repeats']} repeat(s); the paper reports "
            f"{protocol.paper_value} {protocol.unit} ({protocol.paper_source})")
