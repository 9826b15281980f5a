"""The dataset registry: name -> declared data type and loader (an explicit dict, no reflection)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from torch.utils.data import Dataset

from bfn.data.spec import DataSpec, Kind
from bfn.errors import DataError

Opts = dict[str, Any]
Loaded = tuple[Dataset, DataSpec]
Loader = Callable[[DataSpec, str, str | None, Opts], Loaded]


@dataclass(frozen=True)
class Entry:
    """A registered dataset: its spec (default options), what it is, whether it loads offline, its loader, the
    options the loader takes and its splits."""

    spec: DataSpec
    description: str
    offline: Callable[[], bool]
    load: Loader
    options: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "test")


def _spec(name: str, kind: Kind, shape: tuple[int, ...], *, classes: int | None = None, bins: int | None = None,
          labels: int | None = None, layout: str = "") -> DataSpec:
    return DataSpec(kind=kind, shape=shape, num_classes=classes, num_bins=bins, num_labels=labels, name=name,
                    layout=layout)


def _always() -> bool:
    return True


def _mnist_full_offline() -> bool:
    from bfn.data.mnist import mnist_full_present

    return mnist_full_present()


def _cifar_offline() -> bool:
    from bfn.data.cifar10 import cifar10_present

    return cifar10_present()


def _text8_offline() -> bool:
    from bfn.data.text8 import text8_present

    return text8_present()


def _shakespeare_offline() -> bool:
    from bfn.data.shakespeare import shakespeare_present

    return shakespeare_present()


def _bins(spec: DataSpec, opts: Opts) -> tuple[int, DataSpec]:
    from bfn.data.common import check_bins

    bins = check_bins(opts.get("bins", spec.num_bins))
    return bins, replace(spec, num_bins=bins)


def _load_mnist(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.mnist import mnist_5k_split, mnist_dataset, mnist_full

    if spec.name.startswith("mnist-full"):
        images, labels = _held_out(mnist_full, split, root, opts)
    else:
        images, labels = mnist_5k_split(split)
    if spec.kind == "discrete":
        return mnist_dataset(images, labels, "binarized", generator=opts.get("generator")), spec
    bins, spec = _bins(spec, opts)
    return mnist_dataset(images, labels, "discretized", num_bins=bins), spec


def _load_multidigit(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.mnist import mnist_5k_split
    from bfn.data.multi_mnist import MultiDigit

    size = _positive_int(opts.get("size", 10_000 if split == "train" else 2_000), "size")
    seed = _int(opts.get("seed", 0), "seed")
    images, labels = mnist_5k_split(split)
    return MultiDigit(images, labels, size, seed=seed, generator=opts.get("generator")), spec


def _held_out(read: Callable[..., tuple[Any, Any]], split: str, root: str | None, opts: Opts) -> tuple[Any, Any]:
    """Arrays of one split; with the `holdout` option, "train" and "valid" are the official BFN code's split of the
    training set (see `data.common.holdout_split`)."""
    from bfn.data.common import holdout_split

    if split == "valid" and "holdout" not in opts:
        raise DataError("the valid split is the part of the training set held out with the holdout option; "
                        "add e.g. holdout=0.01")
    images, labels = read("test" if split == "test" else "train", root, opts.get("download"))
    if "holdout" in opts and split != "test":
        idx = holdout_split(len(images), opts["holdout"], split)
        return images[idx], labels[idx]
    return images, labels


def _load_mixture(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.toy import MIXTURE_1D, MIXTURE_2D, MixtureDataset

    size = _positive_int(opts.get("size", 4000 if split == "train" else 1000), "size")
    seed = _int(opts.get("seed", 0), "seed")
    mixture = MIXTURE_1D if spec.name == "mixture-1d" else MIXTURE_2D
    return MixtureDataset(mixture, size, seed=2 * seed + (split == "test")), spec


def _load_cifar(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.cifar10 import cifar10
    from bfn.data.common import GreyImages

    bins, spec = _bins(spec, opts)
    images, labels = _held_out(cifar10, split, root, opts)
    return GreyImages(images, labels, "discretized", num_bins=bins), spec


def _load_text8(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.text8 import Text8, read_text8, text8_file

    seq_len = _positive_int(opts.get("seq_len", 256), "seq_len")
    dataset = Text8(read_text8(text8_file(root, opts.get("download")), split), seq_len, opts.get("stride"))
    return dataset, replace(spec, shape=(seq_len,))


def _load_shakespeare(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.shakespeare import shakespeare_split
    from bfn.data.text8 import Text8

    seq_len = _positive_int(opts.get("seq_len", spec.shape[0]), "seq_len")
    dataset = Text8(shakespeare_split(split), seq_len, opts.get("stride"))
    return dataset, replace(spec, shape=(seq_len,))


def _load_array(spec: DataSpec, split: str, root: str | None, opts: Opts) -> Loaded:
    from bfn.data.arrays import load_user_data
    from bfn.data.infer import is_image_layout

    path = opts.pop("path", None)
    dataset, fmt, num_labels = load_user_data(path, split, opts)
    shape = tuple(dataset.x.shape[1:])  # every split holds at least one example
    num_classes = len(fmt.values) if fmt.values is not None and fmt.kind == "discrete" else None
    layout = "image" if is_image_layout(fmt.layout) else "flat"
    return dataset, replace(spec, kind=fmt.kind, shape=shape, num_bins=fmt.num_bins,  # type: ignore[arg-type]
                            num_classes=num_classes, num_labels=num_labels, layout=layout)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"option {name} must be an integer, got {value!r}")
    return value


def _positive_int(value: Any, name: str) -> int:
    if _int(value, name) < 1:
        raise DataError(f"option {name} must be a positive integer, got {value!r}")
    return value


REGISTRY: dict[str, Entry] = {
    "mnist-binarized": Entry(
        _spec("mnist-binarized", "discrete", (1, 28, 28), classes=2, labels=10, layout="image"),
        "5,000 MNIST digits shipped with bfn (4,000 train / 1,000 test), dynamically binarized", _always,
        _load_mnist, ("generator",)),
    "mnist-grey": Entry(
        _spec("mnist-grey", "discretized", (1, 28, 28), bins=16, labels=10, layout="image"),
        "5,000 MNIST digits shipped with bfn, grey levels in `bins` bins (16 default, or 256)", _always,
        _load_mnist, ("bins",)),
    "mnist-full-binarized": Entry(
        _spec("mnist-full-binarized", "discrete", (1, 28, 28), classes=2, labels=10, layout="image"),
        "MNIST 60,000 train / 10,000 test from the IDX files, dynamically binarized", _mnist_full_offline,
        _load_mnist, ("generator", "download", "holdout"), ("train", "valid", "test")),
    "mnist-full-grey": Entry(
        _spec("mnist-full-grey", "discretized", (1, 28, 28), bins=16, labels=10, layout="image"),
        "MNIST 60,000 train / 10,000 test from the IDX files, grey levels in `bins` bins", _mnist_full_offline,
        _load_mnist, ("bins", "download", "holdout"), ("train", "valid", "test")),
    "multidigit-binarized": Entry(
        _spec("multidigit-binarized", "discrete", (1, 64, 64), classes=2, labels=100, layout="image"),
        "64x64 canvases of two shipped MNIST digits, label = the number 0..99, dynamically binarized", _always,
        _load_multidigit, ("size", "seed", "generator")),
    "mixture-1d": Entry(
        _spec("mixture-1d", "continuous", (1,), layout="flat"),
        "1-D mixture of four Gaussians (means -0.75, -0.25, 0.25, 0.75; std 0.05), `size` draws (4,000)",
        _always, _load_mixture, ("size", "seed")),
    "mixture-2d": Entry(
        _spec("mixture-2d", "continuous", (2,), layout="flat"),
        "2-D mixture of eight Gaussians on a circle of radius 0.7 (std 0.05), `size` draws (4,000)",
        _always, _load_mixture, ("size", "seed")),
    "cifar10": Entry(
        _spec("cifar10", "discretized", (3, 32, 32), bins=256, labels=10, layout="image"),
        "CIFAR-10 50,000 train / 10,000 test (binary version), 8-bit colour in `bins` bins (256 default)",
        _cifar_offline, _load_cifar, ("bins", "download", "holdout"), ("train", "valid", "test")),
    "text8": Entry(
        _spec("text8", "discrete", (256,), classes=27, layout="sequence"),
        "text8 characters (a-z and space; 90M/5M/5M train/valid/test) in sequences of `seq_len` (256)",
        _text8_offline, _load_text8, ("seq_len", "stride", "download"), ("train", "valid", "test")),
    "shakespeare": Entry(
        _spec("shakespeare", "discrete", (128,), classes=27, layout="sequence"),
        "Shakespeare's works shipped with bfn in text8's 27 symbols, split by work (3.9M/0.35M/0.47M chars), "
        "sequences of `seq_len` (128)", _shakespeare_offline,
        _load_shakespeare, ("seq_len", "stride"), ("train", "valid", "test")),
    "array": Entry(
        _spec("array", "continuous", ()),
        "your data: path= a .npy/.npz/.csv file or PNG folder; layout, kind, bins/classes and range are inferred "
        "(or set: layout, kind, num_bins, num_classes, values, low, high); 90/10 split unless x_train/x_test",
        _always, _load_array, ("path", "kind", "num_bins", "num_classes", "layout", "values", "low", "high",
                               "dtype")),
}


def list_datasets() -> list[Entry]:
    """Every registered dataset (spec with default options, description, offline availability)."""
    return list(REGISTRY.values())


def load_dataset(name: str, split: Literal["train", "test"] | str, *, root: str | None = None,
                 **options: Any) -> tuple[Dataset, DataSpec]:
    """One split of dataset `name` and its spec. Items are (x, label): x in the model's data format (int64
    classes, float32 bin centres or float32 values), label an int64 scalar (-1 when unlabelled).

    `root` is the data folder (default $BFN_DATA_DIR or ~/.cache/bfn); see `bfn data list` for the names and
    each entry's options.
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(REGISTRY)} "
                        "(see `bfn data list`)")
    if split not in entry.splits:
        raise DataError(f"unknown split {split!r} for {name}; choose one of {', '.join(entry.splits)}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise DataError(f"unknown option {unknown[0]!r} for dataset {name}; its options are: {valid}")
    return entry.load(entry.spec, split, root, dict(options))
