"""The paper's recipes (official BFN configs) as presets: their settings, and each one's whole pipeline (load the
real dataset reader on small files the test writes, train a step, sample, evaluate) at a tiny network size."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import bfn.data.download as download
from bfn.config import load_config
from bfn.data import load_dataset
from bfn.data.common import holdout_split
from bfn.models import from_pretrained
from bfn.training import train
from bfn.training.trainer import param_groups

TINY = {
    "mnist-discrete-paper": ["model.network.kwargs.model_channels=32", "model.network.kwargs.channel_mult=[1,2]",
                             "model.network.kwargs.num_res_blocks=1", "model.network.kwargs.unet_out_channels=32"],
    "cifar10-discretized-256": ["model.network.kwargs.embedding_dim=32", "model.network.kwargs.n_blocks=1"],
    "cifar10-discretized-16": ["model.network.kwargs.embedding_dim=32", "model.network.kwargs.n_blocks=1"],
    "cifar10-continuous-256": ["model.network.kwargs.embedding_dim=32", "model.network.kwargs.n_blocks=1"],
    "cifar10-continuous-16": ["model.network.kwargs.embedding_dim=32", "model.network.kwargs.n_blocks=1"],
    "text8-discrete": ["model.network.kwargs.n_layer=1", "model.network.kwargs.n_embd=48"],
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request, timeout=None):  # noqa: ANN001, ANN202
        raise OSError("network disabled in tests")

    monkeypatch.setattr(download, "urlopen", refuse)


def write_idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def write_data(root: Path, rng: np.random.Generator) -> None:
    """Small files in the real formats: MNIST IDX, CIFAR-10 binary batches, the text8 file."""
    (root / "mnist").mkdir(parents=True)
    for prefix, n in (("train", 100), ("t10k", 10)):
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    cifar = root / "cifar10" / "cifar-10-batches-bin"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([rng.integers(0, 10, (20, 1)), rng.integers(0, 256, (20, 3072))], axis=1)
        (cifar / name).write_bytes(records.astype(np.uint8).tobytes())
    (root / "text8").mkdir()
    letters = np.frombuffer(b" abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    (root / "text8" / "text8").write_bytes(letters[rng.integers(0, 27, 6000)].tobytes())


@pytest.mark.parametrize("preset", list(TINY))
def test_paper_presets_train_sample_and_evaluate(tmp_path: Path, preset: str) -> None:
    write_data(tmp_path / "data", np.random.default_rng(0))
    overrides = [*TINY[preset], f"data.root={tmp_path / 'data'}", "train.steps=1", "train.batch_size=4",
                 "train.threads=1", "train.sample_every=0", "train.checkpoint_every=1"]
    cfg = load_config(preset, overrides)
    result = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert result.step == 1 and math.isfinite(result.final_loss)
    model = from_pretrained(tmp_path / "run")
    test, spec = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)
    x = torch.stack([test[i][0] for i in range(2)])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        nll = model.nll(x, "inf", generator=gen)
        samples = model.sample(2, 2, generator=gen)
    assert torch.isfinite(nll).all() and (nll > 0).all()
    assert samples.shape == (2, *spec.shape)


def test_presets_hold_the_official_settings() -> None:
    """The numbers of the official configs (nnaisense/bayesian-flow-networks configs/*.yaml)."""
    mnist = load_config("mnist-discrete-paper")
    assert (mnist.model.network.name, mnist.model.flow.beta_1, mnist.train.batch_size, mnist.train.lr,
            mnist.train.betas, mnist.train.weight_decay) == ("official-mnist-unet", 9.0, 512, 1e-4, [0.9, 0.98], 0.01)
    for bins, sigma_sq in ((256, 1e-6), (16, 1e-3)):
        for kind in ("discretized", "continuous"):
            cfg = load_config(f"cifar10-{kind}-{bins}")
            assert cfg.model.flow.kind == kind and cfg.data.options["bins"] == bins
            assert cfg.model.flow.sigma_1**2 == pytest.approx(sigma_sq, rel=1e-12)
            assert (cfg.train.batch_size, cfg.train.lr, cfg.train.betas, cfg.train.weight_decay) == (
                32, 2e-4, [0.9, 0.99], 0.01)
            assert cfg.model.flow.official
    assert load_config("cifar10-continuous-16").model.flow.recon_std == pytest.approx(0.7 * 1e-3**0.5)
    text8 = load_config("text8-discrete")
    assert (text8.model.flow.beta_1, text8.train.batch_size, text8.train.steps, text8.data.options) == (
        0.75**2, 416, 10_000_000, {"seq_len": 256, "stride": 1})
    assert not text8.train.decay_vectors
    for name in TINY:
        cfg = load_config(name)
        assert (cfg.train.ema_decay, cfg.train.ema_warmup, cfg.train.grad_clip, cfg.train.warmup_steps) == (
            0.9999, False, 5.0, 0)


def test_holdout_is_the_official_random_split() -> None:
    """Checked against torch's own random_split with the official seed (what the official data.py calls)."""
    for n in (50_000, 60_000, 101):
        parts = torch.utils.data.random_split(range(n), [0.99, 0.01],
                                              generator=torch.Generator().manual_seed(2147483647))
        assert list(holdout_split(n, 0.01, "train")) == list(parts[0].indices)
        assert list(holdout_split(n, 0.01, "valid")) == list(parts[1].indices)


def test_optimizer_groups_and_plain_ema() -> None:
    from bfn.training.ema import ema_model

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decayed, plain = param_groups(net, 0.01, decay_vectors=False)
    assert [p.shape for p in decayed["params"]] == [(4, 3)] and decayed["weight_decay"] == 0.01
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    ema = ema_model(net, 0.9, warmup=False)
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update_parameters(net)  # AveragedModel copies on its first call ...
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update_parameters(net)  # ... then ema <- 0.9 ema + 0.1 theta, with no warm-up
    torch.testing.assert_close(ema.module[0].weight, 0.9 * (before + 1) + 0.1 * (before + 2))


@pytest.mark.slow
def test_paper_benchmark_dry_run(tmp_path: Path, capsys) -> None:
    """`python -m benchmarks.paper --dry-run`: every section's code path on tiny networks and synthetic data."""
    from benchmarks import paper

    assert paper.main(["--dry-run", "--presets", "text8-discrete", "--samplers", "paper",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "paper.json").read_text())
    assert set(result["train"]) == {"text8-discrete"} and result["train"]["text8-discrete"]["seconds_per_step"] > 0
    assert {r["unit"] for r in result["nll"].values()} == {"nats/image", "bits/dim", "bits/char"}
    assert [c["steps"] for c in result["samplers"]["cifar10"]] == [2, 3]
    assert "spelling" in result["samplers"]["text8"][0]
    assert "FID not computed in --dry-run" in out and "Skipped:" in out
