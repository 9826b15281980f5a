"""User data: a .npy/.npz array or a folder of PNG images, with its data type declared and checked."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bfn.data.common import NO_LABEL, Item, label_tensor
from bfn.errors import DataError
from bfn.flows.continuous import MAX_MAGNITUDE
from bfn.utils.binned import bin_centres

KINDS = ("continuous", "discretized", "discrete")
TEST_FRACTION = 0.1
SPLIT_SEED = 0
LABEL_KEYS = ("labels", "y")
IMAGE_SUFFIXES = (".png",)
MAX_BINS = 2**16  # discretized user data: up to 16-bit values


def load_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Data (and labels, if an .npz holds `labels` or `y`) from a .npy or .npz file."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path} ({str(err).splitlines()[0]}); save it with numpy.save/savez "
                        "(no object arrays)") from None
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if "x" in arrays:
        return arrays["x"], labels
    if len(arrays) != 1:
        raise DataError(f"{path} holds arrays {sorted(arrays)}; name the data array `x` "
                        "(labels: `labels` or `y`)")
    return next(iter(arrays.values())), labels


def load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 images [N, C, H, W] (C = 1 grey or 3 RGB) from PNG files; class subfolders give labels."""
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    labels: list[int] | None = None
    if not files:
        classes = sorted(p for p in path.iterdir() if p.is_dir())
        for k, sub in enumerate(classes):
            found = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels = (labels or []) + [k] * len(found)
    if not files:
        raise DataError(f"no .png images in {path} (nor in class subfolders); put the images there")
    images = []
    for f in files:
        with Image.open(f) as img:
            colour = img.mode not in ("1", "L", "LA", "I", "I;16")
            a = np.asarray(img.convert("RGB" if colour else "L"), dtype=np.uint8)
        a = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
        if images and a.shape != images[0].shape:
            raise DataError(f"{f} is {a.shape} (C, H, W) but {files[0].name} is {images[0].shape}; "
                            "resize all images to one size and mode")
        images.append(a)
    return np.stack(images), None if labels is None else np.asarray(labels)


def to_model_format(x: np.ndarray, kind: str, num_bins: int | None, num_classes: int | None,
                    from_images: bool) -> torch.Tensor:
    """Check `x` against the declared kind and convert it to the model's data format."""
    if x.size == 0:
        raise DataError(f"the data array is empty (shape {x.shape}); give at least one example")
    if x.dtype.kind not in "biuf":
        raise DataError(f"the data has dtype {x.dtype}; give a numeric array (integers or floats)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"the data holds {np.count_nonzero(~np.isfinite(x))} NaN or Inf values; remove or "
                        "replace them")
    if kind == "continuous":
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
        if not np.isfinite(x32).all() or np.abs(x32).max() > MAX_MAGNITUDE:
            raise DataError(f"the data holds values up to |x| = {np.abs(x).max():.3g}; continuous data must be "
                            "scaled to about [-1, 1] (e.g. 2 * (x - min) / (max - min) - 1) before training")
        return torch.from_numpy(x32)
    if kind == "discrete":
        if x.dtype.kind == "f":
            raise DataError(f"discrete data needs integer class indices, got {x.dtype}; cast with "
                            "x.astype(np.int64) or declare kind='continuous'")
        _check_classes(x, num_classes, "num_classes", "class index")
        return torch.from_numpy(x.astype(np.int64))
    if x.dtype.kind == "f":  # discretized, given as values: they must already sit on bin centres
        centres = bin_centres(num_bins).numpy()
        if x.min() < -1 or x.max() > 1:
            raise DataError(f"discretized data must lie in [-1, 1], got [{x.min():.4g}, {x.max():.4g}]; "
                            f"give bin centres (2k+1)/K - 1 or integer bin indices 0..{num_bins - 1}")
        k = np.clip(np.floor((x.astype(np.float64) + 1) * num_bins / 2), 0, num_bins - 1).astype(np.int64)
        off = np.abs(x - centres[k]).max()
        if off > 1e-5:
            raise DataError(f"discretized values must sit on the centres (2k+1)/K - 1 of the {num_bins} "
                            f"bins; one is {off:.3g} away; give integer bin indices 0..{num_bins - 1}")
        return torch.from_numpy(centres[k])
    if from_images:  # 8-bit grey levels g -> bin floor(g * K / 256)
        k = x.astype(np.int64) * num_bins // 256
    else:
        _check_classes(x, num_bins, "num_bins", "bin index")
        k = x.astype(np.int64)
    return bin_centres(num_bins)[torch.from_numpy(k)]


def _check_classes(x: np.ndarray, k: int | None, name: str, what: str) -> None:
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= k:
        bad = hi if hi >= k else lo
        raise DataError(f"{what} {bad} is outside 0..{k - 1} for {name}={k}; fix the data or raise {name}")


def split_indices(n: int, split: str) -> np.ndarray:
    """Deterministic 90/10 split: a permutation seeded with 0; its last n // 10 indices are test."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(n * TEST_FRACTION)
    part = perm[:n - n_test] if split == "train" else perm[n - n_test:]
    if part.size == 0:
        raise DataError(f"the data has {n} examples, too few for a 90/10 train/test split; give at least 10")
    return np.sort(part)


class ArrayDataset(Dataset):
    """Tensors x [N, *shape] (model format) and int64 labels [N] (or none)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> Item:
        return self.x[index], label_tensor(NO_LABEL if self.labels is None else self.labels[index])


def load_user_data(path: str | os.PathLike[str] | None, split: str, kind: str | None, num_bins: int | None,
                   num_classes: int | None) -> tuple[ArrayDataset, tuple[int, ...], int | None]:
    """The dataset of one split, the example shape and the number of labels (None without labels)."""
    if kind not in KINDS:
        raise DataError(f"declare the data type with kind= one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "discretized" and num_bins is None:
        num_bins = 256
    for name, value, need in (("num_bins", num_bins, kind == "discretized"),
                              ("num_classes", num_classes, kind == "discrete")):
        if need and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
            raise DataError(f"kind={kind!r} needs {name}= an integer >= 2, got {value!r}")
    if kind == "discretized" and num_bins > MAX_BINS:
        raise DataError(f"num_bins={num_bins} is more than {MAX_BINS} bins; use kind='continuous' for such data")
    if path is None:
        raise DataError("the array dataset needs path= a .npy/.npz file or a folder of PNG images")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder: {path}; give path= a .npy/.npz file or a folder of PNG "
                        "images")
    if path.is_dir():
        x, labels = load_image_folder(path)
    elif path.suffix in (".npy", ".npz"):
        x, labels = load_array_file(path)
    else:
        raise DataError(f"{path} is not a .npy/.npz file or a folder; convert it with numpy.save")
    if x.ndim == 0:
        raise DataError(f"{path} holds a single value, not an array of examples; save an array [N, ...] with one "
                        "row per example")
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if labels is not None:
        labels = _check_labels(labels, len(x))
    data = to_model_format(x, kind, num_bins, num_classes, from_images=path.is_dir())
    idx = torch.from_numpy(split_indices(len(data), split))
    ys = None if labels is None else torch.from_numpy(labels)[idx]
    num_labels = None if labels is None else int(labels.max()) + 1
    return ArrayDataset(data[idx], ys), tuple(data.shape[1:]), num_labels


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.shape != (n,) or labels.dtype.kind not in "biu":
        raise DataError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}; "
                        "save them as an int array")
    if n and labels.min() < 0:
        raise DataError(f"labels must be >= 0, got {labels.min()}; map them to 0..L-1")
    return labels.astype(np.int64)
