"""Sampling procedures over a flow and an output callable; selected by name through `SAMPLERS`."""

from bfn.errors import ConfigError
from bfn.samplers.base import Callback, OutputFn, Sampler, StepInfo
from bfn.samplers.bfn_paper import output_mean_sampler, paper_sampler

SAMPLERS: dict[str, Sampler] = {
    "paper": paper_sampler,
    "output-mean": output_mean_sampler,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name`."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}") from None


__all__ = ["SAMPLERS", "Callback", "OutputFn", "Sampler", "StepInfo", "get_sampler", "output_mean_sampler",
           "paper_sampler"]
