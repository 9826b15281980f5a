"""Sample-quality metrics: bfn's MNIST classifier, FID/KID wiring, k-NN precision/recall, label statistics, CLI."""

import argparse
import json
import math
import time

import pytest
import torch

from bfn.config import load_config, to_yaml
from bfn.data import load_dataset
from bfn.errors import ConfigError, DataError
from bfn.evaluation.classifier import (
    CACHE_NAME,
    MnistCNN,
    _load,
    _save,
    accuracy,
    check_images,
    load_classifier,
    mnist_split,
)
from bfn.evaluation.quality import (
    frechet_distance,
    kernel_distance,
    label_statistics,
    manifold_metrics,
    sample_quality,
)
from bfn.models import build_model, save_pretrained
from bfn.utils.io import atomic_write_text

pytest.importorskip("torchmetrics")


def make_run(path, preset, **model_changes):
    """A run directory (config.yaml + untrained weights) with a tiny MLP, without training."""
    cfg = load_config(preset)
    cfg.model.network.name = "mlp"
    cfg.model.network.kwargs = {"hidden": 16, "depth": 1}
    cfg.model.layout = "flat"
    cfg.sample.steps = 3
    for key, value in model_changes.items():
        setattr(cfg.model, key, value)
    spec = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)[1]
    model = build_model(cfg.model, spec)
    save_pretrained(model, path, extra={"step": 0})
    atomic_write_text(path / "config.yaml", to_yaml(cfg))
    return path


def eval_cli(argv):
    from bfn.commands.eval import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def test_classifier_accuracy_cache_and_fid_of_data_vs_noise(tmp_path, monkeypatch, capsys):
    """Everything that needs the trained classifier, in one test so that it is trained once (about 10 s)."""
    monkeypatch.setenv("BFN_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per pytest-xdist worker: two-thread workers on two cores thrash
    try:
        t0 = time.perf_counter()
        clf = load_classifier()
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    path = tmp_path / "cache" / "classifier" / CACHE_NAME
    assert path.is_file() and "test accuracy" in capsys.readouterr().err
    x_test, y_test = mnist_split("test")
    assert x_test.shape == (1000, 1, 28, 28) and x_test.min() >= 0 and x_test.max() <= 1
    acc = accuracy(clf, x_test, y_test)
    acc_bin = accuracy(clf, torch.bernoulli(x_test, generator=torch.Generator().manual_seed(5)), y_test)
    print(f"classifier: {100 * acc:.1f}% grey, {100 * acc_bin:.1f}% binarized, trained in {seconds:.1f} s")
    assert acc >= 0.97 and acc_bin >= 0.95
    assert clf.info["test_accuracy"] == pytest.approx(acc, abs=1e-4)

    again = load_classifier()  # from the cache: same weights, no training
    assert "test accuracy" not in capsys.readouterr().err
    for (ka, va), (kb, vb) in zip(clf.state_dict().items(), again.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)

    half_a, half_b = x_test[:500], x_test[500:]
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    same = sample_quality(half_b, half_a, classifier=clf)
    far = sample_quality(noise, half_a, classifier=clf)
    print(f"FID test A vs test B: {same['fid']:.2f}; FID test vs uniform noise: {far['fid']:.2f}")
    assert same["fid"] < 0.05 * far["fid"]
    assert same["kid"] < 0.05 * far["kid"]
    assert same["recall"] > 0.8 and far["recall"] < 0.1
    assert same["coverage"] > 0.8 and far["coverage"] < 0.1
    assert same["label_entropy"] > 0.98 * math.log(10) and far["label_entropy"] < 1.0
    assert same["confidence"] > 0.9
    assert sum(same["label_histogram"]) == 500

    # the command line: quality of an (untrained) binarized-MNIST run, against its test split
    run = make_run(tmp_path / "run", "mnist-discrete")
    assert eval_cli([str(run), "--quality", "--n", "40", "--steps", "2", "--limit", "100", "--no-progress",
                     "--device", "cpu"]) == 0
    saved = json.loads((run / "eval.json").read_text())["quality"]
    assert saved["n_samples"] == 40 and saved["n_reference"] == 100 and saved["sampling_steps"] == 2
    assert saved["fid"] > 0 and saved["classifier"]["test_accuracy"] == pytest.approx(acc, abs=1e-4)
    assert "FID" in capsys.readouterr().out


def test_frechet_distance_of_shifted_features_is_the_squared_shift():
    real = torch.randn(400, 6, generator=torch.Generator().manual_seed(0)).double()
    shift = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.0, 0.0]).double()
    assert frechet_distance(real, real + shift) == pytest.approx(float(shift.square().sum()), abs=1e-6)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


