"""`bfn eval --protocol paper`: the paper's bound per benchmark, its unit, and a one-line refusal elsewhere."""

import json
import subprocess
import sys

import pytest
import torch

from bfn.config import load_config, to_yaml
from bfn.data import load_dataset
from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.evaluation.protocol import CIFAR10, MNIST, TEXT8, headline, paper_protocol
from bfn.models import build_model, save_pretrained
from bfn.utils.io import atomic_write_text


def test_each_benchmark_gets_the_official_recipe():
    assert paper_protocol(DataSpec("discrete", (1, 28, 28), num_classes=2, name="mnist-binarized")) is MNIST
    assert paper_protocol(DataSpec("discretized", (3, 32, 32), num_bins=256, name="cifar10")) is CIFAR10
    assert paper_protocol(DataSpec("discrete", (256,), num_classes=27, name="text8")) is TEXT8
    assert (MNIST.steps, MNIST.unit, CIFAR10.steps, CIFAR10.unit, TEXT8.steps, TEXT8.unit) == (
        784, "nats/image", 10, "bits/dim", "inf", "bits/char")
    with pytest.raises(ConfigError, match="no evaluation protocol") as err:
        paper_protocol(DataSpec("continuous", (1,), name="mixture-1d"))
    assert "\n" not in str(err.value)


def test_headline_reads_the_unit_of_the_protocol():
    result = {"n_examples": 10, "repeats": 2, "results": {"10": {"bound": "L^10 + L^r", "nats": 5000.0,
                                                                  "nats_se": 10.0, "bits_per_dim": 2.35,
                                                                  "bits_per_dim_se": 0.005}}}
    line = headline(CIFAR10, result)
    assert "2.35 ± 0.005 bits/dim" in line and "2.66" in line


def test_protocol_paper_from_the_command_line(tmp_path):
    cfg = load_config("mnist-discrete")
    cfg.model.network.name, cfg.model.network.kwargs, cfg.model.layout = "mlp", {"hidden": 16, "depth": 1}, "flat"
    spec = load_dataset(cfg.data.name, "test")[1]
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_pretrained(build_model(cfg.model, spec), run, extra={"step": 0})
    atomic_write_text(run / "config.yaml", to_yaml(cfg))
    proc = subprocess.run([sys.executable, "-m", "bfn", "eval", str(run), "--protocol", "paper", "--repeats", "1",
                           "--limit", "8", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "paper protocol (binarized MNIST): L^784 + L^r =" in proc.stdout and "77.87 nats/image" in proc.stdout
    saved = json.loads((run / "eval.json").read_text())["nll"]
    assert list(saved["results"]) == ["784"] and saved["protocol"]["unit"] == "nats/image"
    proc = subprocess.run([sys.executable, "-m", "bfn", "eval", str(run), "--protocol", "paper", "--steps", "10"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "drop --steps" in proc.stderr
