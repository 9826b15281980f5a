"""The training engine end to end on tiny configs: determinism, checkpoints, resume after SIGKILL, two processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bfn.config import load_config
from bfn.errors import CheckpointError
from bfn.models import from_pretrained
from bfn.training import train
from bfn.training.checkpoint import load_state
from bfn.utils.io import read_metrics

TINY = ["model.network.kwargs.hidden=32", "train.log_every=1", "train.checkpoint_every=10", "train.batch_size=32",
        "train.steps=30", "sample.n=200", "sample.steps=5"]


def tiny(*extra: str):
    return load_config("mixture-1d", [*TINY, *extra])


def test_same_seed_gives_identical_losses(tmp_path):
    train(tiny(), tmp_path / "a", progress=False)
    train(tiny(), tmp_path / "b", progress=False)
    la = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(la) == 30 and la == lb
    train(tiny("train.seed=1"), tmp_path / "c", progress=False)
    assert [r["loss"] for r in read_metrics(tmp_path / "c" / "metrics.jsonl")] != la


def test_resume_continues_exactly(tmp_path):
    train(tiny(), tmp_path / "full", progress=False)
    train(tiny("train.steps=20"), tmp_path / "part", progress=False)
    result = train(tiny(), tmp_path / "part", resume=True, progress=False)
    assert result.step == 30
    full = [r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    part = [r["loss"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl")]
    assert part == full
    a, b = from_pretrained(tmp_path / "full"), from_pretrained(tmp_path / "part")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_existing_run_needs_resume(tmp_path):
    train(tiny("train.steps=10"), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(tiny("train.steps=10"), tmp_path, progress=False)


def test_saved_model_samples_identically(tmp_path):
    train(tiny(), tmp_path, progress=False)
    m1, m2 = from_pretrained(tmp_path), from_pretrained(tmp_path)
    s1 = m1.sample(50, 10, generator=torch.Generator().manual_seed(5))
    s2 = m2.sample(50, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2)


def test_corrupt_checkpoints_give_one_line_errors(tmp_path):
    train(tiny("train.steps=10"), tmp_path, progress=False)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        from_pretrained(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "state.pt").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a bfn"):
        load_state(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        from_pretrained(tmp_path)


def test_planted_pickle_payload_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"step": 1, "payload": Evil()}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="not plain tensors"):
        load_state(tmp_path)
    assert not (tmp_path / "pwned").exists()


def _bfn(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bfn", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def _checkpoint_step(run) -> int:
    return load_state(run)["step"] if (run / "state.pt").exists() else 0


def test_sigkill_then_resume(tmp_path):
    """Kill the trainer (SIGKILL: no cleanup) right after each new checkpoint appears, three times, then resume to
    the end. Kills follow observed progress, never a timer, so the test is the same on a fast or a loaded machine."""
    run = tmp_path / "run"
    args = ["train", "mixture-1d", *TINY, "train.steps=400", "train.checkpoint_every=25", "--out", str(run),
            "--no-progress"]
    for _ in range(3):
        before = _checkpoint_step(run)
        proc = _bfn(*args, *(["--resume"] if (run / "state.pt").exists() else []))
        deadline = time.monotonic() + 240
        while _checkpoint_step(run) <= before:  # wait for a new checkpoint (polling, not a timed kill)
            assert proc.poll() is None, "the trainer stopped before writing a new checkpoint"
            assert time.monotonic() < deadline, "no new checkpoint within 240 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed; raise train.steps"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        step = load_state(run)["step"]  # never corrupt: loads after every kill
        assert step % 25 == 0 and before < step < 400
        from_pretrained(run)
    proc = _bfn(*args, "--resume")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert load_state(run)["step"] == 400
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 400
    assert not list(run.glob(".*.tmp"))


def test_one_trainer_per_run_directory(tmp_path):
    """A second trainer on a folder that a live process trains into stops with a one-line error; once that process
    is killed (SIGKILL: no cleanup), the OS drops its lock and --resume works."""
    run = tmp_path / "run"
    proc = _bfn("train", "mixture-1d", *TINY, "train.steps=100000", "train.checkpoint_every=5", "--out", str(run),
                "--no-progress")
    try:
        deadline = time.monotonic() + 120
        while not (run / "state.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the first trainer did not start"
            time.sleep(0.2)
        with pytest.raises(CheckpointError, match="another `bfn train` is writing") as err:
            train(tiny("train.steps=100000"), run, resume=True, progress=False)
        assert "\n" not in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    step = load_state(run)["step"]
    result = train(tiny(f"train.steps={step + 5}"), run, resume=True, progress=False)
    assert result.step == step + 5


@pytest.mark.slow
def test_two_processes_write_one_checkpoint(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bfn",
           "train", "mixture-1d", *TINY, "train.steps=6", "--out", str(run), "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))  # written once, by the main process only
    assert all(r["world_size"] == 2 for r in records)
    assert load_state(run)["step"] == 6
    assert json.loads((run / "config.json").read_text())["step"] == 6


def test_max_seconds_stops_and_saves(tmp_path):
    """A wall-clock budget ends the run at the first step past it, with a checkpoint of that step (here the budget
    is tiny, so the run stops after its first step whatever the machine's speed)."""
    result = train(tiny("train.steps=100000", "train.max_seconds=0.000001"), tmp_path / "r", progress=False)
    assert result.step == 1 and not result.interrupted
    assert load_state(tmp_path / "r")["step"] == 1
