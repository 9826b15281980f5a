"""Evaluation: test-set likelihood in nats and bits (`evaluate_nll`), offline sample quality for MNIST-like images
(`sample_quality`, in the features of bfn's own classifier), and the post-training report."""

from bfn.evaluation.classifier import MnistCNN, load_classifier
from bfn.evaluation.nll import evaluate_nll, read_eval, write_eval
from bfn.evaluation.quality import sample_quality

__all__ = ["MnistCNN", "evaluate_nll", "load_classifier", "read_eval", "sample_quality", "write_eval"]
