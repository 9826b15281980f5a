"""`bfn import CHECKPOINT`: turn a published BFN checkpoint of the official code (nnaisense/bayesian-flow-networks)
into a normal bfn run folder (config.yaml, config.json, model.safetensors, IMPORTED.json) that `bfn sample`,
`bfn eval`, `bfn show` and `bfn compare` use unchanged. The file is read with torch.load(weights_only=True) only."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import CheckpointError

HUB_SCHEME = "hf://"
EPILOG = """examples:
  bfn import hf://rupspace/pretrained-BFNs/mnist_ema.pt           # download (online) and convert
  bfn import mnist_ema.pt --out runs/mnist-official                 # a file you downloaded
  bfn import ema_model.pt --preset cifar10-discretized-16           # CIFAR-10: name the bins if the file name does not
  bfn sample runs/mnist-official --steps 100 --final mode           # the official sampler's last step
"""


def register(subparsers: Any) -> None:
    """Add the `import` subcommand."""
    p = subparsers.add_parser("import", help="convert an official BFN checkpoint (*_ema.pt) into a bfn run folder",
                              description=__doc__.splitlines()[0], epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", help="path of an official *_ema.pt / ema_model.pt, or hf://OWNER/REPO/FILE")
    p.add_argument("--out", default=None, help="run folder to write (default: runs/<preset>-official)")
    p.add_argument("--preset", default=None,
                   help="paper preset to import into (default: recognised from the weights and the file name)")
    p.add_argument("--force", action="store_true", help="overwrite the weights in an existing run folder")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


def hub_download(ref: str) -> Path:
    """Local path of hf://OWNER/REPO/FILE, downloaded into the Hugging Face cache (or found there offline)."""
    parts = ref[len(HUB_SCHEME):].split("/")
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(f"{ref} is not a Hub reference of the form hf://OWNER/REPO/FILE, e.g. "
                              "hf://rupspace/pretrained-BFNs/mnist_ema.pt")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    url = f"https://huggingface.co/{repo}/resolve/main/{filename}"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(f"huggingface_hub is not installed; download {url} by hand and run "
                              f"`bfn import {Path(filename).name}`") from None
    offline = (f"offline: download {url} on a connected machine, put it here and run "
               f"`bfn import {Path(filename).name}`")
    try:  # already in the Hugging Face cache?
        return Path(hf_hub_download(repo_id=repo, filename=filename, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not _reachable("huggingface.co"):
        raise CheckpointError(f"cannot download {ref}, huggingface.co is not reachable; {offline}")
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as err:  # unknown repo or file, HTTP errors: all one line
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot download {ref} ({reason}); {offline}") from None


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:443 opens within `timeout` seconds (no retries, no waiting offline)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state dict in an official checkpoint file, unpickled with weights_only=True (tensors and containers
    only, never code)."""
    import pickle

    import torch

    if not path.is_file():
        raise CheckpointError(f"{path} not found; give the path of an official *_ema.pt file or hf://OWNER/REPO/FILE")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:150] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} cannot be read as a weights-only PyTorch checkpoint ({first}); give the "
                              "*_ema.pt file the official code saves") from None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_checkpoint(source: str, out: str | os.PathLike | None = None, *, preset: str | None = None,
                      force: bool = False) -> tuple[Path, Any]:
    """Convert `source` (a path or hf://OWNER/REPO/FILE) into a run folder; returns (folder, the Imported)."""
    from dataclasses import replace

    from bfn.config import to_yaml
    from bfn.models.hub import CONFIG_NAME, WEIGHTS_NAME, save_pretrained
    from bfn.models.official import convert
    from bfn.utils.io import atomic_write_text

    path = hub_download(source) if source.startswith(HUB_SCHEME) else Path(source)
    result = convert(read_checkpoint(path), preset=preset, filename=path.name)
    folder = Path(out) if out is not None else Path("runs") / f"{result.preset}-official"
    if (folder / WEIGHTS_NAME).exists() and not force:
        raise CheckpointError(f"{folder} already holds {WEIGHTS_NAME}; choose another --out or add --force")
    if (folder / "state.pt").exists():
        raise CheckpointError(f"{folder} holds a training run (state.pt); import into an empty folder")
    cfg = replace(result.config, name=folder.name,
                  description=f"{result.config.description}; weights imported from {path.name}")
    result.config = cfg
    save_pretrained(result.model, folder, extra={"imported_from": source})
    atomic_write_text(folder / "config.yaml", to_yaml(cfg))
    note = {"source": source, "file": str(path), "sha256": sha256(path), "format": "official BFN state dict",
            "network": cfg.model.network.name, "network_kwargs": dict(cfg.model.network.kwargs),
            "preset": result.preset, "parameters": result.parameters,
            "key_map": "net.<name> -> network.<name>", "dropped": result.dropped, "config": CONFIG_NAME,
            "weights": WEIGHTS_NAME,
            "differences": "bfn samples end with a draw from p_O (the paper's algorithms); the official sampler "
                           "returns the mode: use --final mode to match it"}
    atomic_write_text(folder / "IMPORTED.json", json.dumps(note, indent=2) + "\n")
    return folder, result


def run(args: argparse.Namespace) -> int:
    folder, result = import_checkpoint(args.checkpoint, args.out, preset=args.preset, force=args.force)
    data = result.model.config["data"]
    print(f"imported {args.checkpoint}: official {result.kind} network -> {result.config.model.network.name} "
          f"({result.parameters:,} parameters, every key and shape checked), preset {result.preset}, data "
          f"{data['kind']} {tuple(data['shape'])}")
    print(f"wrote {folder}/ (config.yaml, config.json, model.safetensors, IMPORTED.json); try: "
          f"bfn sample {folder} --steps 100")
    return 0
