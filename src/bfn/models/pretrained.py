"""Models on disk and on the Hugging Face Hub, in huggingface_hub's `ModelHubMixin` conventions: a folder (or Hub
repository) holding `config.json`, `model.safetensors` and a model card `README.md`.

`from_pretrained` takes a local folder or a Hub repository id; the Hub is reached through `huggingface_hub`'s own
cache (HF_HOME / HF_HUB_CACHE), so a model downloaded once loads offline, and HF_HUB_OFFLINE=1 never touches the
network. The safety checks of `bfn.models.hub.from_pretrained` (shapes on the meta device, SHA-256, no NaN) apply to
every load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bfn.models.base import GenerativeModel

from bfn.errors import CheckpointError

CARD_NAME = "README.md"
GRID_NAME = "samples.png"
EVAL_FILES = ("eval.json", "eval_quick.json", "eval_toy.json")
HUB_FILES = ["config.json", "model.safetensors", CARD_NAME, GRID_NAME]


def resolve_pretrained(name_or_path: str | os.PathLike[str], *, revision: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None, force_download: bool = False,
                       local_files_only: bool = False, token: str | bool | None = None) -> Path:
    """The local folder of a model: `name_or_path` itself when it is a folder, else the snapshot of the Hub
    repository `name_or_path` ("owner/name") in the Hugging Face cache, downloaded when missing and reachable.

    When the Hub cannot be reached, the cached copy is used and one line on stderr says so; when there is none,
    a one-line CheckpointError says what to do."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or path.suffix:
        raise CheckpointError(f"{name} is not a folder; give a folder written by save_pretrained / `bfn train` or a "
                              "Hugging Face Hub id like owner/name")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = bool(local_files_only or constants.HF_HUB_OFFLINE)
    try:  # huggingface_hub itself falls back to its cache when the Hub cannot be reached
        return Path(snapshot_download(name, revision=revision, cache_dir=None if cache_dir is None else Path(cache_dir),
                                      token=token,
                                      force_download=force_download, local_files_only=offline,
                                      allow_patterns=HUB_FILES, library_name="bfn"))
    except HFValidationError:
        raise CheckpointError(f"{name!r} is neither a folder nor a valid Hugging Face Hub id (owner/name)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise CheckpointError(f"{name} (revision {revision or 'main'}) was not found on the Hugging Face Hub "
                              f"({type(err).__name__}); check the id, or log in for a private repository") from None
    except LocalEntryNotFoundError:
        why = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else \
            "the Hub could not be reached"
        raise CheckpointError(_neither(name, cache_dir, why)) from None
    except (HfHubHTTPError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:150]
        raise CheckpointError(f"could not download {name} from the Hugging Face Hub ({first}); retry, or give a "
                              "local folder") from None


def _neither(name: str, cache_dir: Any, why: str) -> str:
    from huggingface_hub import constants

    cache = cache_dir or constants.HF_HUB_CACHE
    return (f"{name} is not a local folder nor in the Hugging Face cache ({cache}), and {why}; download it once "
            "where the Hub is reachable (the cache is then used offline), or give a local folder")


