"""bfn: Bayesian Flow Networks (Graves, Srivastava, Atkinson, Gomez 2023, arXiv:2308.07037) in PyTorch."""

__version__ = "0.1.0"
