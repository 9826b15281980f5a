"""`bfn compare`: the report renders from two tiny run directories (a BFN and a DDPM) and degrades gracefully."""

import argparse
import json
import sys

import pytest
import torch

from bfn.config import load_config, to_yaml
from bfn.data import load_dataset
from bfn.evaluation.classifier import MnistCNN
from bfn.evaluation.compare import compare_runs
from bfn.models import build_model, save_pretrained
from bfn.utils.io import atomic_write_text


def make_run(path, preset, *, loss_per_dim, ddpm_timesteps=20):
    """A run directory (config.yaml, untrained weights of a tiny MLP, a fake metrics.jsonl), without training."""
    cfg = load_config(preset)
    cfg.model.network.name = "mlp"
    cfg.model.network.kwargs = {"hidden": 16, "depth": 1}
    cfg.model.layout = "flat"
    cfg.model.ddpm.timesteps = ddpm_timesteps
    spec = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)[1]
    torch.manual_seed(0)
    model = build_model(cfg.model, spec)
    save_pretrained(model, path, extra={"step": 5})
    atomic_write_text(path / "config.yaml", to_yaml(cfg))
    lines = [{"step": s, "loss": loss_per_dim * 784 / s, "loss_per_dim": loss_per_dim / s, "grad_norm": 1.0,
              "lr": 1e-3, "images_per_s": 100.0 + s, "elapsed_s": 0.64 * s, "world_size": 1} for s in (1, 3, 5)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root / "bfn", "mnist-discrete", loss_per_dim=0.7),
            make_run(root / "ddpm", "mnist-ddpm", loss_per_dim=1.0)]


def test_report_renders_from_two_runs(runs, tmp_path):
    out = tmp_path / "cmp"
    result = compare_runs(runs, out, steps=[2, 4, 30], n=6, nll_repeats=2, limit=12, batch_size=6,
                          evolution_steps=10, classifier=MnistCNN().eval())
    report = (out / "report.md").read_text()
    print(report)
    for needle in ("## Runs", "## Test-set likelihood", "## Sampling: time and quality", "![Samples](samples.png)",
                   "![Evolution](evolution.png)", "![Training curves](curves.png)", "VLB (T=20) (bound)",
                   "L^inf + L^r", "n/a: at most 20 steps"):
        assert needle in report, needle
    for name in ("samples.png", "evolution.png", "curves.png"):
        assert (out / name).stat().st_size > 1000
    saved = json.loads((out / "compare.json").read_text())
    bfn, ddpm = saved["runs"]
    assert (bfn["type"], ddpm["type"]) == ("bfn", "ddpm")
    assert bfn["parameters"] > 0 and bfn["sampler"] == "paper" and ddpm["sampler"] == "ancestral"
    assert bfn["train"]["steps"] == 5 and bfn["train"]["wall_seconds"] == pytest.approx(3.2)
    assert bfn["train"]["images_per_s"] == pytest.approx(5 * 64 / 3.2)
    assert ddpm["train"]["objective"].startswith("L_simple")
    for entry in (bfn, ddpm):
        res = entry["nll"]["results"]["inf"]
        assert entry["nll"]["n_examples"] == 12 and res["nats"] > 0 and res["nats_se"] > 0
        assert res["bits_per_dim"] == pytest.approx(res["nats"] / 784 / 0.6931471805599453)
        for s in ("2", "4"):
            assert entry["sampling"][s]["seconds_per_image"] > 0
            assert set(entry["sampling"][s]["quality"]) >= {"fid", "kid", "precision", "recall"}
    assert "note" in ddpm["sampling"]["30"] and "quality" in bfn["sampling"]["30"]
    assert not saved["notes"] and result["report"] == str(out / "report.md")


def test_missing_pieces_become_notes(runs, tmp_path, monkeypatch):
    """No quality module, no NLL module: the report still renders, with notes instead of the missing columns."""
    monkeypatch.setitem(sys.modules, "bfn.evaluation.quality", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "bfn.evaluation.nll", None)
    (runs[0] / "metrics.jsonl").rename(runs[0] / "metrics.bak")
    try:
        result = compare_runs(runs, tmp_path, steps=[2], n=4, batch_size=4, evolution_steps=3, names=["A", "B"])
    finally:
        (runs[0] / "metrics.bak").rename(runs[0] / "metrics.jsonl")
    report = (tmp_path / "report.md").read_text()
    notes = " ".join(result["notes"])
    assert "A: NLL: skipped, module not available" in notes and "B: NLL" in notes
    assert "quality reference: skipped" in notes
    assert "skipped (see notes)" in report and "![Samples](samples.png)" in report
    assert result["runs"][0]["train"] == {"note": "no metrics.jsonl"}
    assert result["runs"][0]["sampling"]["2"]["seconds_per_image"] > 0


def test_command_line(runs, tmp_path, capsys):
    from bfn.commands import compare

    parser = argparse.ArgumentParser()
    compare.register(parser.add_subparsers())
    out = tmp_path / "cli"
    args = parser.parse_args(["compare", str(runs[0]), str(runs[1]), "--steps", "2", "--n", "4", "--limit", "8",
                              "--no-quality", "--evolution-steps", "2", "--out", str(out), "--no-progress",
                              "--device", "cpu", "--nll-steps", "inf,5"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    saved = json.loads((out / "compare.json").read_text())
    assert set(saved["runs"][1]["nll"]["results"]) == {"inf", "5"}
    assert "VLB (5-step respaced)" in (out / "report.md").read_text()
    from bfn.errors import ConfigError

    bad = parser.parse_args(["compare", str(runs[0]), "--steps", "0"])
    with pytest.raises(ConfigError, match="--steps"):
        bad.func(bad)


def test_runs_on_different_data_are_refused_in_one_line(runs, tmp_path):
    from bfn.errors import ConfigError

    other = tmp_path / "other"
    make_run(other, "mnist-discretized", loss_per_dim=0.5)
    with pytest.raises(ConfigError, match="different data") as err:
        compare_runs([runs[0], other], tmp_path / "cmp", n=2)
    assert "\n" not in str(err.value)
