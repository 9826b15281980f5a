"""User data: a .npy/.npz array, a numeric .csv/.tsv table or a folder of PNG images, with its data type declared
and checked."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bfn.data.common import NO_LABEL, Item, label_tensor
from bfn.data.infer import KINDS, MAX_BINS, UserFormat, check_numeric, infer_format
from bfn.errors import DataError

TEST_FRACTION = 0.1
SPLIT_SEED = 0
LABEL_KEYS = ("labels", "y")
CSV_LABEL_COLUMNS = ("labels", "label", "y", "class", "target")
ARRAY_SUFFIXES = (".npy", ".npz")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}  # suffix -> column delimiter
DATA_SUFFIXES = ARRAY_SUFFIXES + tuple(TABLE_SUFFIXES)
IMAGE_SUFFIXES = (".png",)


def load_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """Data, labels (if an .npz holds `labels` or `y`) and the size of the file's own training split (an .npz with
    `x_train` and `x_test`, labels `y_train`/`y_test`; None otherwise) from a .npy or .npz file."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None, None
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path} ({str(err).splitlines()[0]}); save it with numpy.save/savez "
                        "(no object arrays)") from None
    if "x_train" in arrays and "x_test" in arrays:
        return _given_split(path, arrays)
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if "x" in arrays:
        return arrays["x"], labels, None
    if len(arrays) != 1:
        raise DataError(f"{path} holds arrays {sorted(arrays)}; name the data array `x` "
                        "(labels: `labels` or `y`)")
    return next(iter(arrays.values())), labels, None


def table_header(path: Path) -> list[str] | None:
    """The column names of a .csv/.tsv table's first row, or None when that row is numbers (no header)."""
    with open(path, encoding="utf-8-sig") as f:  # -sig: the byte-order mark spreadsheets write
        first = f.readline()
    names = [c.strip().strip('"').strip() for c in first.rstrip("\r\n").split(TABLE_SUFFIXES[path.suffix.lower()])]
    try:
        [float(c) for c in names]
    except ValueError:
        return names
    return None


def label_column(header: list[str]) -> int | None:
    """The index of a table's label column: the first named `label(s)`, `y`, `class` or `target` (any case)."""
    return next((i for i, name in enumerate(header) if name.lower() in CSV_LABEL_COLUMNS), None)


