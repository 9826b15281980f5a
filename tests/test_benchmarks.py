"""The performance suite's smoke mode runs and writes complete JSON (no timing assertions: benchmarks are scripts)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not part of the package
    sys.path.insert(0, str(ROOT))


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_environment(env: dict[str, Any]) -> None:
    for key in ("torch", "threads", "cpu_model", "device", "device_name", "dtype", "autocast", "timestamp"):
        assert key in env, key
    assert env["threads"] == 1
    assert env["dtype"] == "float32" and env["autocast"] is None


def check_memory(memory: dict[str, Any]) -> None:
    assert positive(memory["peak_rss_mib"])
    assert memory["peak_rss_scope"] in ("phase", "process")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import benchmarks.__main__ as suite_main

    out = tmp_path_factory.mktemp("bench")
    args = ["--quick", "--threads", "1", "--out", str(out), "--presets", "mnist-discrete,mixture-1d"]
    assert suite_main.main(args) == 0
    return out, (out / "summary.md").read_text()


def test_training_json(suite: tuple[Path, str]) -> None:
    data = json.loads((suite[0] / "training.json").read_text())
    check_environment(data["environment"])
    assert data["quick"] is True
    assert positive(data["matmul_peak"]["gflops_median"])
    assert [r["preset"] for r in data["presets"]] == ["mnist-discrete", "mixture-1d"]
    for row in data["presets"]:
        for key in ("images_per_s", "seconds_per_step_median", "flops_forward_per_image", "flops_train_per_image",
                    "achieved_gflops", "fraction_of_fp32_matmul_peak", "parameters", "batch_size"):
            assert positive(row[key]), (row["preset"], key, row[key])
        assert row["flops_train_per_image"] > row["flops_forward_per_image"]
        assert row["network_dtype"] == "float32"
        check_memory(row["memory"])


def test_sampling_json(suite: tuple[Path, str]) -> None:
    data = json.loads((suite[0] / "sampling.json").read_text())
    check_environment(data["environment"])
    assert positive(data["flops_per_image_per_evaluation"])
    assert {c["sampler"] for c in data["cells"]} == {"paper", "sde2"}
    for cell in data["cells"]:
        for key in ("images_per_s", "seconds_median", "ms_per_evaluation", "achieved_gflops", "network_share"):
            assert positive(cell[key]), (cell["sampler"], cell["steps"], key, cell[key])
        assert cell["network_evaluations"] == cell["steps"] + 1
        check_memory(cell["memory"])


def test_nll_json(suite: tuple[Path, str]) -> None:
    data = json.loads((suite[0] / "nll.json").read_text())
    check_environment(data["environment"])
    for key in ("seconds_median", "images_per_s", "n_images"):
        assert positive(data[key]), key
    assert all(positive(v) for v in data["flops_per_image"].values())
    assert all(positive(v["nats"]) for v in data["bounds_random_weights"].values())
    check_memory(data["memory"])


def test_summary_is_markdown(suite: tuple[Path, str]) -> None:
    text = suite[1]
    for heading in ("### Training throughput", "### Sampling throughput", "### NLL evaluation"):
        assert heading in text
    assert "| mnist-discrete |" in text


def test_optimisations_quick(tmp_path: Path) -> None:
    from benchmarks import optimisations

    assert optimisations.main(["--quick", "--threads", "1", "--out", str(tmp_path),
                               "--only", "channels_last,inference_mode,overhead"]) == 0
    data = json.loads((tmp_path / "optimisations.json").read_text())
    exps = data["experiments"]
    assert set(exps) == {"channels_last", "inference_mode", "overhead"}
    for name in ("channels_last", "inference_mode"):
        assert "error" not in exps[name], exps[name]
    cl = exps["channels_last"]
    assert cl["max_abs_output_difference"] < 1e-4  # the same function, another memory layout
    for variant in cl["train_step"].values():
        assert positive(variant["seconds_median"]) and positive(variant["speedup"])
    assert exps["inference_mode"]["deterministic_under_inference_mode"] is True
    assert 0 <= exps["overhead"]["non_network_share"] < 1


def test_sampler_benchmark_keeps_cells_it_does_not_recompute(tmp_path: Path) -> None:
    """benchmarks.samplers on a tiny MNIST run: cells land in samplers.json, and a --fresh invocation for one
    sampler recomputes that sampler's cells without dropping the others (it once dropped them)."""
    import benchmarks.samplers as sampler_bench

    from bfn.config import load_config
    from bfn.training import train

    cfg = load_config("mnist-discrete", ["train.steps=2", "train.batch_size=8", "train.sample_every=0",
                                         "model.network.kwargs.base_channels=8"])
    train(cfg, tmp_path / "tiny", progress=False)
    common = [str(tmp_path / "tiny"), "--n", "24", "--nfe", "2,3", "--batch-size", "24", "--threads", "1",
              "--out", str(tmp_path / "out")]
    assert sampler_bench.main([*common, "--samplers", "paper,sde2"]) == 0
    first = json.loads((tmp_path / "out" / "samplers.json").read_text())["tiny"]
    assert set(first["paper"]) == set(first["sde2"]) == {"2", "3"}
    assert all(positive(cell["fid"]) and cell["n"] == 24 for cell in first["sde2"].values())
    assert sampler_bench.main([*common, "--samplers", "sde2", "--fresh", "--seed", "1"]) == 0
    second = json.loads((tmp_path / "out" / "samplers.json").read_text())["tiny"]
    assert second["paper"] == first["paper"]
    assert second["sde2"]["2"]["fid"] != first["sde2"]["2"]["fid"]  # recomputed with another seed
    assert (tmp_path / "out" / "samplers.png").stat().st_size > 1000


