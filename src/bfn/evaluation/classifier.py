"""A small MNIST classifier trained by bfn itself, so that sample-quality metrics need no download.

`MnistCNN` (three 3x3 conv blocks, a 128-unit feature layer, about 100k parameters) is trained on the embedded
4,000-image training split with random affine jitter, and on a 50/50 mix of grey-level images and dynamically
binarized ones, so that it reads both the samples of discretized models and those of binarized ones. Its
128-dimensional penultimate activations are the feature space of the Frechet/kernel distances and of
precision/recall in `bfn.evaluation.quality`.

The trained weights are cached in `$BFN_CACHE_DIR/classifier/mnist_cnn.safetensors` (default
`~/.cache/bfn/classifier/...`), written atomically, read with safetensors only, and retrained when missing,
corrupt or made by another version of this recipe. Training takes about 10 s on two CPU cores.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import DataError

#: bump when the architecture or the training recipe changes: cached weights of another version are retrained
RECIPE_VERSION = "1"
CACHE_NAME = "mnist_cnn.safetensors"
NUM_CLASSES = 10


class MnistCNN(nn.Module):
    """Grey (or binary) 28x28 digits in [0, 1] -> 10 logits; `features` gives the 128-d penultimate layer."""

    num_features = 128
    image_shape = (1, 28, 28)
    num_classes = NUM_CLASSES

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width))  # 28->14->7->3
        self.fc = nn.Linear(4 * width * 3 * 3, self.num_features)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations [N, 128] of images [N, 1, 28, 28] in [0, 1]."""
        return F.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


