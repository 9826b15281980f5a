"""bfn.data: item format, dynamic binarization, the shipped split, readers (tiny written files), user data."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

import bfn.data.download as download
from bfn.data import DataSpec, list_datasets, load_dataset
from bfn.data.arrays import split_indices
from bfn.data.mnist import mnist_5k, mnist_5k_split, read_idx
from bfn.data.text8 import decode
from bfn.data.toy import MIXTURE_1D, MIXTURE_2D, mixture_1d_log_prob, mixture_1d_sample
from bfn.errors import DataError

OFFLINE = ["mnist-binarized", "mnist-grey", "multidigit-binarized", "mixture-1d", "mixture-2d", "shakespeare"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Every test runs offline: URL opens are recorded and fail; the default cache is an empty temp folder."""
    calls: list[str] = []

    def refuse(request, timeout=None):  # noqa: ANN001, ANN202
        calls.append(request.full_url)
        raise URLError("network disabled in tests")

    monkeypatch.setattr(download, "urlopen", refuse)
    monkeypatch.setenv("BFN_DATA_DIR", str(tmp_path / "default-cache"))
    return calls


def centres(k: int) -> torch.Tensor:
    return torch.tensor([(2 * i + 1) / k - 1 for i in range(k)], dtype=torch.float32)


# ---------------------------------------------------------------- registry and item convention


def test_registry_lists_every_dataset_with_its_type() -> None:
    specs = {e.spec.name: e for e in list_datasets()}
    online = {"mnist-full-binarized", "mnist-full-grey", "cifar10", "text8"}
    assert set(OFFLINE) | online | {"array"} == set(specs)
    kinds = ("continuous", "discretized", "discrete")
    assert all(isinstance(e.spec, DataSpec) and e.spec.kind in kinds for e in specs.values())
    assert all(specs[name].offline() for name in OFFLINE)
    assert not specs["mnist-full-grey"].offline() and not specs["cifar10"].offline()
    assert specs["mnist-binarized"].spec.num_classes == 2 and specs["text8"].spec.num_classes == 27
    assert specs["multidigit-binarized"].spec.num_labels == 100


@pytest.mark.parametrize("name", OFFLINE)
def test_items_follow_the_convention(name: str) -> None:
    options = {"size": 8} if name in ("multidigit-binarized", "mixture-1d", "mixture-2d") else {}
    ds, spec = load_dataset(name, "test", **options)
    x, label = ds[len(ds) - 1]
    assert tuple(x.shape) == spec.shape
    assert label.dtype == torch.int64 and label.ndim == 0
    if spec.kind == "discrete":
        assert x.dtype == torch.int64 and x.min() >= 0 and x.max() < spec.num_classes
    else:
        assert x.dtype == torch.float32
    if spec.num_labels is None:
        assert label.item() == -1
    else:
        assert 0 <= label.item() < spec.num_labels


def test_registry_errors_are_data_errors() -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist-colour'.*bfn data list"):
        load_dataset("mnist-colour", "train")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_dataset("mnist-grey", "valid")
    with pytest.raises(DataError, match="unknown option 'bin'.*bins"):
        load_dataset("mnist-grey", "train", bin=16)
    with pytest.raises(DataError, match="bins must be an integer from 2 to 256"):
        load_dataset("mnist-grey", "train", bins=512)


# ---------------------------------------------------------------- shipped MNIST subset


def test_embedded_split_is_fixed_and_balanced() -> None:
    train, _ = load_dataset("mnist-grey", "train")
    test, _ = load_dataset("mnist-grey", "test")
    assert (len(train), len(test)) == (4000, 1000)
    for split, per_digit in (("train", 400), ("test", 100)):
        images, labels = mnist_5k_split(split)
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
        assert np.bincount(labels, minlength=10).tolist() == [per_digit] * 10
    labels = torch.stack([test[i][1] for i in range(len(test))])
    assert labels.min() == 0 and labels.max() == 9
    again, _ = load_dataset("mnist-grey", "test")
    assert all(torch.equal(test[i][0], again[i][0]) for i in (0, 500, 999))
    flat = mnist_5k()[0].reshape(5000, -1)
    assert len(np.unique(flat, axis=0)) == 5000  # no image in both splits


