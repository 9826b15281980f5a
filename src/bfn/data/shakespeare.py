"""Shakespeare's works shipped with bfn: text8's 27 symbols, split by work (assets/README.md).

The text is read by the text8 data path (`bfn.data.text8.Text8`: windows of `seq_len` characters, one every
`stride`), so every text tool (bits/char, vocabulary score, text samples) serves both corpora.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np

from bfn.errors import DataError

ASSET = "shakespeare27.npz"
SPLITS = ("train", "valid", "test")


@cache
def _arrays() -> dict[str, np.ndarray]:
    ref = resources.files("bfn.data") / "assets" / ASSET
    try:
        with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the shipped corpus {ASSET} ({err}); reinstall bfn, or rebuild it with "
                        "scripts/build_shakespeare.py") from None


def shakespeare_present() -> bool:
    """Whether the corpus file is in the installed package."""
    return (resources.files("bfn.data") / "assets" / ASSET).is_file()


def shakespeare_split(split: str) -> np.ndarray:
    """uint8 classes 0..26 (space, a..z) of one split: its works joined by single spaces."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for shakespeare; choose one of {', '.join(SPLITS)}")
    return _arrays()[split]


def shakespeare_works(split: str) -> list[tuple[str, int]]:
    """(work, start offset) of each work in one split."""
    shakespeare_split(split)
    arrays = _arrays()
    return list(zip(arrays[f"{split}_works"].tolist(), arrays[f"{split}_starts"].tolist(), strict=True))
