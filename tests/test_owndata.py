"""Own data: what bfn infers from an array (layout, data type, bins/classes, range), that samples go back to the
user's format exactly, the config `bfn train FILE` builds, and the one-line errors of the old failure cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bfn.commands.owndata import is_own_data, own_data_config
from bfn.config import load_config
from bfn.data import load_dataset
from bfn.data.infer import infer_format
from bfn.data.spec import DataSpec
from bfn.errors import ConfigError, DataError
from bfn.models import build_model
from bfn.networks.unet import UNet

RNG = np.random.default_rng(0)
DIGITS = RNG.integers(0, 17, (60, 8, 8)).astype(np.uint8)  # sklearn's load_digits: 8x8, values 0..16

CASES = [  # array, layout, kind, K (bins or classes), model shape
    (DIGITS, "NHW", "discretized", 17, (1, 8, 8)),
    (DIGITS[..., None], "NHWC", "discretized", 17, (1, 8, 8)),
    (DIGITS[:, None], "NCHW", "discretized", 17, (1, 8, 8)),
    (RNG.integers(0, 256, (60, 16, 16, 3)).astype(np.uint8), "NHWC", "discretized", 256, (3, 16, 16)),
    (RNG.integers(0, 2, (60, 6, 7)).astype(np.uint8) * 255, "NHW", "discrete", 2, (1, 6, 7)),
    (RNG.integers(0, 5, (60, 32)), "ND", "discrete", 5, (32,)),
    (RNG.choice([-3, 7, 11], (60, 4)), "ND", "discrete", 3, (4,)),
    (RNG.normal(0, 50, (60, 2)).astype(np.float32), "ND", "continuous", None, (2,)),
    (RNG.uniform(-1, 1, (60,)), "N", "continuous", None, (1,)),
    (RNG.random((60, 3, 3, 3)) > 0.5, "NCHW", "discrete", 2, (3, 3, 3)),
]


@pytest.mark.parametrize(("x", "layout", "kind", "k", "shape"), CASES,
                         ids=[f"{c[0].shape}-{c[0].dtype}" for c in CASES])
def test_inference_and_exact_round_trip(x: np.ndarray, layout: str, kind: str, k: int | None,
                                        shape: tuple[int, ...]) -> None:
    fmt = infer_format(x)
    assert (fmt.layout, fmt.kind) == (layout, kind)
    assert k == (fmt.num_bins if kind == "discretized" else len(fmt.values) if kind == "discrete" else None)
    data = fmt.to_model(x)
    assert tuple(data.shape) == (x.shape[0], *shape)
    if kind == "discrete":
        assert data.dtype == torch.int64 and data.min() >= 0 and data.max() < k
    else:
        assert data.dtype == torch.float32 and data.abs().max() <= 1
    back = fmt.to_user(data)
    assert back.dtype == x.dtype and back.shape == x.shape
    if x.dtype.kind == "f":
        np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5 * np.abs(x).max())
    else:
        assert np.array_equal(back, x)


def test_discretized_bins_are_the_paper_centres_of_the_integer_levels() -> None:
    fmt = infer_format(DIGITS)
    data = fmt.to_model(np.array([[[0, 16]]], np.uint8))
    assert torch.allclose(data.flatten(), torch.tensor([1 / 17 - 1, 33 / 17 - 1]))  # (2k + 1) / K - 1


def test_declared_options_override_the_inference() -> None:
    fmt = infer_format(DIGITS, {"kind": "discrete"})
    assert fmt.kind == "discrete" and fmt.values == sorted(set(DIGITS.flatten().tolist()))
    fmt = infer_format(DIGITS, {"num_bins": 4, "low": 0, "high": 15})  # 16 levels into 4 bins of 4
    assert fmt.kind == "discretized" and fmt.num_bins == 4
    assert fmt.to_user(fmt.to_model(np.array([[[0, 5, 15]]], np.uint8))).tolist() == [[[2, 6, 14]]]  # bin middles
    fmt = infer_format(DIGITS, {"kind": "continuous"})
    assert (fmt.low, fmt.high) == (float(DIGITS.min()), float(DIGITS.max()))
    assert infer_format(RNG.integers(0, 5, (60, 3, 4, 4)), {"layout": "NHWC"}).layout == "NHWC"


def write(path: Path, x: np.ndarray, **more: np.ndarray) -> str:
    if path.suffix == ".npz":
        np.savez(path, x=x, **more)
    else:
        np.save(path, x)
    return str(path)


def test_train_file_config_fits_the_shape(tmp_path: Path) -> None:
    cfg, line = own_data_config(write(tmp_path / "digits.npz", DIGITS, y=np.arange(60) % 10), [])
    assert cfg.model.network.name == "unet" and cfg.model.network.kwargs["pad"] is True
    assert cfg.data.options["kind"] == "discretized" and cfg.data.options["num_bins"] == 17
    assert "\n" not in line and "discretized, 17 bins for the integers 0..16" in line and "labels 0..9" in line
    cfg, _ = own_data_config(write(tmp_path / "seq.npy", RNG.integers(0, 5, (60, 32))), [])
    assert (cfg.model.network.name, cfg.model.layout) == ("transformer", "sequence")
    cfg, line = own_data_config(write(tmp_path / "pts.npy", RNG.normal(0, 9, (60, 2))), ["train.steps=7"])
    assert cfg.model.network.name == "mlp" and cfg.train.steps == 7 and "scaled to [-1, 1]" in line
    cfg, _ = own_data_config(str(tmp_path / "digits.npz"), ["data.options.kind=discrete",
                                                            "model.network.kwargs.base_channels=16"])
    assert cfg.data.options["kind"] == "discrete" and cfg.model.network.kwargs["base_channels"] == 16
    assert cfg.train.batch_size == 54  # no larger than the 54 training examples
    assert is_own_data(str(tmp_path / "digits.npz")) and not is_own_data("mnist-discrete")


def test_own_data_loads_through_the_registry_with_a_given_split(tmp_path: Path) -> None:
    path = str(tmp_path / "split.npz")
    np.savez(path, x_train=DIGITS[:50], x_test=DIGITS[50:], y_train=np.zeros(50, int), y_test=np.ones(10, int))
    train, spec = load_dataset("array", "train", path=path)
    test, _ = load_dataset("array", "test", path=path)
    assert (len(train), len(test)) == (50, 10) and spec.shape == (1, 8, 8) and spec.num_bins == 17
    assert test[0][1].item() == 1 and spec.num_labels == 2


@pytest.mark.parametrize("size", [(7, 5), (8, 8), (2, 3)])
def test_padded_unet_takes_any_image_size(size: tuple[int, int]) -> None:
    net = UNet(in_channels=2, out_channels=3, base_channels=8, channel_mult=(1, 2, 2), pad=True)
    torch.nn.init.normal_(net.conv_out.weight)
    out = net(torch.randn(2, 2, *size), torch.rand(2))
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all()
    if size[0] % 4 or size[1] % 4:
        with pytest.raises(DataError, match="add pad: true"):
            UNet(in_channels=2, out_channels=3, base_channels=8)(torch.randn(2, 2, *size), torch.rand(2))


def test_old_failures_are_one_line_errors_that_name_the_fix() -> None:
    cfg = load_config("mnist-discretized")
    with pytest.raises(ConfigError, match=r"network 'unet' takes images \(C, H, W\).*data.options.layout=NHW"):
        build_model(cfg.model, DataSpec(kind="discretized", shape=(8, 8), num_bins=17))
    cfg = load_config("mnist-discretized", ["model.layout=image"])
    with pytest.raises(ConfigError, match="model.layout=image needs examples of shape"):
        build_model(cfg.model, DataSpec(kind="discretized", shape=(8, 8), num_bins=17))


def test_a_new_dataset_drops_the_old_options_and_tilde_removes_one() -> None:
    cfg = load_config("mnist-discretized", ["data.name=array", "data.options.path=d.npz"])
    assert cfg.data.options == {"path": "d.npz"}
    assert "bins" not in load_config("mnist-discretized", ["~data.options.bins"]).data.options
    with pytest.raises(ConfigError, match="only entries of data.options and model.network.kwargs"):
        load_config("mnist-discretized", ["~train.steps"])


@pytest.mark.slow
def test_bfn_train_on_a_channels_last_file_then_sample(tmp_path: Path) -> None:
    """One command, first try: trains, writes samples in the user's layout and values, evaluates."""
    write(tmp_path / "d.npy", DIGITS[..., None])
    args = [sys.executable, "-m", "bfn", "train", "d.npy", "train.steps=2", "train.threads=1", "sample.n=4",
            "sample.steps=2", "model.network.kwargs.base_channels=8", "--no-progress"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "channels last (N, H, W, C)" in proc.stdout and "test NLL:" in proc.stdout
    samples = np.load(tmp_path / "runs" / "d" / "samples.npy")
    assert samples.shape == (4, 8, 8, 1) and samples.dtype == np.uint8 and samples.max() <= 16
    proc = subprocess.run([sys.executable, "-m", "bfn", "sample", "runs/d", "--n", "3", "--steps", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.load(tmp_path / "runs" / "d" / "samples_paper_2.npy").shape == (3, 8, 8, 1)


def test_an_image_folder_is_own_data(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i, a in enumerate(RNG.integers(0, 256, (12, 6, 5), dtype=np.uint8)):
        Image.fromarray(a, mode="L").save(tmp_path / "imgs" / f"{i:02d}.png")
    assert is_own_data(str(tmp_path / "imgs"))
    cfg, line = own_data_config(str(tmp_path / "imgs"), [])
    assert cfg.model.network.name == "unet" and cfg.data.options["layout"] == "NCHW"
    assert "discretized, 256 bins for the integers 0..255" in line
    (tmp_path / "imgs" / "config.yaml").write_text("")
    assert not is_own_data(str(tmp_path / "imgs"))  # a run folder, not data


def test_a_preset_on_an_array_records_the_inferred_format(tmp_path: Path) -> None:
    from bfn.commands.owndata import resolve_array_config

    path = write(tmp_path / "d.npy", DIGITS[..., None])
    cfg, line = resolve_array_config(load_config("mnist-discretized", ["data.name=array", f"data.options.path={path}"]))
    assert cfg.data.options == {"path": path, "layout": "NHWC", "kind": "discretized", "dtype": "uint8",
                                "num_bins": 17, "low": 0, "high": 16}
    assert "channels last (N, H, W, C)" in line


def test_a_csv_table_reads_as_rows_with_its_label_column(tmp_path: Path) -> None:
    """A header row names the columns; a `label` column becomes the labels, integer columns stay integers."""
    from bfn.data.arrays import read_user_array

    rows = RNG.integers(0, 5, (40, 3))
    lines = ["a,label,b,c"] + [f"{r[0]},{i % 3},{r[1]},{r[2]}" for i, r in enumerate(rows)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    assert is_own_data(str(tmp_path / "t.csv"))
    x, labels, n_train = read_user_array(tmp_path / "t.csv")
    assert np.issubdtype(x.dtype, np.integer) and np.array_equal(x, rows) and n_train is None
    assert labels is not None and labels.tolist() == [i % 3 for i in range(40)]
    floats = RNG.normal(0, 3, (30, 2))
    text = "\n".join(f"{float(a)!r}\t{float(b)!r}" for a, b in floats)  # no header, tabs
    (tmp_path / "f.tsv").write_text(text + "\n")
    x, labels, _ = read_user_array(tmp_path / "f.tsv")
    assert x.dtype == np.float64 and np.array_equal(x, floats) and labels is None
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + b"1.5,2\r\n3,4\r\n")  # a spreadsheet's UTF-8 with BOM, CRLF
    x, labels, _ = read_user_array(tmp_path / "bom.csv")
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0]] and labels is None
    _, line = own_data_config(str(tmp_path / "f.tsv"), [])
    assert "30 rows of shape (2,)" in line and "continuous" in line


@pytest.mark.parametrize(("text", "message"), [
    ("1,2\n3\n", "the number of columns changed"),
    ("a,b\n", "holds no rows of numbers"),
    ("a,b\n1,x\n", "could not convert string 'x'"),
    ("a,b,c\n1,2\n", "the header names 3 columns but the rows have 2"),
    ("label\n1\n2\n", "only a label column"),
    ("x,y\n1,0.5\n2,1\n", "holds non-integers"),
])
def test_a_broken_table_gets_a_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    from bfn.data.arrays import read_user_array

    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataError) as err:
        read_user_array(tmp_path / "t.csv")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_bfn_train_on_a_csv_file_writes_samples_as_a_csv(tmp_path: Path) -> None:
    """Two columns of floats with a header: samples go back as a table with that header, in the data's units."""
    points = RNG.normal(0, 1, (200, 2)) * [10.0, 1.0] + [100.0, -5.0]
    (tmp_path / "pts.csv").write_text("u,v\n" + "\n".join(f"{a},{b}" for a, b in points) + "\n")
    args = [sys.executable, "-m", "bfn", "train", "pts.csv", "train.steps=3", "train.threads=1", "sample.n=5",
            "sample.steps=2", "--no-progress"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "runs" / "pts" / "samples.csv").read_text().splitlines()
    assert table[0] == "u,v" and len(table) == 6
    samples = np.array([[float(v) for v in row.split(",")] for row in table[1:]])
    lo, hi = points.min(), points.max()  # one scaling for all values of the file (see the printed line)
    assert np.all(samples >= lo - 1e-6) and np.all(samples <= hi + 1e-6) and samples.max() > 1  # its units
    assert (tmp_path / "runs" / "pts" / "samples.png").stat().st_size > 0
    proc = subprocess.run([sys.executable, "-m", "bfn", "sample", "runs/pts", "--n", "4", "--steps", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = np.load(tmp_path / "runs" / "pts" / "samples_paper_2.npy")
    assert again.shape == (4, 2) and again.max() > 1  # the user's units, not the model's [-1, 1]
    assert (tmp_path / "runs" / "pts" / "samples_paper_2.png").stat().st_size > 0


def test_vector_columns_in_different_units_each_fill_the_model_range() -> None:
    """Age-like and income-like columns: each is scaled from its own range, and samples map back exactly."""
    x = np.stack([RNG.uniform(20, 80, 500), RNG.lognormal(10, 1, 500), np.full(500, 3.0)], axis=1)
    fmt = infer_format(x)
    assert fmt.kind == "continuous" and isinstance(fmt.low, list) and len(fmt.low) == 3
    model = fmt.to_model(x).double()
    assert torch.allclose(model[:, :2].min(0).values, torch.tensor([-1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(model[:, :2].max(0).values, torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert torch.all(model[:, 2] == 0)  # a constant column sits at the middle of value +- 1
    back = fmt.to_user(fmt.to_model(x))  # float32 in between: exact to ~1e-7 of each column's range
    assert np.all(np.abs(back - x) <= 1e-6 * (np.ptp(x, axis=0) + 2))
    again = infer_format(x[:10], fmt.options())  # the saved options reproduce the format on any rows
    assert again.low == fmt.low and again.high == fmt.high
    assert "each of the 3 columns scaled to [-1, 1]" in fmt.describe()


def test_the_nll_in_user_units_is_the_change_of_variables() -> None:
    """-ln p(x) = -ln p(x') + sum_j ln s_j for x_j = m_j + s_j x'_j, checked on a Gaussian with known density."""
    from torch.distributions import Normal

    x = np.stack([RNG.uniform(-100, 300, 50), RNG.uniform(0, 2e-3, 50)], axis=1)
    fmt = infer_format(x)
    s = fmt.scales(2)
    assert np.allclose(s, (x.max(0) - x.min(0)) / 2)
    m = (x.max(0) + x.min(0)) / 2
    x_model = fmt.to_model(x).double()
    nll_model = -Normal(0.0, 1.0).log_prob(x_model).sum(1)
    nll_user = -Normal(torch.as_tensor(m), torch.as_tensor(s)).log_prob(torch.as_tensor(x)).sum(1)
    assert torch.allclose(nll_user, nll_model + float(np.log(s).sum()), rtol=1e-5)


@pytest.mark.slow
def test_bfn_eval_on_scaled_own_data_reports_the_nll_in_the_user_units(tmp_path: Path) -> None:
    """-ln p(x) = -ln p(x') + sum_j ln s_j with s_j half of column j's range: eval.json carries both."""
    import json

    points = RNG.normal(0, 1, (120, 2)) * [50.0, 0.5] + [10.0, 3.0]
    np.save(tmp_path / "p.npy", points)
    args = [sys.executable, "-m", "bfn", "train", "p.npy", "train.steps=3", "train.threads=1", "sample.n=4",
            "sample.steps=2", "--no-progress"]
    assert subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "bfn", "eval", "runs/p", "--nll", "--steps", "inf"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "in your units" in proc.stdout
    result = json.loads((tmp_path / "runs" / "p" / "eval.json").read_text())["nll"]
    shift = float(np.log(np.ptp(points, axis=0) / 2).sum())
    assert result["user_units_nats"]["inf"] == pytest.approx(result["results"]["inf"]["nats"] + shift, rel=1e-9)
