"""`bfn sample --label/--guidance/--inpaint/--mask` and `bfn show --guidance` on a tiny conditional run, and the
image <-> data conversions behind --inpaint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bfn.data.observation import MASK_REGIONS, image_to_data, load_observation, region_mask
from bfn.errors import DataError
from bfn.flows import bin_centres
from bfn.viz import to_unit_interval
from test_cli import bfn


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    from bfn.config import load_config
    from bfn.training import train

    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = load_config("mnist-discrete-cond", [
        "model.network.kwargs={base_channels: 8, channel_mult: [1, 2], num_res_blocks: 1}",
        "train.steps=2", "train.batch_size=8", "train.sample_every=0"])
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    grey = np.zeros((28, 28), np.uint8)
    grey[4:24, 12:16] = 255  # a "1"
    grey[4:8, 8:12] = 140
    Image.fromarray(grey).save(folder / "digit.png")
    mask = np.zeros((28, 28), np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "big.png")
    return folder


def test_label_and_guidance(cond_run, tmp_path):
    proc = bfn("sample", str(cond_run), "--label", "7", "--guidance", "2", "--n", "4", "--steps", "3",
               "--out", str(tmp_path / "s.png"))
    assert proc.returncode == 0, proc.stderr
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (4, 1, 28, 28) and set(np.unique(x)) <= {0, 1}


def test_inpaint_keeps_the_observed_pixels(cond_run, digit, tmp_path):
    for mask, observed in (("top", np.s_[:, :, :14, :]), (str(digit / "mask.png"), np.s_[:, :, :, :10])):
        proc = bfn("sample", str(cond_run), "--inpaint", str(digit / "digit.png"), "--mask", mask, "--n", "3",
                   "--steps", "3", "--sampler", "sde2", "--out", str(tmp_path / "i.png"))
        assert proc.returncode == 0, proc.stderr
        x = np.load(tmp_path / "i.npy")
        truth = (np.asarray(Image.open(digit / "digit.png"), dtype=np.float32) / 255 >= 0.5).astype(np.int64)
        assert np.array_equal(x[observed], np.broadcast_to(truth[None, None], x.shape)[observed])


def test_guidance_grid_picture(cond_run, tmp_path):
    proc = bfn("show", str(cond_run), "--guidance", "--scales", "0,2", "--n", "2", "--steps", "2",
               "--out", str(tmp_path / "g.png"))
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "g.png") as img:
        width, height = img.size
    cell_h = 28 * 2 + 2 * 2  # one row of 2 digits at scale 2 with padding
    assert height >= 10 * cell_h and width >= 2 * (2 * 28 * 2)


@pytest.mark.parametrize(("args", "needle"), [
    (["--guidance", "2"], "--guidance needs --label"),
    (["--label", "12"], "labels must lie in 0..9"),
    (["--inpaint", "IMG"], "go together"),
    (["--inpaint", "IMG", "--mask", "diagonal"], "neither a file nor a region"),
    (["--inpaint", "BIG", "--mask", "top"], "resize it"),
])
def test_bad_conditioning_input_gives_one_line_errors(cond_run, digit, args, needle):
    args = [str(digit / "digit.png") if a == "IMG" else str(digit / "big.png") if a == "BIG" else a for a in args]
    proc = bfn("sample", str(cond_run), "--steps", "2", "--n", "2", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and needle in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("kind", "k"), [("discrete", 2), ("discrete", 4), ("discretized", 16), ("continuous", 0)])
def test_image_to_data_inverts_the_display_mapping(kind, k):
    if kind == "discrete":
        data = torch.randint(k, (1, 5, 5))
    elif kind == "discretized":
        data = bin_centres(k)[torch.randint(k, (1, 5, 5))]
    else:
        data = torch.linspace(-1, 1, 25).reshape(1, 5, 5)
    shown = to_unit_interval(data, kind, num_classes=k or 2)
    back = image_to_data(shown, kind, num_classes=k, num_bins=k)
    torch.testing.assert_close(back, data, atol=1e-6, rtol=0)


def test_region_masks_and_observation_files(digit):
    for name in MASK_REGIONS:
        m = region_mask(name, (1, 28, 28))
        assert m.dtype == torch.bool and 0 < m.sum() < 28 * 28
    assert region_mask("top", (1, 28, 28))[0, :14].all() and not region_mask("top", (1, 28, 28))[0, 14:].any()
    known, mask = load_observation(digit / "digit.png", digit / "mask.png", kind="discretized", shape=(1, 28, 28),
                                   num_bins=16)
    assert mask[0, :, :10].all() and not mask[0, :, 10:].any()
    assert known[0, 5, 13] == bin_centres(16)[-1] and known[0, 5, 9] == bin_centres(16)[140 * 16 // 256]
    with pytest.raises(DataError, match="image data"):
        load_observation(digit / "digit.png", "top", kind="discrete", shape=(784,))
    black = digit / "black.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(black)
    with pytest.raises(DataError, match="all black"):
        load_observation(digit / "digit.png", black, kind="discrete", shape=(1, 28, 28), num_classes=2)
