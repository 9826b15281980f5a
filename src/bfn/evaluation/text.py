"""Text evaluation: n-gram baselines in bits/char and a vocabulary score for samples.

Bits/char of a model come from `bfn.evaluation.nll` (bits/dim of a character sequence). For context on the same
windows this module fits character n-gram models (unigram, bigram; additive smoothing) on the training split and
scores the test windows with them: a window's first character gets the unigram probability (the model sees no
context before the window either), each later one p(c_j | c_{j-1}). Errors are standard errors over windows,
as for the model.

Vocabulary score (the analogue of the spelling accuracy reported for text8): the share of the words of a set of
sequences that occur in the training vocabulary. Words are maximal runs of letters; the first and last word of each
sequence are left out, since a window cut from running text (and hence what the model learned to produce) may
start and end in the middle of a word. The same score for held-out real text is the ceiling a perfect model
reaches; unigram and bigram samples give floors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bfn.data.text import NUM_SYMBOLS, decode_batch
from bfn.errors import DataError

LN2 = math.log(2.0)


# --- n-gram models ----------------------------------------------------------------------------------------
def unigram_probs(ids: np.ndarray, k: int = NUM_SYMBOLS, smoothing: float = 1.0) -> np.ndarray:
    """p(c) = (count(c) + a) / (N + a K), [K] (additive smoothing with a = `smoothing`)."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=k).astype(np.float64)
    return (counts + smoothing) / (counts.sum() + smoothing * k)


def bigram_probs(ids: np.ndarray, k: int = NUM_SYMBOLS, smoothing: float = 1.0) -> np.ndarray:
    """p(c' | c) = (count(c c') + a) / (count(c .) + a K), [K, K], rows indexed by the previous character."""
    ids = np.asarray(ids, dtype=np.int64)
    counts = np.bincount(ids[:-1] * k + ids[1:], minlength=k * k).reshape(k, k).astype(np.float64)
    counts[counts.sum(1) + smoothing * k == 0] = 1.0  # a never-seen previous character (no smoothing): uniform
    return (counts + smoothing) / (counts.sum(1, keepdims=True) + smoothing * k)


def ngram_nll(windows: Tensor | np.ndarray, unigram: np.ndarray, bigram: np.ndarray | None = None) -> np.ndarray:
    """-ln p(window) in nats per window [N] under the unigram model, or the bigram model when `bigram` is given
    (first character of a window: unigram)."""
    x = np.asarray(windows.cpu() if isinstance(windows, Tensor) else windows, dtype=np.int64)
    if x.ndim != 2:
        raise DataError(f"windows must have shape [N, L], got {list(x.shape)}")
    with np.errstate(divide="ignore"):  # unsmoothed models: -ln 0 = inf for characters never seen
        if bigram is None:
            return -np.log(unigram)[x].sum(1)
        return -np.log(unigram)[x[:, 0]] - np.log(bigram)[x[:, :-1], x[:, 1:]].sum(1)


def bits_summary(nats_per_window: np.ndarray, length: int) -> dict[str, float]:
    """Mean bits/char over windows of `length` characters and its standard error over windows."""
    bits = np.asarray(nats_per_window, dtype=np.float64) / LN2 / length
    se = float(bits.std(ddof=1) / math.sqrt(bits.size)) if bits.size > 1 else float("nan")
    return {"bits_per_char": float(bits.mean()), "bits_per_char_se": se, "n_windows": int(bits.size)}


def ngram_baselines(train_ids: np.ndarray, windows: Tensor | np.ndarray, *, smoothing: float = 1.0) -> dict[str, Any]:
    """Unigram and bigram bits/char (mean ± s.e. over windows) of test `windows` [N, L], fitted on `train_ids`."""
    length = int(np.asarray(windows.shape)[1])
    uni = unigram_probs(train_ids, smoothing=smoothing)
    bi = bigram_probs(train_ids, smoothing=smoothing)
    return {"unigram": bits_summary(ngram_nll(windows, uni), length),
            "bigram": bits_summary(ngram_nll(windows, uni, bi), length), "smoothing": smoothing}


def ngram_samples(train_ids: np.ndarray, n: int, length: int, order: int, *, seed: int = 0) -> Tensor:
    """n sequences of `length` characters drawn from the unigram (order 1) or bigram (order 2) model of the
    training text, int64 [n, length] (the floors of the vocabulary score)."""
    if order not in (1, 2):
        raise DataError(f"order must be 1 (unigram) or 2 (bigram), got {order}")
    rng = np.random.default_rng(seed)
    uni = unigram_probs(train_ids, smoothing=0.0)
    out = np.empty((n, length), dtype=np.int64)
    out[:, 0] = rng.choice(NUM_SYMBOLS, size=n, p=uni)
    if order == 1:
        out[:, 1:] = rng.choice(NUM_SYMBOLS, size=(n, length - 1), p=uni)
        return torch.from_numpy(out)
    cdf = np.cumsum(bigram_probs(train_ids, smoothing=0.0), axis=1)
    for j in range(1, length):
        u = rng.random(n)
        out[:, j] = np.minimum((cdf[out[:, j - 1]] < u[:, None]).sum(1), NUM_SYMBOLS - 1)
    return torch.from_numpy(out)


# --- vocabulary score -------------------------------------------------------------------------------------
def words(text: str, *, interior: bool = True) -> list[str]:
    """The words (runs of letters) of a string; with `interior`, without its first and last word."""
    found = text.split()
    return found[1:-1] if interior else found


