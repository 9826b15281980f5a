"""Pictures: every figure function writes a valid file of the expected size / frame count for each data type.

Tiny stand-in models (a BFN with a one-layer network) keep this fast and independent of bfn.networks.
"""

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bfn import viz
from bfn.errors import ConfigError, DataError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretizedFlow
from bfn.models import BFN
from bfn.models.base import SampleStep
from bfn.samplers import SAMPLERS
from bfn.viz.evolution import BLOCK_GAP, CELL_PADDING, MIN_CELL
from bfn.viz.grid import CAPTION_HEIGHT, text_width
from bfn.viz.plots import DPI
from bfn.viz.progress import CELL_GAP


class TinyNet(nn.Module):
    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(f_in + 1, f_out)

    def forward(self, x, t, cond=None):
        return self.lin(torch.cat([x, t[:, None]], -1))


def make(flow, shape):
    torch.manual_seed(0)
    d = math.prod(shape)
    return BFN(TinyNet(d * flow.input_features, d * flow.output_features), flow, data_shape=shape, layout="flat")


IMAGE = (1, 8, 8)
MODELS = {
    "continuous-1d": (ContinuousFlow(sigma_1=0.02), (1,)),
    "continuous-2d": (ContinuousFlow(sigma_1=0.02), (2,)),
    "discretized-image": (DiscretizedFlow(num_bins=16), IMAGE),
    "discrete-image-k2": (DiscreteFlow(num_classes=2), IMAGE),
    "discrete-image-k4": (DiscreteFlow(num_classes=4), IMAGE),
}
IMAGE_CASES = [k for k in MODELS if "image" in k]


@pytest.fixture(params=list(MODELS))
def case(request):
    flow, shape = MODELS[request.param]
    return request.param, make(flow, shape)


def size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def grid_size(n, h, w, *, scale, padding=2):
    nrow = math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    return (nrow * (w + padding) + padding) * scale, (rows * (h + padding) + padding) * scale


# --- grids ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("probs", [False, True])
def test_model_grid_for_every_data_type(case, probs, tmp_path):
    name, model = case
    path = viz.save_model_grid(model, tmp_path / "grid.png", n=6, steps=3, probs=probs)
    expected = {"continuous-1d": (8 * DPI, 3 * DPI), "continuous-2d": (4 * DPI, 4 * DPI)}.get(name)
    assert size(path) == (expected or grid_size(6, 8, 8, scale=6))  # 8x8 images enlarged to 48 px


def test_probabilities_show_the_expected_class(tmp_path):
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 3]), 4).float()  # class 0 (black), class 3 (white)
    probs = one_hot[:, None, None, None, :].expand(2, 1, 4, 4, 4)
    path = viz.save_sample_grid(probs, tmp_path / "p.png", kind="discrete", num_classes=4, nrow=2, scale=1)
    with Image.open(path) as im:
        arr = torch.from_numpy(np.array(im))
    assert arr[2:6, 2:6].max() == 0 and arr[2:6, 8:12].min() == 255
    k2 = torch.tensor([[0.0, 1.0]]).expand(3, 1, 4, 4, 2)  # P(class 1) = 1 -> white
    path = viz.save_sample_grid(k2, tmp_path / "k2.png", kind="discrete", num_classes=2, scale=1)
    with Image.open(path) as im:
        assert im.getpixel((3, 3)) == 255


def test_small_images_are_enlarged_and_separated_by_grey_lines(tmp_path):
    white = torch.ones(4, 1, 8, 8, dtype=torch.long)  # binary images, all white: white separators would vanish
    path = viz.save_sample_grid(white, tmp_path / "w.png", kind="discrete", num_classes=2)
    assert size(path) == grid_size(4, 8, 8, scale=6)
    with Image.open(path) as im:
        arr = np.array(im)
    assert arr[0, 0] == 128 and arr[6 * 2, 6 * 2] == 255  # a separator pixel, then the first image's corner
    assert (arr[:, 6 * 10: 6 * 12] == 128).all()  # the column between the two images of the first row


def test_training_curve_panels_have_legends_and_units():
    from bfn.viz.curves import UNITS, _panel
    from bfn.viz.plots import new_figure

    ax = new_figure(4, 3).add_subplot(1, 1, 1)
    _panel(ax, [1.0, 2.0], [3.0, 2.0], name="loss", unit=UNITS["loss"], log=True, smooth=0)
    assert ax.get_ylabel() == "loss (nats/example)" and ax.get_xlabel() == "training step"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss"]


def test_sample_grid_keeps_discrete_sequences_as_rows(tmp_path):
    x = torch.randint(0, 27, (5, 12))
    assert size(viz.save_sample_grid(x, tmp_path / "s.png", kind="discrete", num_classes=27, scale=1)) == (16, 17)


# --- trajectory recorder and evolution ---------------------------------------------------------------------
def test_chosen_steps_are_evenly_spaced_with_ends():
    for n in (1, 2, 7, 100):
        for k in (1, 2, 5, 10, 200):
            steps = viz.chosen_steps(n, k)
            assert steps == sorted(set(steps)) and steps[-1] == n and len(steps) == min(k, n)
            if k > 1:
                assert steps[0] == 1
    assert viz.chosen_steps(91, 10) == list(range(1, 92, 10))
    assert viz.chosen_steps(100, 3) == [1, 51, 100]


