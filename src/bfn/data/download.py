"""Cached, checksummed downloads with an offline error that says where to put the files by hand."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import URLError
from urllib.request import Request, urlopen

from bfn.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its name in the cache folder, mirror URLs (tried in order) and a checksum."""

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    size: int | None = None  # bytes; a check for files without a published checksum


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, remote: RemoteFile) -> str | None:
    """None when `path` matches the checksum/size of `remote`, else what is wrong."""
    if remote.size is not None and path.stat().st_size != remote.size:
        return f"has {path.stat().st_size} bytes, expected {remote.size}"
    if remote.md5 is not None and (got := md5sum(path)) != remote.md5:
        return f"has md5 {got}, expected {remote.md5}"
    return None


def fetch(remote: RemoteFile, folder: Path, *, progress: bool = True, hint: str = "") -> Path:
    """Download `remote` into `folder`: mirrors in turn, each to a temp file that is checked, then renamed
    into place (so a partial or corrupt download never sits under the final name); DataError when all fail."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.name
    errors = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _download(url, out, dest.name, progress)
            problem = verify(tmp, remote)
            if problem is None:
                os.replace(tmp, dest)
                return dest
            errors.append(f"{url} (the download {problem})")
        except (URLError, OSError) as err:
            errors.append(f"{url} ({getattr(err, 'reason', err)})")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {remote.name}: {'; '.join(errors)}; download it by hand from "
                    f"{remote.urls[0]} and place it in {folder}{hint}")


def _download(url: str, out: BinaryIO, name: str, progress: bool) -> None:
    with urlopen(Request(url, headers={"User-Agent": "bfn"}), timeout=TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = _bar(name, total) if progress else None
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            if bar is not None:
                bar.update(len(block))
        if bar is not None:
            bar.close()


def _bar(name: str, total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", leave=False)


def ensure(remotes: list[RemoteFile], folder: Path, *, download: bool | None, what: str,
           found: Callable[[RemoteFile], bool] | None = None, hint: str = "") -> None:
    """Make sure every remote file is in `folder` (or, per `found`, an equivalent such as its unzipped form).

    download=None fetches only missing files; True also re-checks the checksums of present downloads and
    re-fetches mismatches; False never touches the network (missing files raise a DataError naming the
    folder).
    """
    found = found or (lambda r: (folder / r.name).exists())
    missing = [r for r in remotes if not found(r)]
    if download:
        for r in remotes:
            path = folder / r.name
            if r not in missing and path.exists() and verify(path, r) is not None:
                path.unlink()
                missing.append(r)
    if not missing:
        return
    if download is False:
        names = ", ".join(r.name for r in missing)
        raise DataError(f"{what}: {names} not found in {folder}; place the files there by hand "
                        f"(from {missing[0].urls[0]}){hint}, or allow the download (download=True)")
    for i, r in enumerate(missing):
        more = [m.name for m in missing[i + 1:]]
        try:
            fetch(r, folder, hint=hint)
        except DataError as err:
            also = f" (also needed there: {', '.join(more)})" if more else ""
            raise DataError(f"{err}{also}") from None
