"""Reliability (issue #7): bad input, interrupted runs and untrusted files never lose work or let code in.

Covered here: config.json that does not match the weights, damage caught by checksums, atomic writes, a crash at
each point of a checkpoint (between the weights and the resume state), stale temp files, the NaN policy, resuming
without a checkpoint, repeated SIGKILLs of one run (slow), and the one-line errors of newcomers' mistakes at the
command line (slow). The fuzzing of the same boundaries lives in test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bfn.config import load_config
from bfn.errors import CheckpointError, TrainingError
from bfn.models import from_pretrained
from bfn.models.bfn import BFN
from bfn.training import train
from bfn.training.checkpoint import load_state, remove_stale_temps
from bfn.training.logging import MetricsLogger, read_metrics
from bfn.utils.io import atomic_write, atomic_write_text
from conftest import TINY_RUN

TINY = TINY_RUN  # the session's shared tiny run (conftest.tiny_run) is trained with these


def tiny(*extra: str):
    return load_config("mixture-1d", [*TINY, *extra])


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    """The session's finished tiny run (conftest.TINY_RUN = this module's TINY): read-only for the tests, which
    copy it to damage it."""
    return tiny_run


def copy_run(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in run.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    return dest


def edit_config(run: Path, edit) -> None:
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------- config.json against the weights


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda c: c["model"]["network"]["kwargs"].update(hidden=32),
     r"network\.layers\.0\.bias has shape \[16\] in the weights but \[32\] in the config"),
    (lambda c: c["model"]["network"]["kwargs"].update(depth=2), "2 missing and 0 unexpected tensors"),
    (lambda c: c["data"].update(shape=[2]), "does not match config.json"),
    (lambda c: c["model"].update(conditional=True) or c["data"].update(num_labels=3), "1 missing"),
    (lambda c: c["model"]["network"]["kwargs"].update(hidden=10**9), "in the weights but"),  # no 40 GB allocation
    (lambda c: c["model"]["network"]["kwargs"].update(hidden=-3), "cannot be built"),
    (lambda c: c["model"]["network"].update(name="unet"), "cannot be built"),
    (lambda c: c["model"].update(layout="image"), "cannot be built"),
    (lambda c: c["data"].update(kind="continuouz"), "unknown data kind"),
    (lambda c: c["data"].update(shape="ab"), "invalid data shape"),
    (lambda c: c["data"].update(shape=[-1]), "invalid data shape"),
    (lambda c: c["data"].update(num_labels="x"), "invalid class/bin/label counts"),
    (lambda c: c["model"].update(loss="0"), "invalid model config"),
    (lambda c: c.pop("data"), "lacks the model/data description"),
], ids=["wider", "deeper", "other-shape", "conditional", "hidden-1e9", "hidden-negative", "other-network",
        "image-layout", "unknown-kind", "shape-string", "shape-negative", "labels-string", "loss-0", "no-data"])
def test_config_that_does_not_match_the_weights(run: Path, tmp_path: Path, edit, needle: str) -> None:
    """A config.json that disagrees with model.safetensors (or describes no buildable model) is a one-line
    CheckpointError naming the problem, found before the model's memory is allocated."""
    bad = copy_run(run, tmp_path / "run")
    edit_config(bad, edit)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=needle) as err:
        from_pretrained(bad)
    one_line(err)
    assert time.perf_counter() - start < 30


def test_weights_from_another_run(run: Path, tmp_path: Path) -> None:
    """model.safetensors of a wider network next to this run's config.json."""
    other = tmp_path / "other"
    train(tiny("model.network.kwargs.hidden=32", "train.steps=2"), other, progress=False)
    mixed = copy_run(run, tmp_path / "mixed")
    (mixed / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="the two files come from different runs") as err:
        from_pretrained(mixed)
    one_line(err)


# ---------------------------------------------------------------- damage is detected, not loaded


def test_bit_flip_in_weights_fails_the_checksum(run: Path, tmp_path: Path) -> None:
    bad = copy_run(run, tmp_path / "run")
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # inside the last tensor: the file still parses
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256") as err:
        from_pretrained(bad)
    one_line(err)