def test_trajectory_records_chosen_steps_in_increasing_t(case):
    name, model = case
    traj = viz.record_sampling(model, 3, 10, k=4, keep=2)
    assert traj.step_ids == [1, 4, 7, 10]
    assert traj.times == [0.0, 0.3, 0.6, 0.9] and traj.total_steps == 10
    inputs, outputs = traj.stacked()
    shape = MODELS[name][1]
    assert inputs.shape == outputs.shape == (4, 2, *shape)
    assert traj.final.shape == (2, *shape)
    prior = 0.0 if "continuous" in name or "discretized" in name else (model.flow.num_classes - 1) / 2
    torch.testing.assert_close(inputs[0], torch.full_like(inputs[0], prior))  # theta_0: mean 0 / uniform classes


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_reports_steps_in_increasing_t(sampler):
    for name in ("continuous-2d", "discrete-image-k4"):
        traj = viz.record_sampling(make(*MODELS[name]), 2, 6, k=3, sampler=sampler)
        assert len(traj) == 3 and traj.times == sorted(set(traj.times)) and 0 <= traj.times[0] < traj.times[-1] < 1


def test_trajectory_refuses_decreasing_time():
    traj = viz.Trajectory()
    x = torch.zeros(2, 1)
    traj(SampleStep(i=2, n=4, t=0.25, estimate=x, prediction=x))
    with pytest.raises(ValueError, match="increasing t"):
        traj(SampleStep(i=1, n=4, t=0.0, estimate=x, prediction=x))


def test_evolution_for_every_data_type(case, tmp_path):
    name, model = case
    k, n = (4, 3) if name in IMAGE_CASES else (2, 100)
    path = viz.save_evolution(model, tmp_path / "evo.png", n=n, steps=8, k=k)
    if name in IMAGE_CASES:
        scale = max(2, math.ceil(MIN_CELL / 8))
        block = (k * (8 + CELL_PADDING) + CELL_PADDING) * scale
        final = max((8 + 2 * CELL_PADDING) * scale, text_width("sample") + 4)
        in_block = max(block, text_width("input distribution") + 4)
        out_block = max(block, text_width("output prediction") + 4)
        height = (n * (8 + CELL_PADDING) + CELL_PADDING) * scale + 2 * CAPTION_HEIGHT
        assert size(path) == (in_block + out_block + final + 2 * BLOCK_GAP, height)
    else:
        assert size(path) == (2 * k * DPI, 4 * DPI)


# --- animations --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [None, 2])
def test_sampling_gif_has_a_frame_per_recorded_step_plus_the_sample(case, k, tmp_path):
    name, model = case
    steps = 3
    path = viz.save_sampling_gif(model, tmp_path / "s.gif", n=4 if name in IMAGE_CASES else 200, steps=steps, k=k)
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == (steps if k is None else k) + 1
        if name not in IMAGE_CASES:
            assert im.size == (7 * DPI, 3 * DPI)


def test_gif_frames_follow_time_order(tmp_path):
    model = make(*MODELS["discrete-image-k2"])
    traj = viz.record_sampling(model, 2, 9, k=5)
    assert traj.times == sorted(traj.times) and len(set(traj.times)) == 5
    frames = viz.trajectory_frames(traj, model.data)
    assert len(frames) == 6 and len({f.size for f in frames}) == 1
    path = viz.save_gif(frames, tmp_path / "f.gif")
    with Image.open(path) as im:
        assert im.n_frames == 6


# --- flow trajectories (1-D) --------------------------------------------------------------------------------
def test_flow_density_is_normalised_and_centred():
    flow = ContinuousFlow(sigma_1=0.02)
    times = torch.tensor([0.2, 0.5, 0.9])
    edges = torch.linspace(-4, 4, 801)
    density = viz.flow_density(flow, torch.tensor([0.8]), times=times, edges=edges)
    mass = density.sum(1) * 0.01
    torch.testing.assert_close(mass, torch.ones(3), atol=1e-4, rtol=0)
    mean = (density * (edges[1:] + edges[:-1]) / 2).sum(1) * 0.01
    torch.testing.assert_close(mean, 0.8 * (1 - 0.02 ** (2 * times)), atol=1e-3, rtol=0)  # gamma(t), §4.5


def test_exact_bayesian_flow_paths_end_at_the_data_point():
    times, means = viz.bayesian_flow_paths(ContinuousFlow(sigma_1=0.01), 0.8, steps=50, n=10)
    assert times.shape == (51,) and means.shape == (51, 10)
    assert means[0].abs().max() == 0 and (means[-1] - 0.8).abs().max() < 0.06


