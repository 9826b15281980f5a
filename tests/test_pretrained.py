"""`Model.from_pretrained` / `save_pretrained` / `push_to_hub`: a local round trip, a Hub id served from a cache
folder the test writes (HF_HUB_OFFLINE=1, no network), the one-line errors, and what the model card holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from bfn.config import load_config
from bfn.data.spec import DataSpec
from bfn.errors import CheckpointError
from bfn.models import BFN, build_model
from bfn.models.ddpm import DDPM

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_bfn() -> BFN:
    cfg = load_config("mixture-1d", ["model.network.kwargs.hidden=16", "model.network.kwargs.depth=2"])
    torch.manual_seed(0)
    model = build_model(cfg.model, DataSpec(kind="continuous", shape=(1,)))
    with torch.no_grad():  # non-zero weights everywhere, so that a load that drops a tensor shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def draws(model: BFN) -> torch.Tensor:
    return model.sample(8, 5, generator=torch.Generator().manual_seed(3))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = tiny_bfn()
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    loaded = BFN.from_pretrained(tmp_path / "m")
    assert type(loaded) is BFN and not loaded.training
    ref = model.state_dict()
    assert set(loaded.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    assert torch.equal(draws(loaded), draws(model.eval()))


def test_the_model_card_holds_the_config_the_numbers_and_the_grid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    nll = {"nll": {"n_examples": 100, "repeats": 2, "results": {"inf": {"bound": "L^inf + L^r", "nats": 81.25,
                                                                          "bits_per_dim": 0.1495}}}}
    (run / "eval.json").write_text(json.dumps(nll))
    Image.new("L", (8, 8)).save(run / "samples.png")
    model = tiny_bfn()
    model.save_pretrained(tmp_path / "out", source=run)
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: bfn\n")
    assert "81.250 nats/example, 0.1495 bits/dim" in card and "![samples](samples.png)" in card
    assert (tmp_path / "out" / "samples.png").is_file()
    assert json.dumps(model.config, indent=2) in card


def test_loading_as_the_wrong_family_is_a_one_line_error(tmp_path: Path) -> None:
    tiny_bfn().save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a BFN model, not a DDPM") as err:
        DDPM.from_pretrained(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_the_safety_checks_still_apply(tmp_path: Path) -> None:
    tiny_bfn().save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        BFN.from_pretrained(tmp_path / "m")


def write_hub_cache(cache: Path, repo_id: str, files: Path) -> Path:
    """The folder layout huggingface_hub's cache uses: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(files, repo / "snapshots" / COMMIT)
    return repo


def run_offline(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home"),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_a_hub_id_loads_offline_from_the_cache(tmp_path: Path) -> None:
    model = tiny_bfn()
    model.save_pretrained(tmp_path / "m")
    write_hub_cache(tmp_path / "cache", "someone/tiny-bfn", tmp_path / "m")
    torch.save(draws(model.eval()), tmp_path / "expected.pt")
    code = ("import torch; from bfn.models import BFN; m = BFN.from_pretrained('someone/tiny-bfn'); "
            "x = m.sample(8, 5, generator=torch.Generator().manual_seed(3)); "
            f"print(torch.equal(x, torch.load({str(tmp_path / 'expected.pt')!r})))")
    proc = run_offline(code, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True"


@pytest.mark.slow
def test_a_hub_id_neither_cached_nor_reachable_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    code = ("from bfn.models import BFN\nfrom bfn.errors import CheckpointError\n"
            "try:\n    BFN.from_pretrained('someone/absent')\nexcept CheckpointError as e:\n    print(e)")
    proc = run_offline(code, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip()
    assert "\n" not in line and "someone/absent is not a local folder nor in the Hugging Face cache" in line
    assert "offline mode is on" in line


def test_push_to_hub_uploads_weights_config_and_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    calls: dict[str, object] = {}

    class Repo:
        repo_id = "someone/tiny-bfn"

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = repo_id
        return Repo()

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        calls["card"] = (Path(folder_path) / "README.md").read_text()
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/{COMMIT}"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = tiny_bfn().push_to_hub("someone/tiny-bfn")
    assert url.endswith(COMMIT) and calls["create"] == "someone/tiny-bfn"
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    assert 'BFN.from_pretrained("someone/tiny-bfn")' in str(calls["card"])


def test_not_a_folder_nor_an_id(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a folder; give a folder written by save_pretrained"):
        BFN.from_pretrained(tmp_path / "nothing.safetensors")

