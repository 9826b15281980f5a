"""Sample quality for MNIST-like images, offline: distances in the feature space of bfn's own MNIST classifier.

- Frechet distance (FID computed in classifier features rather than Inception features) and KID, with
  torchmetrics doing the arithmetic (`FrechetInceptionDistance` / `KernelInceptionDistance` with a custom
  feature module; the features are computed once here and passed through an identity module);
- precision and recall of k-NN manifolds (Kynkaanniemi et al. 2019) and density and coverage (Naeem et al.
  2020), which torchmetrics lacks;
- the classifier's mean confidence on the samples and the entropy of their predicted-label histogram (mode
  coverage: ln 10 = 2.303 nats when every digit is equally frequent, 0 when one digit only).

The numbers are comparable between models evaluated with the same classifier (same cache file and recipe
version), not with FIDs from Inception features in the literature.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from bfn.errors import ConfigError
from bfn.evaluation.classifier import check_images, load_classifier, predict


class _Precomputed(nn.Module):
    """Identity "feature extractor" for torchmetrics: we hand it features that are already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def _torchmetrics() -> Any:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance
    except ImportError:
        raise ConfigError("sample-quality metrics need torchmetrics: pip install 'bfn[metrics]'") from None
    return FrechetInceptionDistance, KernelInceptionDistance


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, d] (torchmetrics' FID arithmetic)."""
    fid_cls, _ = _torchmetrics()
    metric = fid_cls(feature=_Precomputed(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: Tensor, fake: Tensor, *, subsets: int = 100, subset_size: int | None = None,
                    seed: int = 0) -> tuple[float, float]:
    """KID (unbiased squared MMD, cubic polynomial kernel) mean and std over random subsets (torchmetrics'
    arithmetic), the subsets drawn under a seeded RNG. Default subset size: 1000, at most half the smaller set
    (so that the subsets differ and the std means something)."""
    _, kid_cls = _torchmetrics()
    smaller = min(real.shape[0], fake.shape[0])
    size = subset_size if subset_size is not None else min(1000, max(2, smaller // 2))
    size = min(size, smaller)
    if size < 2:
        raise ConfigError("KID needs at least 2 samples and 2 reference images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features in buffer"
        metric = kid_cls(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size, normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


#: pairwise distances without the matrix-product shortcut, so that identical pairs give identical distances
EXACT = "donot_use_mm_for_euclid_dist"


def _kth_nn_radius(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distance from each row of x to its k-th nearest other row (the k-NN ball radius), [N]."""
    out = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start:start + chunk], x, compute_mode=EXACT)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself
    return torch.cat(out)


def _within(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 2048) -> Tensor:
    """[P, C] boolean matrix: point p lies in the ball (centre c, radius r_c); built in row chunks."""
    return torch.cat([torch.cdist(points[s:s + chunk], centres, compute_mode=EXACT) <= radii
                      for s in range(0, points.shape[0], chunk)])


def manifold_metrics(real: Tensor, fake: Tensor, *, k: int = 5) -> dict[str, float]:
    """Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) with k-NN balls.

    precision: share of fake points inside some real k-NN ball; recall: share of real points inside some fake
    k-NN ball; density: mean number of real balls holding a fake point, over k (about 1 for matching
    distributions, can exceed 1); coverage: share of real balls that hold at least one fake point.
    """
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ConfigError(f"precision/recall with k={k} need more than {k} samples and reference images")
    real, fake = real.double(), fake.double()
    r_real = _kth_nn_radius(real, k)
    r_fake = _kth_nn_radius(fake, k)
    fake_in_real = _within(fake, real, r_real)  # [F, R]
    real_in_fake = _within(real, fake, r_fake)  # [R, F]
    return {"precision": float(fake_in_real.any(1).float().mean()),
            "recall": float(real_in_fake.any(1).float().mean()),
            "density": float(fake_in_real.sum(1).double().mean() / k),
            "coverage": float(fake_in_real.any(0).float().mean())}


def label_statistics(logits: Tensor) -> dict[str, Any]:
    """Mean classifier confidence (max softmax probability), the share of images read with confidence >= 0.9
    ("readable"), and the predicted-label histogram with its entropy (logits [N, classes]: 10 digits, or 100
    numbers for two-digit canvases)."""
    probs = logits.double().softmax(-1)
    hist = torch.bincount(probs.argmax(-1), minlength=logits.shape[-1]).double()
    freq = hist / hist.sum()
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log()).sum())
    return {"confidence": float(probs.amax(-1).mean()), "readable": float((probs.amax(-1) >= 0.9).double().mean()),
            "label_entropy": entropy,
            "label_histogram": [int(v) for v in hist]}


def sample_quality(samples: Tensor, reference: Tensor, *, classifier: nn.Module | None = None, k: int = 5,
                   kid_subsets: int = 100, kid_subset_size: int | None = None, seed: int = 0,
                   device: str | torch.device | None = None) -> dict[str, Any]:
    """Quality of `samples` [N, *classifier.image_shape] in [0, 1] against held-out `reference` images (same
    format), in the features of a bfn classifier: by default the MNIST one (trained and cached on first use) for
    [N, 1, 28, 28] digits; pass `load_classifier(recipe=TWO_DIGIT)` for 64x64 two-digit canvases.

    Returns fid, kid (+ kid_std), precision, recall, density, coverage (k-NN with `k`), the samples' mean
    classifier confidence, label entropy (max ln of the number of classes) and label histogram, the same label
    statistics for the reference (for context), and the classifier's own test accuracy.
    """
    shape = getattr(classifier, "image_shape", (1, 28, 28))
    samples = check_images(samples, "samples", shape)
    reference = check_images(reference, "reference images", shape)
    if classifier is None:
        classifier = load_classifier(device=device or "cpu")
    elif device is not None:
        classifier = classifier.to(device)
    f_fake, logits_fake = predict(classifier, samples)
    f_real, logits_real = predict(classifier, reference)
    kid, kid_std = kernel_distance(f_real, f_fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    out: dict[str, Any] = {"n_samples": samples.shape[0], "n_reference": reference.shape[0],
                           "feature_dims": f_fake.shape[1], "fid": frechet_distance(f_real, f_fake),
                           "kid": kid, "kid_std": kid_std, "k": k}
    out.update(manifold_metrics(f_real, f_fake, k=k))
    out.update(label_statistics(logits_fake))
    out["label_entropy_max"] = math.log(logits_fake.shape[-1])
    ref = label_statistics(logits_real)
    out["reference"] = {"confidence": ref["confidence"], "readable": ref["readable"],
                        "label_entropy": ref["label_entropy"]}
    info = getattr(classifier, "info", None)
    if info is not None:
        out["classifier"] = {key: info[key] for key in ("test_accuracy", "test_accuracy_binarized", "recipe_version")}
    return out
