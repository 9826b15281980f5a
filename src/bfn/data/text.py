"""Text in text8's 27 symbols (space 0, a..z 1..26): normalising, decoding, and prompts as inpainting observations.

Any run whose data are discrete sequences [L] over K = 27 classes is text (text8, shakespeare); `is_text` says so
from the run's data description, and the commands print and write strings for it instead of pictures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bfn.data.text8 import ALPHABET, decode, encode
from bfn.errors import DataError

NUM_SYMBOLS = len(ALPHABET)  # 27
_NOT_LETTER = re.compile(r"[^a-z]+")

__all__ = ["ALPHABET", "NUM_SYMBOLS", "decode", "decode_batch", "encode", "is_text", "normalize", "text_observation"]


def normalize(text: str) -> str:
    """Lowercase; every character outside a-z becomes a space; runs of spaces collapse to one (text8's rule).
    Leading and trailing spaces are kept as one space each, so that a prompt can end at a word boundary."""
    return _NOT_LETTER.sub(" ", text.lower())


def is_text(kind: str | None, shape: Sequence[int] | None, num_classes: int | None) -> bool:
    """Whether data of this kind/shape/K are 27-symbol text sequences."""
    return kind == "discrete" and shape is not None and len(tuple(shape)) == 1 and num_classes == NUM_SYMBOLS


def decode_batch(x: Tensor | np.ndarray) -> list[str]:
    """Class indices [N, L] -> N strings."""
    arr = np.asarray(x.cpu() if isinstance(x, Tensor) else x)
    if arr.ndim != 2:
        raise DataError(f"text samples must have shape [N, L], got {list(arr.shape)}")
    return [decode(row) for row in arr]


def text_observation(known: str | Mapping[int, str], seq_len: int) -> tuple[Tensor, Tensor]:
    """(known classes [L], mask [L]) for `BFN.sample(inpaint=...)`: a prompt string fixes positions 0..len-1;
    a mapping {start position: text} fixes any set of spans. The text is normalised first (`normalize`)."""
    spans = {0: known} if isinstance(known, str) else dict(known)
    values = torch.zeros(seq_len, dtype=torch.long)
    mask = torch.zeros(seq_len, dtype=torch.bool)
    for start, text in spans.items():
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise DataError(f"known text must map integer positions to strings, got {start!r}: {text!r}")
        ids = encode(normalize(text))
        if not ids.size:
            raise DataError(f"the known text at position {start} is empty")
        if start < 0 or start + ids.size > seq_len:
            raise DataError(f"the known text {text!r} at position {start} runs past the sequence length {seq_len}; "
                            f"shorten it (the run's sequences hold {seq_len} characters)")
        if mask[start:start + ids.size].any():
            raise DataError(f"the known text at position {start} overlaps another span")
        values[start:start + ids.size] = torch.from_numpy(ids.astype(np.int64))
        mask[start:start + ids.size] = True
    return values, mask


def data_is_text(data: Any) -> bool:
    """`is_text` for a `DataSpec` (or its dict form, a run's `config["data"]`)."""
    if isinstance(data, Mapping):
        return is_text(data.get("kind"), data.get("shape"), data.get("num_classes"))
    return is_text(data.kind, data.shape, data.num_classes)