def test_distill_hybrid_spends_its_evaluations_where_it_says_and_keeps_a_point_mass() -> None:
    """benchmarks.distill_hybrid: J student evaluations at the student's grid times, then M teacher SDE steps
    uniform in lambda up to t = 1 and one final teacher evaluation at t = 1 (NFE = J + M + 1); on data that is
    always x* (both networks output x* with certainty) every sample is x*."""
    from benchmarks.distill_hybrid import hybrid_sample

    from bfn.flows import Categorical, DiscreteFlow
    from bfn.samplers.distilled import student_grid
    from bfn.samplers.gaussian_path import GaussianPath

    flow = DiscreteFlow(num_classes=3, beta_1=4.0)
    x_star = torch.tensor([2, 0, 1, 1])

    class PointMass:
        def __init__(self) -> None:
            self.flow, self.data_shape, self.device, self.calls = flow, (4,), torch.device("cpu"), []

        def output_distribution(self, theta: torch.Tensor, t: torch.Tensor) -> Categorical:
            self.calls.append(float(t[0]))
            one_hot = torch.nn.functional.one_hot(x_star, 3).float()
            return Categorical((one_hot * 60 - 30).expand(t.shape[0], 4, 3))

    teacher, student = PointMass(), PointMass()
    x = hybrid_sample(teacher, student, 9, grid_steps=4, student_steps=2, sde_steps=2, order=2,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x_star.expand(9, 4))
    path = GaussianPath(flow)
    grid = student_grid(path, 4)
    assert student.calls == pytest.approx(grid[:2])
    lam = path.log_snr(grid[2]), path.log_snr(1.0)
    assert len(teacher.calls) == 3 and teacher.calls[-1] == 1.0
    assert teacher.calls[:2] == pytest.approx([grid[2], path.time_at((lam[0] + lam[1]) / 2)])


def test_distill_cells_parse_with_an_optional_final_choice() -> None:
    from benchmarks.distill import parse_cells

    assert parse_cells("student:distilled:4, teacher:paper:999:mode") == [
        ("student", "distilled", 4, "sample"), ("teacher", "paper", 999, "mode")]
    for bad in ("teacher:paper", "pupil:paper:9", "teacher:paper:9:median", "teacher:paper:x",
                "teacher:paper:9:mode:1"):
        with pytest.raises(SystemExit, match="ROLE:SAMPLER:STEPS"):
            parse_cells(bad)
