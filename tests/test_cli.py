"""The command line as a new user meets it: the mixture demo end to end, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest


def bfn(*args: str, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bfn", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


@pytest.mark.slow
def test_mixture_demo_from_the_cli(tmp_path):
    out = tmp_path / "mixture"
    proc = bfn("train", "mixture-1d", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((out / "eval_toy.json").read_text())
    print(f"W1 = {metrics['wasserstein_1']:.4f}, mode fractions = {metrics['mode_fractions']}")
    assert metrics["n_samples"] == 4000
    assert metrics["wasserstein_1"] < 0.03
    assert all(0.15 <= f <= 0.35 for f in metrics["mode_fractions"])
    assert (out / "samples.png").stat().st_size > 1000
    sample = bfn("sample", str(out), "--n", "16", "--steps", "10", "--out", str(tmp_path / "s.png"))
    assert sample.returncode == 0, sample.stderr
    assert (tmp_path / "s.npy").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "no-such-preset"], "unknown preset"),
    (["train", "mixture-1d", "train.stepz=3"], "stepz"),
    (["train", "mixture-1d", "train.steps=-1"], "train.steps must be positive"),
    (["train", "mixture-1d", "train.steps"], "key=value"),
    (["train", "mixture-1d", "model.loss=abc"], "model.loss"),
    (["train", "mixture-1d", "data.name=nope"], "nope"),
    (["sample", "/nonexistent/run"], "config.json"),
])
def test_bad_input_gives_one_line_error(args, needle, tmp_path):
    proc = bfn(*args, "--out", str(tmp_path / "o")) if args[0] == "train" else bfn(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and needle in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_steps_for_sampling(tmp_path):
    from bfn.config import load_config
    from bfn.training import train

    cfg = load_config("mixture-1d", ["model.network.kwargs.hidden=16", "train.steps=2", "train.batch_size=16"])
    train(cfg, tmp_path / "r", progress=False)
    proc = bfn("sample", str(tmp_path / "r"), "--steps", "0")
    assert proc.returncode == 2 and "steps must be a positive integer" in proc.stderr


def test_overrides_may_follow_options(tmp_path, capsys):
    from bfn.cli import main

    # the override is applied (its bad value is reported), not refused as an unknown argument
    assert main(["train", "mixture-1d", "--out", str(tmp_path / "o"), "--no-progress", "train.steps=abc"]) == 2
    assert "could not be converted to Integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "mixture-1d", "--out", str(tmp_path / "o"), "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "sample", "show", "eval", "compare"])
def test_help_shows_only_real_defaults(command, capsys):
    from bfn.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert f"usage: bfn {command}" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_compile_flags_reach_the_network(tmp_path, monkeypatch, capsys):
    """`bfn train --compile` sets train.compile and `bfn sample --compile` compiles the loaded network (the
    compilation itself is replaced by a recorder: it takes minutes on a CPU)."""
    import torch

    from bfn.cli import main
    from bfn.config import load_config

    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    run = tmp_path / "r"
    assert main(["train", "mixture-1d", "model.network.kwargs.hidden=16", "train.steps=2", "train.batch_size=16",
                 "sample.n=20", "sample.steps=2", "--out", str(run), "--no-progress", "--compile"]) == 0
    assert load_config(str(run / "config.yaml")).train.compile is True
    assert compiled == ["MLP"]
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--compile", "--out", str(tmp_path / "s.png")]) == 0
    assert compiled == ["MLP", "MLP"]
    capsys.readouterr()