def test_dynamic_binarization_redraws_with_grey_level_probability() -> None:
    ds, spec = load_dataset("mnist-binarized", "train")
    assert spec.kind == "discrete" and spec.num_classes == 2 and spec.shape == (1, 28, 28)
    first, second = ds[7][0], ds[7][0]
    assert not torch.equal(first, second)  # a fresh draw per access, not a fixed threshold
    grey = torch.as_tensor(mnist_5k_split("train")[0][7], dtype=torch.float32) / 255
    draws = torch.stack([ds[7][0][0] for _ in range(400)]).float()
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert (draws.mean(0) - grey).abs().max() < 0.15
    assert (draws.mean(0) - grey).abs().mean() < 0.01
    assert torch.all(draws[:, grey == 0] == 0) and torch.all(draws[:, grey == 1] == 1)


def test_binarization_generator_makes_draws_reproducible() -> None:
    a, _ = load_dataset("mnist-binarized", "test", generator=torch.Generator().manual_seed(3))
    b, _ = load_dataset("mnist-binarized", "test", generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(5))


@pytest.mark.parametrize("bins", [16, 256])
def test_discretized_values_are_exact_bin_centres(bins: int) -> None:
    ds, spec = load_dataset("mnist-grey", "train", bins=bins)
    assert spec.kind == "discretized" and spec.num_bins == bins
    images, _ = mnist_5k_split("train")
    for i in (0, 1, 3999):
        x = ds[i][0]
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        assert torch.isin(x, centres(bins)).all()
        k = torch.as_tensor(images[i], dtype=torch.int64) * bins // 256
        assert torch.equal(x[0], centres(bins)[k])
    if bins == 256:
        g = torch.as_tensor(images[0], dtype=torch.float64)
        assert torch.allclose(ds[0][0][0].double(), (2 * g + 1) / 256 - 1, atol=1e-7)


# ---------------------------------------------------------------- multi-digit canvases


def test_multidigit_canvases_hold_the_labelled_digits() -> None:
    ds, spec = load_dataset("multidigit-binarized", "train", size=30, seed=5)
    assert spec.shape == (1, 64, 64) and spec.num_labels == 100 and len(ds) == 30
    images, labels = mnist_5k_split("train")
    for i in range(len(ds)):
        lay = ds.layout(i)
        expected = np.zeros((64, 64), dtype=np.uint8)
        for src, (r, c) in ((lay.left, lay.left_at), (lay.right, lay.right_at)):
            assert 0 <= r <= 36 and 0 <= c <= 36
            expected[r:r + 28, c:c + 28] = np.maximum(expected[r:r + 28, c:c + 28], images[src])
        canvas = ds.canvas(i)[0].numpy()
        assert np.array_equal(canvas, expected)
        assert lay.left_at[1] <= 8 and lay.right_at[1] >= 28  # left digit left of the right one
        # columns that only the left digit covers show exactly that digit
        r, c = lay.left_at
        only_left = min(28, lay.right_at[1] - c)
        assert np.array_equal(canvas[r:r + 28, c:c + only_left], images[lay.left][:, :only_left])
        x, label = ds[i]
        assert label.item() == 10 * labels[lay.left] + labels[lay.right]
        grey = torch.as_tensor(canvas)
        assert torch.all(x[0][grey == 0] == 0) and torch.all(x[0][grey == 255] == 1)