def test_weights_without_checksum_still_load(run: Path, tmp_path: Path) -> None:
    """Files written by other tools (or older bfn versions) carry no digest: they load as before, unless they hold
    NaN or Inf."""
    plain = copy_run(run, tmp_path / "run")
    state = load_file(str(plain / "model.safetensors"))
    save_file(state, str(plain / "model.safetensors"))
    model = from_pretrained(plain)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    state[next(iter(state))].view(-1)[0] = float("nan")
    save_file(state, str(plain / "model.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        from_pretrained(plain)


def test_bit_flip_in_resume_state_fails_the_crc(run: Path, tmp_path: Path) -> None:
    bad = copy_run(run, tmp_path / "run")
    path = bad / "state.pt"
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor record
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # local header, then data
    data[start + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch") as err:
        load_state(bad)
    one_line(err)
    weights = (bad / "model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        train(tiny("train.steps=40"), bad, resume=True, progress=False)
    assert (bad / "model.safetensors").read_bytes() == weights  # a refused resume touches nothing


def test_state_with_wrong_entries_is_refused(tmp_path: Path) -> None:
    torch.save({"step": 3, "model": {}, "ema": {}, "optimizer": {}, "scheduler": {}, "rng_cpu": [1, 2]},
               tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="'rng_cpu' is list"):
        load_state(tmp_path)
    torch.save([1, 2, 3], tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="not a bfn resume state"):
        load_state(tmp_path)


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_atomic_writes_get_normal_permissions(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; the replaced file gets what open() would give under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~mask


def test_metrics_truncation_survives_a_failed_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = MetricsLogger(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        logger.log({"step": step})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "lo')  # a line cut by a kill
    text = (tmp_path / "metrics.jsonl").read_text()

    def crash(*args: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr("bfn.models.hub.os.replace", crash)
    with pytest.raises(OSError):
        logger.truncate_after(2)
    assert (tmp_path / "metrics.jsonl").read_text() == text  # untouched, not emptied
    monkeypatch.undo()
    logger.truncate_after(2)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_stale_temp_files_are_removed_on_resume(run: Path, tmp_path: Path) -> None:
    killed = copy_run(run, tmp_path / "run")
    (killed / ".state.pt.abcd1234.tmp").write_bytes(b"half a state")
    (killed / ".model.safetensors.x_y_z123.tmp").write_bytes(b"half the weights")
    (killed / "notes.tmp").write_text("the user's")
    assert remove_stale_temps(killed) == 2
    assert sorted(p.name for p in killed.glob("*.tmp")) == ["notes.tmp"]


# ---------------------------------------------------------------- a crash at each point of a checkpoint


class Crash(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in bfn catches it."""


@pytest.mark.parametrize("point", ["after weights, before config.json", "after weights+config, before state.pt",
                                   "while writing state.pt"])
def test_crash_during_a_checkpoint_then_resume(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               point: str) -> None:
    """A crash at any point of the second checkpoint (step 20) leaves a run directory whose every file loads;
    --resume restarts from step 10 and ends with exactly the weights and losses of the uninterrupted run."""
    out = tmp_path / "run"
    calls = {"n": 0}
    import bfn.models.hub as hub
    import bfn.training.checkpoint as checkpoint

    real_text, real_write = hub.atomic_write_text, checkpoint.atomic_write

    def text_then_crash(path: Path, text: str) -> None:
        if Path(path).name == "config.json":
            calls["n"] += 1
            if calls["n"] == 2 and point.startswith("after weights,"):
                raise Crash
        real_text(path, text)

    def state_then_crash(path: Path, write) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            if point.startswith("while"):  # what a kill in the middle of torch.save leaves behind
                (Path(path).parent / f".{Path(path).name}.zzzz9999.tmp").write_bytes(b"PK\x03\x04 half")
            raise Crash
        real_write(path, write)

    if point.startswith("after weights,"):
        monkeypatch.setattr(hub, "atomic_write_text", text_then_crash)
    else:
        monkeypatch.setattr(checkpoint, "atomic_write", state_then_crash)
    with pytest.raises(Crash):
        train(tiny(), out, progress=False)
    monkeypatch.undo()

    assert load_state(out)["step"] == 10  # the last complete checkpoint
    from_pretrained(out)  # weights of step 10 or 20: either way consistent with config.json
    load_config(str(out / "config.yaml"))
    result = train(tiny(), out, resume=True, progress=False)
    assert result.step == 30 and not list(out.glob(".*.tmp"))
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == list(range(1, 31))
    assert [r["loss"] for r in read_metrics(out / "metrics.jsonl")] == \
        [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    a, b = from_pretrained(out).state_dict(), from_pretrained(run).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- NaN policy and resume without a checkpoint


def nan_at(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> None:
    """Make BFN.forward return NaN losses on the given (1-based) calls."""
    real = BFN.forward
    count = {"n": 0}

    def forward(self, x, cond=None):
        count["n"] += 1
        out = real(self, x, cond=cond)
        return out * float("nan") if count["n"] in calls else out

    monkeypatch.setattr(BFN, "forward", forward)


def test_nan_stop_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nan_at(monkeypatch, {15})
    with pytest.raises(TrainingError, match=r"non-finite loss at step 15; the last good checkpoint \(step 10\)") as err:
        train(tiny(), tmp_path, progress=False)
    one_line(err)
    assert load_state(tmp_path)["step"] == 10
    from_pretrained(tmp_path)
    monkeypatch.undo()
    assert train(tiny(), tmp_path, resume=True, progress=False).step == 30


def test_nan_before_the_first_checkpoint_points_at_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nan_at(monkeypatch, {1})
    with pytest.raises(TrainingError, match="before the first checkpoint; check the data"):
        train(tiny(), tmp_path, progress=False)


def test_nan_skip_then_give_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nan_at(monkeypatch, {5, 6})
    result = train(tiny("train.nan_policy=skip", "train.max_bad_steps=2"), tmp_path / "a", progress=False)
    assert result.step == 30 and torch.isfinite(torch.tensor(result.final_loss))
    monkeypatch.undo()
    nan_at(monkeypatch, set(range(12, 100)))
    with pytest.raises(TrainingError, match="step 12"):
        train(tiny("train.nan_policy=skip", "train.max_bad_steps=2"), tmp_path / "b", progress=False)
    assert load_state(tmp_path / "b")["step"] == 10


def test_resume_without_a_checkpoint_starts_at_step_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = train(tiny("train.steps=3"), tmp_path / "new", resume=True, progress=False)
    assert result.step == 3
    assert "no checkpoint in" in capsys.readouterr().out


# ---------------------------------------------------------------- SIGKILL, again and again


def _bfn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bfn", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _last_step(path: Path) -> int:
    return max((r["step"] for r in read_metrics(path)), default=0) if path.exists() else 0


KILLS = 4


@pytest.mark.slow
def test_repeated_sigkill_never_loses_work(tmp_path: Path) -> None:
    """Kill one run with SIGKILL at random moments of training (KILLS times, checkpoints every 5 steps, so
    some kills land inside a checkpoint write), resume after each, and check that the finished run is the
    uninterrupted run: same losses at every step, same weights, every file loadable, no corrupt metrics line."""
    out = tmp_path / "killed"
    steps = 1000
    overrides = [*TINY, f"train.steps={steps}", "train.checkpoint_every=5"]
    args = ["train", "mixture-1d", *overrides, "--out", str(out), "--no-progress", "--device", "cpu"]
    rng = random.Random(7)
    survived, kill_steps, mid_write = 0, [], 0
    for _ in range(KILLS):
        before = _last_step(out / "metrics.jsonl")
        proc = _bfn(*args, "--resume")
        deadline = time.monotonic() + 240
        while _last_step(out / "metrics.jsonl") <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until this process is training
        target = _last_step(out / "metrics.jsonl") + rng.randint(0, 40)  # a random moment, by observed progress
        while _last_step(out / "metrics.jsonl") < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed; raise steps"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        survived += 1
        kill_steps.append(_last_step(out / "metrics.jsonl"))
        mid_write += bool(list(out.glob(".*.tmp")))  # the kill cut a checkpoint write short
        state = load_state(out)  # never half-written: the last checkpoint loads after every kill
        assert state["step"] % 5 == 0 and state["step"] <= kill_steps[-1]
        from_pretrained(out)
    print(f"survived {survived} SIGKILLs at logged steps {kill_steps}, {mid_write} of them inside a file write")
    proc = _bfn(*args, "--resume")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert survived == KILLS and len(set(kill_steps)) == KILLS

    state = load_state(out)
    assert state["step"] == steps
    load_config(str(out / "config.yaml"))
    assert json.loads((out / "config.json").read_text())["step"] == steps
    killed_model = from_pretrained(out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert not list(out.glob(".*.tmp"))

    reference = tmp_path / "reference"  # the same run, never interrupted
    train(load_config("mixture-1d", overrides), reference, progress=False, device="cpu")
    assert [r["loss"] for r in records] == [r["loss"] for r in read_metrics(reference / "metrics.jsonl")]
    ref = from_pretrained(reference).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in killed_model.state_dict().items())


# ---------------------------------------------------------------- newcomers' mistakes at the command line


@pytest.fixture(scope="module")
def cli_files(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    np.save(root / "floats.npy", np.random.default_rng(0).random((50, 3)))
    np.save(root / "strings.npy", np.array(["a", "b"] * 25))
    np.save(root / "huge.npy", np.full((200, 1), 1e25, np.float32))  # finite, but far outside [-1, 1]
    corrupt = copy_run(run, root / "corrupt")
    data = bytearray((corrupt / "model.safetensors").read_bytes())
    data[-3] ^= 0x10
    (corrupt / "model.safetensors").write_bytes(bytes(data))
    (root / "bad.yaml").write_text("train:\n  steps: [\n")
    (root / "good").symlink_to(run)
    return root


MISTAKES = [
    (["train", "mixture-1dd"], "unknown preset 'mixture-1dd'"),
    (["train", "mixture-1d", "train.step=5"], "Did you mean: 'steps'?"),
    (["train", "mixture-1d", "train.steps=abc"], "could not be converted to Integer"),
    (["train", "mixture-1d", "train.steps=0"], "train.steps must be positive, got 0"),
    (["train", "mixture-1d", "train.seed=-1"], "train.seed must be an integer from 0"),
    (["train", "mixture-1d", "data.name=mnist"], "unknown dataset 'mnist'"),
    (["train", "bad.yaml"], "cannot parse config 'bad.yaml': did not find expected node content at line 3"),
    (["train", "runs/nonexistent", "--resume"], "does not exist: it is neither a run directory"),
    (["train", "mixture-1d", "--out", "good"], "already holds a run; add --resume"),
    (["train", "mixture-1d", "--device", "cuda"], "no CUDA GPU is visible"),
    (["train", "mixture-1d", "data.name=array", "data.options.path=floats.npy", "data.options.kind=discrete",
      "data.options.num_classes=2"], "discrete data needs integer class indices, got float64"),
    (["train", "mixture-1d", "data.name=array", "data.options.path=strings.npy", "data.options.kind=continuous"],
     "give a numeric array"),
    (["train", "mixture-1d", "data.name=array", "data.options.path=floats.npy", "data.options.kind=continuous"],
     "the dataset has 45 examples, fewer than one global batch of 256"),
    (["train", "mixture-1d", "data.name=array", "data.options.path=huge.npy", "data.options.kind=continuous",
      "train.batch_size=16", "--no-progress"], "the data holds one value only (1e+25); nothing to learn"),
    (["train", "mixture-1d", "train.lr=1", "train.grad_clip=0", "train.warmup_steps=0", "train.weight_decay=1e30",
      "--no-progress"], "non-finite loss at step 2, before the first checkpoint"),
    (["train", "mixture-1d", "train.lr=1e38"], "train.lr must be in (0, 1]"),
    (["sample", "runs/nonexistent"], "does not exist or is not a folder"),
    (["sample", "corrupt"], "SHA-256 checksum"),
    (["sample", "good", "--steps", "0"], "steps must be a positive integer, got 0"),
    (["sample", "good", "--sampler", "fast"], "unknown sampler 'fast' for a bfn model; choose one of"),
    (["sample", "good", "--label", "3"], "this model is unconditional"),
]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the --device cuda mistake needs a machine without a GPU")
@pytest.mark.parametrize(("args", "needle"), MISTAKES, ids=[" ".join(a)[:40] for a, _ in MISTAKES])
def test_newcomer_mistakes_give_one_line_errors(cli_files: Path, args: list[str], needle: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if args[0] == "train" and "--out" not in args:
        args = [*args, "--out", "new-run"]
    proc = subprocess.run([sys.executable, "-m", "bfn", *args], capture_output=True, text=True, cwd=cli_files,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (cli_files / "new-run" / "state.pt").exists()
