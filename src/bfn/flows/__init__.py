"""The BFN math per data type (Graves et al. 2023): continuous (§4), discretised (§5) and discrete (§6)."""

from bfn.flows.base import BayesianFlow
from bfn.flows.continuous import ContinuousFlow, GaussianParams
from bfn.flows.discrete import DiscreteFlow
from bfn.flows.discretized import DiscretizedFlow
from bfn.flows.distributions import Categorical, DiscretizedGaussian, PointMass, bin_centres, bin_index

__all__ = [
    "BayesianFlow", "Categorical", "ContinuousFlow", "DiscreteFlow", "DiscretizedFlow", "DiscretizedGaussian",
    "GaussianParams", "PointMass", "bin_centres", "bin_index",
]