def check_images(x: Tensor, what: str = "images", shape: tuple[int, int, int] = (1, 28, 28)) -> Tensor:
    """float32 [N, *shape] in [0, 1] from [N, *shape] or [N, H, W] (bool/int {0, 1} allowed); shape (1, 28, 28)
    for MNIST digits, (1, 64, 64) for two-digit canvases."""
    if not isinstance(x, Tensor):
        raise DataError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise DataError(f"{what} must have shape (N, {', '.join(map(str, shape))}) (the classifier's input), got "
                        f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{what} is empty")
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"{what} must hold values in [0, 1] (grey levels or binary pixels), got "
                        f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; map [-1, 1] data with (x + 1) / 2")
    return x


# --- training ---------------------------------------------------------------------------------------------
def _jitter(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random affine jitter per image: rotation up to 12 degrees, scale 0.9-1.1, shift up to 2.5 pixels."""
    half = x.shape[-1] / 2  # pixels per grid unit
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(12)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.5 / half)  # in grid units: W/2 pixels = 1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros").clamp(0, 1)


def train_classifier(images: Tensor, labels: Tensor, *, epochs: int = 8, batch_size: int = 64, lr: float = 3e-3,
                     seed: int = 0, factory: Any = MnistCNN) -> nn.Module:
    """Train `factory()` (default `MnistCNN`) on grey images [N, *factory.image_shape] in [0, 1] and labels [N]
    (CPU, deterministic for a seed): AdamW with a one-cycle schedule, affine jitter, and half of each batch
    dynamically binarized; the loss is the cross-entropy of the model's logits."""
    images, labels = check_images(images, "training images", factory.image_shape), labels.long()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = images.shape[0] // batch_size
    if per_epoch == 0:
        raise DataError(f"need at least {batch_size} training images, got {images.shape[0]}")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks
        for _ in range(epochs):
            perm = torch.randperm(images.shape[0], generator=gen)
            for i in range(per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                x = _jitter(images[idx], gen)
                binary = torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5
                x = torch.where(binary, torch.bernoulli(x, generator=gen), x)
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: Any, images: Tensor, *, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(features [N, F], logits [N, classes]) from the model's `features` and `head`, in eval mode, batched, on
    the model's device; returned on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device).float()
        f = model.features(x)
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    model.train(was_training)
    return torch.cat(feats), torch.cat(logits)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of images whose predicted label (the digit; the number 0..99 of a two-digit canvas) is the label."""
    _, logits = predict(model, images)
    return float((logits.argmax(1) == labels.long().cpu()).float().mean())


# --- data and cache ---------------------------------------------------------------------------------------
def mnist_split(split: str) -> tuple[Tensor, Tensor]:
    """The embedded MNIST split ("train": 4,000, "test": 1,000) as grey images [N, 1, 28, 28] in [0, 1], labels."""
    from bfn.data.mnist import mnist_5k_split

    images, labels = mnist_5k_split(split)
    x = torch.as_tensor(images).float().div(255).reshape(-1, 1, 28, 28)
    return x, torch.as_tensor(labels).long()


def cache_dir() -> Path:
    """$BFN_CACHE_DIR/classifier, default ~/.cache/bfn/classifier."""
    base = os.environ.get("BFN_CACHE_DIR") or Path.home() / ".cache" / "bfn"
    return Path(base).expanduser() / "classifier"


def _data_fingerprint(images: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256((images * 255).round().to(torch.uint8).numpy().tobytes())
    h.update(labels.numpy().astype("int64").tobytes())
    return h.hexdigest()[:16]


def _save(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from bfn.utils.io import atomic_write

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def _load(path: Path, fingerprint: str, recipe: Recipe | None = None) -> tuple[nn.Module, dict[str, str]] | None:
    """The cached classifier, or None when it is absent, corrupt or from another recipe or data."""
    recipe = recipe or MNIST
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None
    if meta.get("recipe_version") != recipe.version or meta.get("train_data") != fingerprint:
        return None
    model = recipe.factory()
    try:
        model.load_state_dict(state)
    except RuntimeError:
        return None
    return model.eval(), meta


@dataclass(frozen=True)
class Recipe:
    """What a cached classifier is: its architecture, its recipe version, its cache file, its data and epochs."""

    name: str
    factory: Any  # a classifier class: called with no arguments, with a class attribute image_shape
    version: str
    cache_name: str
    split: Callable[[str], tuple[Tensor, Tensor]]
    epochs: int = 8


MNIST = Recipe("MNIST", MnistCNN, RECIPE_VERSION, CACHE_NAME, mnist_split)


def load_classifier(*, device: str | torch.device = "cpu", retrain: bool = False, verbose: bool = True,
                    path: str | os.PathLike[str] | None = None, recipe: Recipe | None = None) -> nn.Module:
    """The classifier of `recipe` (default: the MNIST digit classifier): from the cache, or trained now (its test
    accuracy printed to stderr) and cached.

    The returned model carries `info`: test accuracy on grey and on binarized test images, training seconds.
    """
    recipe = recipe or MNIST
    path = Path(path) if path is not None else cache_dir() / recipe.cache_name
    x_train, y_train = recipe.split("train")
    fingerprint = _data_fingerprint(x_train, y_train)
    loaded = None if retrain else _load(path, fingerprint, recipe)
    if loaded is None:
        t0 = time.perf_counter()
        model = train_classifier(x_train, y_train, factory=recipe.factory, epochs=recipe.epochs)
        seconds = time.perf_counter() - t0
        x_test, y_test = recipe.split("test")
        acc = accuracy(model, x_test, y_test)
        acc_bin = accuracy(model, torch.bernoulli(x_test, generator=torch.Generator().manual_seed(0)), y_test)
        meta = {"recipe_version": recipe.version, "train_data": fingerprint, "test_accuracy": f"{acc:.4f}",
                "test_accuracy_binarized": f"{acc_bin:.4f}", "train_seconds": f"{seconds:.1f}",
                "train_examples": str(x_train.shape[0]), "test_examples": str(x_test.shape[0])}
        _save(model, path, meta)
        if verbose:
            print(f"trained the {recipe.name} classifier in {seconds:.1f} s on {x_train.shape[0]} images: test "
                  f"accuracy {100 * acc:.1f}% (grey), {100 * acc_bin:.1f}% (binarized); cached in {path}",
                  file=sys.stderr)
    else:
        model, meta = loaded
    model.info = classifier_info(meta, path)  # type: ignore[assignment]
    return model.to(device).eval()


def classifier_info(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """What to report about the classifier next to the metrics it produced."""
    return {"test_accuracy": float(meta.get("test_accuracy", "nan")),
            "test_accuracy_binarized": float(meta.get("test_accuracy_binarized", "nan")),
            "train_seconds": float(meta.get("train_seconds", "nan")),
            "test_examples": int(meta.get("test_examples", "0")), "recipe_version": meta.get("recipe_version"),
            "path": str(path)}