def vocabulary(train_text: str | Iterable[str]) -> set[str]:
    """The set of words of the training text (a string, or strings)."""
    texts = [train_text] if isinstance(train_text, str) else list(train_text)
    return {w for t in texts for w in t.split()}


def vocabulary_score(texts: Sequence[str], vocab: set[str], *, interior: bool = True) -> dict[str, Any]:
    """Share of the words of `texts` found in `vocab`, pooled over all texts, with its standard error over texts
    (ratio estimator: se^2 = sum_i (h_i - s n_i)^2 / (m (m - 1) nbar^2) for hits h_i of n_i words in text i).

    Returns {"score", "score_se", "words", "texts", "distinct_words"}; score is NaN when there are no words.
    """
    hits, totals, seen = [], [], set()
    for text in texts:
        ws = words(text, interior=interior)
        hits.append(sum(w in vocab for w in ws))
        totals.append(len(ws))
        seen.update(ws)
    h, n = np.asarray(hits, dtype=np.float64), np.asarray(totals, dtype=np.float64)
    m, total = len(texts), float(n.sum())
    if total == 0:
        return {"score": float("nan"), "score_se": float("nan"), "words": 0, "texts": m, "distinct_words": 0}
    score = float(h.sum() / total)
    se = float(math.sqrt(((h - score * n) ** 2).sum() / (m * (m - 1))) / n.mean()) if m > 1 else float("nan")
    return {"score": score, "score_se": se, "words": int(total), "texts": m, "distinct_words": len(seen)}


def score_samples(samples: Tensor | np.ndarray, vocab: set[str], *, interior: bool = True) -> dict[str, Any]:
    """`vocabulary_score` of class-index samples [N, L]."""
    return vocabulary_score(decode_batch(samples), vocab, interior=interior)


# --- a run's text evaluation -------------------------------------------------------------------------------
def train_split(cfg: Any) -> Any:
    """A run's training split, loaded with the run's data options (the n-gram models and the vocabulary)."""
    from bfn.data import load_dataset

    return load_dataset(cfg.data.name, "train", root=cfg.data.root, **cfg.data.options)[0]


def split_ids(dataset: Any) -> np.ndarray:
    """The character classes of a text split (a `bfn.data.text8.Text8` dataset: its `ids`)."""
    ids = getattr(dataset, "ids", None)
    if ids is None:
        raise DataError(f"{type(dataset).__name__} is not a text dataset (no character ids); use a text run")
    return np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)


def text_quality(model: Any, train_ids: np.ndarray, test_windows: Tensor, *, steps: Sequence[int],
                 samplers: Sequence[str] = ("paper",), n: int = 200, seed: int = 0, batch_size: int = 256,
                 final: str = "sample", progress: bool = False) -> dict[str, Any]:
    """Vocabulary scores of `n` model samples per (sampler, step count), of `n` held-out windows (ceiling) and of
    `n` unigram and bigram samples (floors), all of the windows' length; the vocabulary is the training text's.

    Returns {"vocabulary_size", "n", "seq_len", "reference": {"held-out text", "unigram", "bigram"},
    "model": {sampler: {steps: score dict + "examples" (3 decoded samples) + "wall_seconds"}}}.
    """
    import time

    from tqdm import tqdm

    from bfn.data.text import decode

    length = int(test_windows.shape[1])
    vocab = vocabulary(decode(train_ids))
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(test_windows.shape[0], generator=gen)[:n]
    reference = {"held-out text": score_samples(test_windows[pick], vocab),
                 "unigram": score_samples(ngram_samples(train_ids, n, length, 1, seed=seed), vocab),
                 "bigram": score_samples(ngram_samples(train_ids, n, length, 2, seed=seed), vocab)}
    device = next(model.parameters()).device
    results: dict[str, dict[str, Any]] = {}
    total = len(samplers) * len(steps) * math.ceil(n / batch_size)
    with tqdm(total=total, desc="text samples", disable=not progress, dynamic_ncols=True) as bar:
        for sampler in samplers:
            results[sampler] = {}
            for s in steps:
                g = torch.Generator(device=device).manual_seed(seed)
                t0 = time.perf_counter()
                chunks = []
                for start in range(0, n, batch_size):
                    m = min(batch_size, n - start)
                    chunks.append(model.sample(m, int(s), sampler=sampler, generator=g, final=final).cpu())
                    bar.update(1)
                x = torch.cat(chunks)
                res = score_samples(x, vocab)
                res["wall_seconds"] = time.perf_counter() - t0
                res["examples"] = decode_batch(x[:3])
                results[sampler][str(s)] = res
    return {"vocabulary_size": len(vocab), "n": n, "seq_len": length, "final": final, "seed": seed,
            "reference": reference, "model": results}


def text_quality_table(result: dict[str, Any]) -> str:
    """Vocabulary scores as a Markdown table: rows = samplers and references, columns = step counts."""
    def cell(r: dict[str, Any]) -> str:
        return f"{100 * r['score']:.1f} ± {100 * r['score_se']:.1f}"

    steps = sorted({int(s) for per in result["model"].values() for s in per})
    lines = ["| words in the training vocabulary (%) | " + " | ".join(f"{s} steps" for s in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for sampler, per in result["model"].items():
        lines.append(f"| {sampler} | " + " | ".join(cell(per[str(s)]) if str(s) in per else "" for s in steps)
                     + " |")
    for name, r in result["reference"].items():
        lines.append(f"| {name} | {cell(r)} |" + " |" * (len(steps) - 1))
    return "\n".join(lines)