def test_kid_is_reproducible_and_near_zero_for_one_distribution():
    g = torch.Generator().manual_seed(1)
    a, b, c = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 2
    k1, k2 = kernel_distance(a, b, subsets=10, subset_size=100, seed=3), kernel_distance(a, b, subsets=10,
                                                                                            subset_size=100, seed=3)
    assert k1 == k2
    assert abs(k1[0]) < 0.1 * kernel_distance(a, c, subsets=10, subset_size=100)[0]


def test_precision_recall_density_coverage_on_known_geometry():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 3, generator=g)
    same = manifold_metrics(real, real.clone(), k=5)
    assert same["precision"] == 1 and same["recall"] == 1 and same["coverage"] == 1
    assert same["density"] == pytest.approx(6 / 5)  # each ball holds its centre and its 5 neighbours
    far = manifold_metrics(real, real + 100, k=5)
    assert far == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}
    collapsed = manifold_metrics(real, real[:1].expand(50, 3) + 1e-3 * torch.randn(50, 3, generator=g), k=5)
    assert collapsed["precision"] == 1 and collapsed["coverage"] < 0.1  # one mode: precise, no coverage
    with pytest.raises(ConfigError):
        manifold_metrics(real[:5], real, k=5)


def test_label_statistics():
    one_class = torch.full((20, 10), -5.0)
    one_class[:, 3] = 5.0
    stats = label_statistics(one_class)
    assert stats["label_entropy"] == 0 and stats["label_histogram"][3] == 20
    assert stats["confidence"] == pytest.approx(math.exp(5) / (math.exp(5) + 9 * math.exp(-5)))
    balanced = torch.eye(10).repeat(3, 1) * 10
    assert label_statistics(balanced)["label_entropy"] == pytest.approx(math.log(10))


def test_sample_quality_output_with_any_classifier():
    clf = MnistCNN().eval()  # untrained: checks the plumbing, not the numbers
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 2, (30, 28, 28), generator=g)  # binary, without a channel dim
    reference = torch.rand(40, 1, 28, 28, generator=g)
    out = sample_quality(samples, reference, classifier=clf, kid_subset_size=20)
    assert {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "confidence", "label_entropy",
            "label_entropy_max", "label_histogram", "reference"} <= set(out)
    assert out["n_samples"] == 30 and out["n_reference"] == 40 and out["feature_dims"] == 128
    assert out["label_entropy_max"] == pytest.approx(math.log(10))
    json.dumps(out)
    assert sample_quality(samples, reference, classifier=clf, kid_subset_size=20) == out  # reproducible


def test_image_checks():
    assert check_images(torch.zeros(2, 28, 28)).shape == (2, 1, 28, 28)
    for bad in (torch.zeros(2, 3, 28, 28), torch.zeros(2, 1, 32, 32), torch.full((2, 1, 28, 28), 2.0),
                -torch.ones(2, 1, 28, 28), torch.zeros(0, 1, 28, 28)):
        with pytest.raises(DataError):
            check_images(bad)


def test_cache_of_another_recipe_or_corrupt_file_is_retrained(tmp_path):
    path = tmp_path / CACHE_NAME
    _save(MnistCNN(), path, {"recipe_version": "0", "train_data": "x"})
    assert _load(path, "x") is None
    _save(MnistCNN(), path, {"recipe_version": "1", "train_data": "x"})
    assert _load(path, "x") is not None and _load(path, "y") is None
    path.write_bytes(b"not a safetensors file")
    assert _load(path, "x") is None


def test_cli_quality_needs_28x28_grey_images(tmp_path):
    run = make_run(tmp_path / "run", "mixture-1d")
    with pytest.raises(ConfigError, match="28x28"):
        eval_cli([str(run), "--quality", "--n", "10", "--no-progress", "--device", "cpu"])