def test_multidigit_is_deterministic_and_split_respecting() -> None:
    a, _ = load_dataset("multidigit-binarized", "train", size=10)
    b, _ = load_dataset("multidigit-binarized", "train", size=50)
    c, _ = load_dataset("multidigit-binarized", "train", size=10, seed=1)
    assert all(torch.equal(a.canvas(i), b.canvas(i)) for i in range(10))  # canvas i does not depend on size
    assert any(not torch.equal(a.canvas(i), c.canvas(i)) for i in range(10))
    test, _ = load_dataset("multidigit-binarized", "test", size=10)
    assert torch.equal(test.images, torch.as_tensor(mnist_5k_split("test")[0]))
    assert torch.equal(a.images, torch.as_tensor(mnist_5k_split("train")[0]))
    assert len(load_dataset("multidigit-binarized", "test")[0]) == 2000
    with pytest.raises(DataError, match="size must be a positive integer"):
        load_dataset("multidigit-binarized", "train", size=0)


# ---------------------------------------------------------------- IDX files and full MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX by hand: 0, 0, dtype code 0x08 (uint8), ndim, big-endian dims, then the bytes."""
    assert array.dtype == np.uint8
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize("name", ["x-idx3-ubyte.gz", "x-idx3-ubyte"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and np.array_equal(back, array)


def test_idx_reader_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def write_tiny_mnist(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for split, prefix, n, ext in (("train", "train", 6, ".gz"), ("test", "t10k", 3, "")):  # gz and plain
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        out[split] = (images, labels)
    return out


def test_full_mnist_loads_from_a_folder_of_idx_files(tmp_path: Path, no_network: list[str]) -> None:
    written = write_tiny_mnist(tmp_path / "mnist")
    for split in ("train", "test"):
        images, labels = written[split]
        grey, spec = load_dataset("mnist-full-grey", split, root=str(tmp_path), bins=256, download=False)
        assert len(grey) == len(labels) and spec.num_bins == 256
        assert torch.equal(grey[1][0][0], centres(256)[torch.as_tensor(images[1], dtype=torch.int64)])
        assert grey[1][1].item() == labels[1]
        binary, spec = load_dataset("mnist-full-binarized", split, root=str(tmp_path))
        assert spec.kind == "discrete" and set(binary[0][0].unique().tolist()) <= {0, 1}
    assert no_network == []  # present files are never re-downloaded


def test_full_mnist_missing_files_name_the_folder(tmp_path: Path, no_network: list[str]) -> None:
    with pytest.raises(DataError, match=f"not found in {tmp_path / 'mnist'}.*place the files there"):
        load_dataset("mnist-full-binarized", "train", root=str(tmp_path), download=False)
    assert no_network == []
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte\.gz: https://ossci.*"
                                        f"place it in {tmp_path / 'mnist'}"):
        load_dataset("mnist-full-binarized", "train", root=str(tmp_path))
    assert no_network[:2] == [m + "train-images-idx3-ubyte.gz" for m in
                              ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                               "https://storage.googleapis.com/cvdf-datasets/mnist/")]
    assert not any(p.name.endswith(".part") for p in (tmp_path / "mnist").iterdir())


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_download_checks_the_checksum_and_renames_atomically(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"tiny payload"
    good = download.RemoteFile("f.bin", ("https://a.invalid/f.bin", "https://b.invalid/f.bin"),
                               md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(download, "urlopen", lambda request, timeout=None: FakeResponse(payload))
    path = download.fetch(good, tmp_path / "cache", progress=False)
    assert path.read_bytes() == payload and [p.name for p in path.parent.iterdir()] == ["f.bin"]
    bad = download.RemoteFile("g.bin", ("https://a.invalid/g.bin",), md5="0" * 32)
    with pytest.raises(DataError, match="md5 .* expected 0000.*by hand from https://a.invalid/g.bin"):
        download.fetch(bad, tmp_path / "cache", progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["f.bin"]


def test_ensure_rechecks_present_files_only_when_asked(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"the real bytes"
    remote = download.RemoteFile("f.bin", ("https://a.invalid/f.bin",), md5=hashlib.md5(payload).hexdigest())
    (tmp_path / "f.bin").write_bytes(b"stale")
    download.ensure([remote], tmp_path, download=None, what="test")  # present: not checked, not fetched
    assert (tmp_path / "f.bin").read_bytes() == b"stale"
    monkeypatch.setattr(download, "urlopen", lambda request, timeout=None: FakeResponse(payload))
    monkeypatch.setattr(download, "_bar", lambda name, total: None)
    download.ensure([remote], tmp_path, download=True, what="test")
    assert (tmp_path / "f.bin").read_bytes() == payload


# ---------------------------------------------------------------- CIFAR-10 binary and text8


def write_cifar_batches(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    out: dict[str, list] = {"train": [], "test": []}
    names = [("train", f"data_batch_{i}.bin") for i in range(1, 6)] + [("test", "test_batch.bin")]
    for split, name in names:
        labels = rng.integers(0, 10, 2, dtype=np.uint8)
        images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([labels[:, None], images.reshape(2, -1)], axis=1)  # label byte, 3072 pixels
        (folder / name).write_bytes(records.tobytes())
        out[split].append((images, labels))
    return {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in out.items()}


def test_cifar10_reads_binary_batches(tmp_path: Path, no_network: list[str]) -> None:
    written = write_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-bin")
    ds, spec = load_dataset("cifar10", "train", root=str(tmp_path))
    images, labels = written["train"]
    assert len(ds) == 10 and spec.shape == (3, 32, 32) and spec.num_bins == 256
    x, label = ds[9]
    assert torch.equal(x, centres(256)[torch.as_tensor(images[9], dtype=torch.int64)])
    assert label.item() == labels[9]
    test, _ = load_dataset("cifar10", "test", root=str(tmp_path), bins=16)
    assert len(test) == 2 and torch.isin(test[0][0], centres(16)).all()
    assert no_network == []


def test_cifar10_unpacks_a_hand_placed_archive(tmp_path: Path, no_network: list[str]) -> None:
    staged = tmp_path / "staging" / "cifar-10-batches-bin"
    written = write_cifar_batches(staged)
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(staged, arcname="cifar-10-batches-bin")
        tar.add(staged / "test_batch.bin", arcname="../escape.bin")  # never written outside the folder
    ds, _ = load_dataset("cifar10", "test", root=str(tmp_path))
    assert ds[1][1].item() == written["test"][1][1] and no_network == []
    assert not (tmp_path / "escape.bin").exists()


def test_cifar10_offline_error_says_where_to_put_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"could not download cifar-10-binary\.tar\.gz.*toronto.*place it"):
        load_dataset("cifar10", "train", root=str(tmp_path))
    with pytest.raises(DataError, match="cifar-10-batches-bin"):
        load_dataset("cifar10", "train", root=str(tmp_path), download=False)


TEXT = ("the quick brown fox jumps over the lazy dog " * 50)[:2000]


def test_text8_reader_splits_by_characters(tmp_path: Path) -> None:
    (tmp_path / "text8").mkdir()
    (tmp_path / "text8" / "text8").write_text(TEXT)
    train, spec = load_dataset("text8", "train", root=str(tmp_path), seq_len=16)
    assert spec.kind == "discrete" and spec.num_classes == 27 and spec.shape == (16,)
    assert len(train) == 1800 // 16
    x, label = train[2]
    assert x.dtype == torch.int64 and x.shape == (16,) and label.item() == -1
    assert decode(x) == TEXT[32:48] and x.min() >= 0 and x.max() <= 26
    test, _ = load_dataset("text8", "test", root=str(tmp_path), seq_len=10)
    assert decode(test[0][0]) == TEXT[1900:1910] and len(test) == 10
    valid, _ = load_dataset("text8", "valid", root=str(tmp_path), seq_len=10, stride=5)
    assert decode(valid[1][0]) == TEXT[1805:1815] and len(valid) == 19


def test_text8_unzips_and_rejects_foreign_characters(tmp_path: Path, no_network: list[str]) -> None:
    (tmp_path / "text8").mkdir()
    with zipfile.ZipFile(tmp_path / "text8" / "text8.zip", "w") as archive:
        archive.writestr("text8", TEXT)
    train, _ = load_dataset("text8", "train", root=str(tmp_path), seq_len=20)
    assert decode(train[0][0]) == TEXT[:20] and no_network == []
    (tmp_path / "text8" / "text8").write_text("Hello world " * 20)
    with pytest.raises(DataError, match="only a-z and space, found b'H'"):
        load_dataset("text8", "train", root=str(tmp_path))
    with pytest.raises(DataError, match=r"could not download text8\.zip.*mattmahoney"):
        load_dataset("text8", "train", root=str(tmp_path / "elsewhere"))


# ---------------------------------------------------------------- user arrays and image folders


def test_user_npz_loads_with_a_deterministic_90_10_split(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (50, 3)).astype(np.float32)
    y = np.arange(50) % 4
    np.savez(tmp_path / "d.npz", x=x, labels=y)
    train, spec = load_dataset("array", "train", path=str(tmp_path / "d.npz"), kind="continuous")
    test, _ = load_dataset("array", "test", path=str(tmp_path / "d.npz"), kind="continuous")
    assert (len(train), len(test)) == (45, 5) and spec.shape == (3,) and spec.num_labels == 4
    idx = split_indices(50, "test")
    assert torch.equal(test[0][0], torch.from_numpy(x[idx[0]])) and test[0][1].item() == y[idx[0]]
    assert sorted(np.concatenate([split_indices(50, "train"), idx]).tolist()) == list(range(50))


def test_user_arrays_in_each_kind(tmp_path: Path) -> None:
    np.save(tmp_path / "classes.npy", np.random.default_rng(0).integers(0, 5, (20, 8)))
    ds, spec = load_dataset("array", "train", path=str(tmp_path / "classes.npy"), kind="discrete",
                            num_classes=5)
    assert spec.kind == "discrete" and spec.num_classes == 5 and ds[0][0].dtype == torch.int64
    assert ds[0][1].item() == -1 and spec.num_labels is None
    bins = np.random.default_rng(1).integers(0, 16, (20, 4))
    np.save(tmp_path / "bins.npy", bins)  # integer bin indices are mapped to centres
    ds, spec = load_dataset("array", "train", path=str(tmp_path / "bins.npy"), kind="discretized",
                            num_bins=16)
    assert spec.num_bins == 16 and torch.isin(ds[0][0], centres(16)).all()
    np.save(tmp_path / "centres.npy", centres(16).numpy()[bins].astype(np.float64))
    ds2, _ = load_dataset("array", "train", path=str(tmp_path / "centres.npy"), kind="discretized",
                          num_bins=16)
    assert torch.equal(ds[3][0], ds2[3][0])


@pytest.mark.parametrize(("array", "options", "message"), [
    (np.full((20, 2), 0.5, np.float32), {"kind": "discrete", "num_classes": 2}, "integer class indices"),
    (np.full((20, 2), 1.5, np.float32), {"kind": "discretized", "num_bins": 16}, r"must lie in \[-1, 1\]"),
    (np.full((20, 2), 0.01, np.float32), {"kind": "discretized", "num_bins": 16}, "sit on the centres"),
    (np.full((20, 2), 3), {"kind": "discrete", "num_classes": 3}, "class index 3 is outside 0..2"),
    (np.full((20, 2), 16), {"kind": "discretized", "num_bins": 16}, "bin index 16 is outside 0..15"),
    (np.array([[0.1, np.nan]] * 20), {"kind": "continuous"}, "NaN or Inf"),
    (np.full((20, 2), 2e6, np.float32), {"kind": "continuous"}, r"holds one value only \(2e\+06\)"),
    (np.zeros((0, 3), np.float32), {"kind": "continuous"}, "empty"),
    (np.zeros((20, 3), np.float32), {"kind": "gaussian"}, "declare the data type with kind="),
    (np.zeros((20, 3), np.int64), {"layout": "NHWC"}, "layout=NHWC needs a 4-D array"),
    (np.zeros((20, 3, 4, 5, 6), np.int64), {}, "has 5 axes"),
    (np.zeros((20, 5, 6, 7), np.int64), {}, "cannot tell the channel axis"),
    (np.arange(40).reshape(20, 2), {"num_classes": 2**40}, "more than 65536"),
])
def test_user_array_errors_are_one_line_data_errors(tmp_path: Path, array: np.ndarray, options: dict,
                                                    message: str) -> None:
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(DataError, match=message) as err:
        load_dataset("array", "train", path=str(tmp_path / "a.npy"), **options)
    assert "\n" not in str(err.value)


def test_user_array_missing_file_and_ambiguous_npz(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder: .*nope.npy"):
        load_dataset("array", "train", path=str(tmp_path / "nope.npy"), kind="continuous")
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; name the data array `x`"):
        load_dataset("array", "train", path=str(tmp_path / "two.npz"), kind="continuous")


def test_png_folders_load_grey_rgb_and_class_subfolders(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (12, 6, 5), dtype=np.uint8)
    (tmp_path / "grey").mkdir()
    for i, a in enumerate(grey):
        Image.fromarray(a, mode="L").save(tmp_path / "grey" / f"{i:02d}.png")
    ds, spec = load_dataset("array", "train", path=str(tmp_path / "grey"), kind="discretized", num_bins=256)
    assert spec.shape == (1, 6, 5) and len(ds) == 11
    first = int(split_indices(12, "train")[0])
    assert torch.equal(ds[0][0][0], centres(256)[torch.as_tensor(grey[first], dtype=torch.int64)])
    for cls in ("cat", "dog"):
        (tmp_path / "rgb" / cls).mkdir(parents=True)
        for i in range(5):
            rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(tmp_path / "rgb" / cls / f"{i}.png")
    ds, spec = load_dataset("array", "test", path=str(tmp_path / "rgb"), kind="continuous")
    assert spec.shape == (3, 4, 4) and spec.num_labels == 2 and len(ds) == 1


# ---------------------------------------------------------------- Gaussian mixtures


def test_mixture_1d_moments_and_component_fractions() -> None:
    x = mixture_1d_sample(40_000, torch.Generator().manual_seed(0))
    assert x.shape == (40_000, 1) and x.dtype == torch.float32
    means = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    comp = (x - means).abs().argmin(-1)
    fractions = torch.bincount(comp, minlength=4).float() / len(x)
    assert torch.allclose(fractions, torch.full((4,), 0.25), atol=0.015)
    assert abs(x.mean().item()) < 0.01
    assert abs(x.var().item() - (0.3125 + 0.05**2)) < 0.01
    assert abs((x[:, 0] - means[comp]).std().item() - 0.05) < 0.002
    grid = torch.linspace(-1.5, 1.5, 30_001)
    assert abs(torch.trapezoid(mixture_1d_log_prob(grid).exp(), grid).item() - 1) < 1e-4
    assert MIXTURE_1D.dim == 1


def test_mixture_datasets_are_deterministic() -> None:
    a, spec = load_dataset("mixture-1d", "train")
    b, _ = load_dataset("mixture-1d", "train")
    t, _ = load_dataset("mixture-1d", "test")
    assert len(a) == 4000 and spec.shape == (1,) and len(t) == 1000
    assert torch.equal(a.x, b.x) and not torch.equal(a.x[:1000], t.x)
    ring, spec = load_dataset("mixture-2d", "train", size=8000, seed=2)
    assert spec.shape == (2,) and len(ring) == 8000
    radius = ring.x.norm(dim=-1)
    assert abs(radius.mean().item() - 0.7) < 0.01
    angle = torch.atan2(ring.x[:, 1], ring.x[:, 0])
    comp = torch.round(angle / (2 * torch.pi / 8)).long() % 8
    fractions = torch.bincount(comp, minlength=8).float() / 8000
    assert torch.allclose(fractions, torch.full((8,), 0.125), atol=0.02)
    assert MIXTURE_2D.log_prob(ring.x[:5]).shape == (5,)
