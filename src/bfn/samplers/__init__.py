"""Sampling procedures over a flow and an output callable; selected by name through `SAMPLERS`."""

from bfn.errors import ConfigError
from bfn.samplers.base import Callback, OutputFn, Sampler, StepInfo
from bfn.samplers.bfn_paper import output_mean_sampler, paper_sampler
from bfn.samplers.bfn_solver import bfn_solver, make_bfn_solver, ode1, ode2, sde1, sde2
from bfn.samplers.distilled import distilled_sampler

SAMPLERS: dict[str, Sampler] = {
    "paper": paper_sampler,
    "output-mean": output_mean_sampler,
    "ode1": ode1,
    "ode2": ode2,
    "sde1": sde1,
    "sde2": sde2,
    "distilled": distilled_sampler,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name`."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}") from None


__all__ = ["SAMPLERS", "Callback", "OutputFn", "Sampler", "StepInfo", "bfn_solver", "get_sampler",
           "make_bfn_solver", "output_mean_sampler", "paper_sampler"]
