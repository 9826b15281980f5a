"""The two-digit recogniser (architecture, data, cache through the shared classifier machinery), sample quality on
64x64 canvases, and the allocator setting the trainer uses."""

from __future__ import annotations

import math

import pytest
import torch

from bfn.errors import DataError
from bfn.evaluation.classifier import _load, _save, accuracy, check_images, load_classifier
from bfn.evaluation.multidigit import TWO_DIGIT, PairHead, TwoDigitCNN, canvas_split
from bfn.evaluation.quality import label_statistics, sample_quality


def test_pair_head_is_the_product_of_two_digit_distributions():
    head = PairHead(6)
    torch.nn.init.normal_(head.linear.weight)
    f = torch.randn(5, 6)
    logits = head(f)
    assert logits.shape == (5, 100)
    assert torch.allclose(logits.logsumexp(-1), torch.zeros(5), atol=1e-5)  # log-probabilities over 100 numbers
    left, right = head.linear(f).reshape(5, 2, 10).softmax(-1).unbind(1)
    for n in (0, 7, 42, 99):  # p(10 a + b) = p_left(a) p_right(b)
        assert torch.allclose(logits[:, n].exp(), left[:, n // 10] * right[:, n % 10], rtol=1e-5)
    assert torch.equal(logits.argmax(-1), 10 * left.argmax(-1) + right.argmax(-1))


def test_canvas_split_labels_are_the_numbers_of_the_placed_digits():
    x, y = canvas_split("test")
    assert x.shape == (2000, 1, 64, 64) and y.shape == (2000,)
    assert x.min() >= 0 and x.max() <= 1 and y.min() >= 0 and y.max() <= 99
    assert len(torch.unique(y)) > 90  # every number occurs in 2,000 canvases but for chance
    # the left digit sits in columns 0..35, the right one in 28..63: ink on both sides of every canvas
    assert (x[:, :, :, :28].amax((1, 2, 3)) > 0.5).all() and (x[:, :, :, 36:].amax((1, 2, 3)) > 0.5).all()


def test_two_digit_cnn_through_the_classifier_machinery(tmp_path):
    model = TwoDigitCNN()
    assert check_images(torch.zeros(3, 64, 64), shape=model.image_shape).shape == (3, 1, 64, 64)
    with pytest.raises(DataError, match=r"\(N, 1, 64, 64\)"):
        check_images(torch.zeros(3, 1, 28, 28), shape=model.image_shape)
    x = torch.rand(4, 1, 64, 64)
    assert model(x).shape == (4, 100) and model.features(x).shape == (4, 128)
    assert 0 <= accuracy(model.eval(), x, torch.tensor([1, 2, 3, 4])) <= 1
    path = tmp_path / TWO_DIGIT.cache_name
    _save(model, path, {"recipe_version": TWO_DIGIT.version, "train_data": "x"})
    loaded = _load(path, "x", TWO_DIGIT)
    assert loaded is not None and isinstance(loaded[0], TwoDigitCNN)
    assert _load(path, "x") is None  # the MNIST recipe refuses a two-digit file


def test_sample_quality_on_canvases_with_any_two_digit_classifier():
    clf = TwoDigitCNN().eval()  # untrained: checks the plumbing, not the numbers
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 2, (30, 64, 64), generator=g)
    reference = torch.rand(40, 1, 64, 64, generator=g)
    out = sample_quality(samples, reference, classifier=clf, kid_subset_size=20)
    assert out["label_entropy_max"] == pytest.approx(math.log(100))
    assert len(out["label_histogram"]) == 100 and sum(out["label_histogram"]) == 30
    with pytest.raises(DataError):
        sample_quality(torch.rand(30, 1, 28, 28), reference, classifier=clf)
    assert label_statistics(torch.eye(100) * 10)["label_entropy"] == pytest.approx(math.log(100))


@pytest.mark.slow
def test_two_digit_recogniser_reads_real_canvases(tmp_path, monkeypatch):
    """Trained offline on canvases of the training digits, it reads canvases of held-out digits (the ceiling a
    perfect generator would reach) far above chance (1%)."""
    monkeypatch.setenv("BFN_CACHE_DIR", str(tmp_path))
    clf = load_classifier(recipe=TWO_DIGIT, verbose=False)
    assert clf.info["test_accuracy"] > 0.7 and clf.info["test_accuracy_binarized"] > 0.6
    assert (tmp_path / "classifier" / TWO_DIGIT.cache_name).is_file()


def test_keep_freed_memory_is_accepted_by_glibc_once():
    """mallopt accepts both thresholds (it returns 0 for a value it refuses). The page faults it saves are
    measured by benchmarks/official_speed.py on the real network, not here: glibc's own adaptive threshold hides
    the difference on any small synthetic pattern."""
    import ctypes
    import sys

    from bfn.training import allocator

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD_MAX) == 1