def test_flow_trajectories_and_density_figures(tmp_path):
    model = make(*MODELS["continuous-1d"])
    data = torch.cat([torch.randn(100, 1) * 0.05 - 0.5, torch.randn(100, 1) * 0.05 + 0.5])
    path = viz.save_flow_trajectories(model, tmp_path / "traj.png", data=data, n=50, steps=10, lines=5)
    assert size(path) == (10 * DPI, 4 * DPI)
    path = viz.save_flow_trajectories(model, tmp_path / "nodata.png", n=20, steps=5)
    assert size(path) == (10 * DPI, 4 * DPI)
    path = viz.save_flow_density(ContinuousFlow(sigma_1=0.02), 0.8, tmp_path / "fig1.png", paths=5, steps=20)
    assert size(path) == (8 * DPI, 4 * DPI)


@pytest.mark.parametrize("name", ["continuous-2d", "discrete-image-k2"])
def test_flow_trajectories_need_1d_continuous_data(name, tmp_path):
    with pytest.raises(ConfigError, match="1-D continuous"):
        viz.save_flow_trajectories(make(*MODELS[name]), tmp_path / "x.png", n=4, steps=2)


# --- training curves and progress ---------------------------------------------------------------------------
def write_metrics(path, n=80, grad=True):
    with open(path, "w") as f:
        for s in range(1, n + 1):
            record = {"step": 10 * s, "loss": 50.0 / s + 1, "lr": 1e-3, "elapsed_s": s}
            if grad:
                record["grad_norm"] = 1.0 + 0.1 * (s % 3)
            f.write(json.dumps(record) + "\n")
        f.write('{"step": 9999, "loss": \n')  # a line cut by a kill is ignored


@pytest.mark.parametrize("grad", [True, False])
def test_training_curves_from_metrics(tmp_path, grad):
    write_metrics(tmp_path / "metrics.jsonl", grad=grad)
    assert size(viz.save_training_curves(tmp_path, tmp_path / "c.png")) == (10 * DPI, int(3.5 * DPI))
    path = viz.save_training_curves(tmp_path / "metrics.jsonl", tmp_path / "lin.png", log_loss=False, smooth=0)
    assert size(path) == (10 * DPI, int(3.5 * DPI))


def test_training_curves_errors(tmp_path):
    with pytest.raises(DataError, match="metrics.jsonl"):
        viz.save_training_curves(tmp_path, tmp_path / "c.png")
    with pytest.raises(DataError, match="no 'loss'"):
        viz.save_training_curves([{"step": 1, "lr": 0.1}], tmp_path / "c.png")


def test_progress_figure_from_sample_grids(tmp_path):
    samples = tmp_path / "run" / "samples"
    samples.mkdir(parents=True)
    steps = [100 * i for i in range(1, 13)]
    for i, s in enumerate(reversed(steps)):
        Image.new("L", (100, 40 + i), color=20 * i).save(samples / f"step_{s:07d}.png")
    (samples / "notes.png").write_bytes(b"")  # not a step grid: ignored
    path = viz.save_progress(tmp_path / "run", tmp_path / "progress.png", most=10)
    kept = viz.progress.pick(viz.progress.sample_grids(tmp_path / "run"), 10)
    assert [s for s, _ in kept][0] == 100 and [s for s, _ in kept][-1] == 1200 and len(kept) == 10
    cw = max(100, max(text_width(f"step {s:,}") + 4 for s, _ in kept))
    ch = 40 + 11 + CAPTION_HEIGHT  # the tallest grid (step 100 was written last, 51 px high)
    assert size(path) == (5 * cw + 6 * CELL_GAP, 2 * ch + 3 * CELL_GAP)
    with pytest.raises(DataError, match="sample_every"):
        viz.save_progress(tmp_path, tmp_path / "none.png")


# --- the CLI and the import contract ------------------------------------------------------------------------
def cli(argv):
    from bfn.commands import show

    parser = argparse.ArgumentParser()
    show.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["show", *argv])
    return args.func(args)


def test_show_command_writes_each_figure(tmp_path, monkeypatch, capsys):
    import bfn.models

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    write_metrics(run / "metrics.jsonl")
    Image.new("L", (30, 30)).save(run / "samples" / "step_0000100.png")
    model = make(*MODELS["discrete-image-k4"])
    monkeypatch.setattr(bfn.models, "from_pretrained", lambda path, device="cpu": model)
    assert cli([str(run), "--grid", "--evolution", "--gif", "--progress", "--curves", "--steps", "4", "--n", "4",
                "--k", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.split("/")[-1] for p in printed] == ["grid.png", "evolution.png", "sampling.gif", "progress.png",
                                                   "curves.png"]
    for p in printed:
        assert p.startswith(str(run / "figures")) and size(p)
    out = str(tmp_path / "g.png")
    assert cli([str(run), "--grid", "--probs", "--steps", "2", "--device", "cpu", "--out", out]) == 0
    assert size(tmp_path / "g.png") == grid_size(64, 8, 8, scale=6)
    assert cli([str(run), "--all", "--steps", "2", "--n", "2", "--device", "cpu"]) == 0
    assert "skipped --trajectories" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="choose a figure"):
        cli([str(run)])
    with pytest.raises(ConfigError, match="1-D continuous"):
        cli([str(run), "--trajectories", "--steps", "2", "--device", "cpu"])


def test_viz_import_does_not_load_matplotlib():
    code = "import sys, bfn.viz; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