def load_table_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of a numeric .csv (comma) or .tsv (tab) table as [N, D] examples, and labels if a header row names a
    column `label(s)`, `y`, `class` or `target`. Columns whose values are all integers give an integer array (so
    that few distinct values read as discrete or discretized data, as for an integer .npy)."""
    delimiter = TABLE_SUFFIXES[path.suffix.lower()]
    try:
        header = table_header(path)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path} ({str(err).splitlines()[0]}); give a UTF-8 text table of "
                        "numbers") from None
    try:
        with warnings.catch_warnings():  # an empty table is reported below, not warned about
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=delimiter, skiprows=0 if header is None else 1, ndmin=2,
                               dtype=np.float64, encoding="utf-8-sig")
    except ValueError as err:
        reason = str(err).splitlines()[0].split(";")[0]
        raise DataError(f"{path}: {reason}; every row needs the same number of numeric columns (one optional "
                        "header row of column names)") from None
    if table.shape[0] == 0:
        raise DataError(f"{path} holds no rows of numbers; one row per example")
    labels = None
    if header is not None:
        if len(header) != table.shape[1]:
            raise DataError(f"{path}: the header names {len(header)} columns but the rows have {table.shape[1]}")
        column = label_column(header)
        if column is not None:
            labels = table[:, column]
            table = np.delete(table, column, axis=1)
            if not np.all(labels == np.round(labels)):
                raise DataError(f"{path}: the label column {header[column]!r} holds non-integers; labels are "
                                "class indices 0, 1, 2, ...")
            labels = labels.astype(np.int64)
    if table.shape[1] == 0:
        raise DataError(f"{path} has only a label column; give the data columns too")
    if np.all(np.isfinite(table)) and np.all(table == np.round(table)):
        return table.astype(np.int64), labels
    return table, labels


def save_table(path: Path, rows: np.ndarray, source: Path) -> Path:
    """Write [N, D] rows as a table in the format of the .csv/.tsv `source` (its delimiter, and its header without
    the label column when it has one), atomically."""
    from bfn.utils.io import atomic_write

    delimiter = TABLE_SUFFIXES[source.suffix.lower()]
    names = table_header(source)
    column = None if names is None else label_column(names)
    header = "" if names is None else delimiter.join(c for i, c in enumerate(names) if i != column)
    fmt = "%d" if np.issubdtype(rows.dtype, np.integer) else "%.8g"

    def write(tmp: str) -> None:
        np.savetxt(tmp, rows.reshape(len(rows), -1), fmt=fmt, delimiter=delimiter, header=header, comments="")

    atomic_write(path, write)
    return path


def _given_split(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, int]:
    train, test = arrays["x_train"], arrays["x_test"]
    if train.shape[1:] != test.shape[1:] or train.ndim == 0:
        raise DataError(f"{path}: x_train {train.shape} and x_test {test.shape} must hold examples of one shape")
    labels = None
    if "y_train" in arrays and "y_test" in arrays:
        labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    return np.concatenate([train, test]), labels, len(train)


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
    images: list[np.ndarray] = []
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
        return self.x[index], label_tensor(NO_LABEL if self.labels is None else int(self.labels[index]))


def read_user_array(path: str | os.PathLike[str] | None) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """(data, labels or None, number of training examples when the file gives its own split, else None) of a
    .npy/.npz file, a .csv/.tsv table or an image folder (images as [N, C, H, W] uint8)."""
    if path is None:
        raise DataError("the array dataset needs path= a .npy/.npz or .csv file or a folder of PNG images")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder: {path}; give path= a .npy/.npz or .csv file or a folder of "
                        "PNG images")
    n_train = None
    if path.is_dir():
        x, labels = load_image_folder(path)
    elif path.suffix in ARRAY_SUFFIXES:
        x, labels, n_train = load_array_file(path)
    elif path.suffix.lower() in TABLE_SUFFIXES:
        x, labels = load_table_file(path)
    else:
        raise DataError(f"{path} is not a .npy/.npz/.csv/.tsv file or a folder; convert it with numpy.save")
    if x.ndim == 0:
        raise DataError(f"{path} holds a single value, not an array of examples; save an array [N, ...] with one "
                        "row per example")
    if labels is not None:
        labels = _check_labels(labels, len(x))
    return x, labels, n_train


def user_format(path: str | os.PathLike[str] | None, options: dict[str, Any]) -> UserFormat:
    """The `UserFormat` of the data at `path`: `options` as declared, the rest inferred (see `infer_format`);
    image folders are [N, C, H, W] 8-bit images."""
    x, _, _ = read_user_array(path)
    return array_format(x, Path(str(path)).expanduser().is_dir(), options)


def array_format(x: np.ndarray, folder: bool, options: dict[str, Any]) -> UserFormat:
    """The `UserFormat` of array `x` (an image folder's when `folder`): declared `options` checked, the rest
    inferred."""
    check_numeric(x)
    opts = {k: v for k, v in options.items() if v is not None}
    kind = opts.get("kind") or ("discrete" if "num_classes" in opts or "values" in opts else None)
    if kind is not None and kind not in KINDS:
        raise DataError(f"declare the data type with kind= one of {', '.join(KINDS)} (or leave it out to infer "
                        f"it), got {kind!r}")
    if folder:
        opts.setdefault("layout", "NCHW")
        if kind != "continuous":
            opts.setdefault("low", 0)
            opts.setdefault("high", 255)
    if kind == "discrete" and x.dtype.kind == "f":
        raise DataError(f"discrete data needs integer class indices, got {x.dtype}; cast with "
                        "x.astype(np.int64) or declare kind='continuous'")
    for name in ("num_bins", "num_classes"):
        value = opts.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
            raise DataError(f"{name} must be an integer >= 2, got {value!r}")
        if value is not None and value > MAX_BINS:
            raise DataError(f"{name}={value} is more than {MAX_BINS}; use kind='continuous' for such data")
    if kind != "discrete" and "num_bins" in opts and x.dtype.kind in "biu" and "low" not in opts:
        k = opts["num_bins"]  # declared bins of integer data: bin indices 0..K-1 (or 8-bit grey levels)
        if x.size and x.min() >= 0 and x.max() < k:
            opts["low"], opts["high"] = 0, k - 1
        elif x.dtype == np.uint8:
            opts["low"], opts["high"] = 0, 255
        elif x.size:
            bad = int(x.max()) if x.max() >= k else int(x.min())
            raise DataError(f"bin index {bad} is outside 0..{k - 1} for num_bins={k}; fix the data, raise num_bins "
                            "or give the value range as data.options.low/high")
    if kind == "discrete" and "num_classes" in opts and "values" not in opts and x.size:
        k = opts["num_classes"]
        if x.min() < 0 or x.max() >= k:
            bad = int(x.max()) if x.max() >= k else int(x.min())
            raise DataError(f"class index {bad} is outside 0..{k - 1} for num_classes={k}; fix the data or raise "
                            "num_classes")
        opts["values"] = list(range(k))
    fmt = infer_format(x, opts)
    if fmt.kind == "discretized" and (fmt.num_bins or 0) > MAX_BINS:
        raise DataError(f"num_bins={fmt.num_bins} is more than {MAX_BINS} bins; use kind='continuous' for such data")
    return fmt


def load_user_data(path: str | os.PathLike[str] | None, split: str, options: dict[str, Any] | None = None,
                   ) -> tuple[ArrayDataset, UserFormat, int | None]:
    """One split of the user's data in the model's format, its `UserFormat` and the number of labels (None
    without labels). The split: the file's own (`x_train`/`x_test` in an .npz), else a seeded 90/10 split."""
    x, labels, n_train = read_user_array(path)
    fmt = array_format(x, Path(str(path)).expanduser().is_dir(), dict(options or {}))
    data = fmt.to_model(x)
    if n_train is not None:
        idx = torch.arange(n_train) if split == "train" else torch.arange(n_train, len(data))
        if idx.numel() == 0:
            raise DataError(f"the file's {split} split is empty; give x_train and x_test with examples")
    else:
        idx = torch.from_numpy(split_indices(len(data), split))
    ys = None if labels is None else torch.from_numpy(labels)[idx]
    num_labels = None if labels is None else int(labels.max()) + 1
    return ArrayDataset(data[idx], ys), fmt, num_labels


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    if labels.shape != (n,) or labels.dtype.kind not in "biu":
        raise DataError(f"labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}; "
                        "save them as an int array")
    if n and labels.min() < 0:
        raise DataError(f"labels must be >= 0, got {labels.min()}; map them to 0..L-1")
    return labels.astype(np.int64)