def model_card(config: dict[str, Any], folder: Path, *, repo_id: str | None = None) -> str:
    """The model card (README.md) of a saved model: Hub metadata, how to load it, the measured numbers found in
    `folder` (eval.json & co.), the sample grid when `folder` holds samples.png, and the config."""
    data = config.get("data", {})
    model = config.get("model", {})
    lines = ["---", "library_name: bfn", "tags:", "- bayesian-flow-networks", "- generative-model",
             f"- {data.get('kind', 'data')}", "---", "",
             f"# {repo_id or folder.name}", "",
             f"A {str(model.get('type', 'bfn')).upper()} model for {data.get('kind')} data of shape "
             f"{tuple(data.get('shape', ()))} (Graves et al. 2023, arXiv:2308.07037), trained with "
             f"[bfn](https://pypi.org/project/bfn/){'' if config.get('step') is None else ' for '}"
             f"{'' if config.get('step') is None else str(config['step']) + ' steps'}.", "",
             "```python", "from bfn.models import BFN", "",
             f'model = BFN.from_pretrained("{repo_id or folder}")', "x = model.sample(16, 100)", "```", ""]
    measured = _measured(folder)
    if measured:
        lines += ["## Measured", "", "| quantity | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in measured]
        lines.append("")
    if (folder / GRID_NAME).is_file():
        lines += ["## Samples", "", f"![samples]({GRID_NAME})", ""]
    lines += ["## Config", "", "```json", json.dumps(config, indent=2), "```", ""]
    return "\n".join(lines)


def _measured(folder: Path) -> list[tuple[str, str]]:
    """(name, value) rows from the evaluation files of a run folder: NLL bounds and sample-quality numbers."""
    rows: list[tuple[str, str]] = []
    for name in EVAL_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        nll = data.get("nll", data) if isinstance(data, dict) else {}
        for res in (nll.get("results") or {}).values():
            rows.append((f"test NLL, {res.get('bound')} ({nll.get('n_examples')} examples, {nll.get('repeats')} "
                         "repeat(s))", f"{res.get('nats', float('nan')):.3f} nats/example, "
                                       f"{res.get('bits_per_dim', float('nan')):.4f} bits/dim"))
        quality = data.get("quality") if isinstance(data, dict) else None
        if isinstance(quality, dict):
            for key in ("fid", "kid", "precision", "recall"):
                if isinstance(quality.get(key), int | float):
                    rows.append((f"{key.upper() if key in ('fid', 'kid') else key} ({quality.get('sampling_steps')} "
                                 "sampling steps)", f"{quality[key]:.4f}"))
        if name == "eval_toy.json" and isinstance(data.get("wasserstein_1"), int | float):
            rows.append(("W1 to fresh data", f"{data['wasserstein_1']:.4f}"))
    return rows


def save_with_card(model: GenerativeModel, directory: str | os.PathLike[str], *,
                   source: str | os.PathLike[str] | None = None, repo_id: str | None = None) -> Path:
    """`bfn.models.hub.save_pretrained` plus a model card; `source` (a run folder) lends its evaluation files and
    sample grid to the card (they are copied)."""
    from bfn.models.hub import save_pretrained
    from bfn.utils.io import atomic_write_text

    directory = Path(directory)
    save_pretrained(model, directory)
    if source is not None and Path(source).resolve() != directory.resolve():
        for name in (*EVAL_FILES, GRID_NAME):
            if (Path(source) / name).is_file():
                shutil.copyfile(Path(source) / name, directory / name)
    atomic_write_text(directory / CARD_NAME, model_card(dict(model.config), directory, repo_id=repo_id))
    return directory


def push_folder(directory: Path, repo_id: str, *, commit_message: str, private: bool | None, token: str | None,
                branch: str | None, create_pr: bool) -> str:
    """Create the Hub repository if needed and upload the model files of `directory`; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo.repo_id, folder_path=directory, commit_message=commit_message,
                             revision=branch, create_pr=create_pr, allow_patterns=HUB_FILES + list(EVAL_FILES))
    return str(getattr(info, "commit_url", info))


def push_model(model: GenerativeModel, repo_id: str, *, source: str | os.PathLike[str] | None = None,
               commit_message: str = "Upload bfn model", private: bool | None = None, token: str | None = None,
               branch: str | None = None, create_pr: bool = False) -> str:
    """Save `model` with its card into a temporary folder and upload it to the Hub repository `repo_id`."""
    with tempfile.TemporaryDirectory() as tmp:
        save_with_card(model, tmp, source=source, repo_id=repo_id)
        return push_folder(Path(tmp), repo_id, commit_message=commit_message, private=private, token=token,
                           branch=branch, create_pr=create_pr)
