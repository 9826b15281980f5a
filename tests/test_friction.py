"""Small things a new user meets: the thread policy on a busy machine, a resumed run that is already finished,
`bfn presets NAME`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bfn.cli import main
from bfn.config import list_presets
from bfn.utils.threads import auto_threads


def test_auto_threads_leave_the_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads, note = auto_threads(cores=2, load=1.2)  # one other job on two cores
    assert threads == 1 and "using 1 of 2 CPU threads" in note and "train.threads=N" in note
    assert auto_threads(cores=8, load=0.3) == (8, None)  # an idle machine: every core, nothing said
    assert auto_threads(cores=4, load=9.0)[0] == 1  # overloaded: still one thread
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(cores=8, load=7.5) == (3, None)  # the user's own setting wins


def test_busy_cores_come_from_cpu_time_now_not_the_load_average(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """/proc/stat is parsed (idle = idle + iowait), the busy share of the CPU time between two readings times the
    CPU count is the busy cores (a 1-minute load average still high from a job that just ended is not used), and
    the load average is the fallback where /proc/stat cannot be read."""
    from bfn.utils import threads

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n")
    assert threads._cpu_times(str(stat)) == (160, 1000)
    assert threads._cpu_times(str(tmp_path / "missing")) is None
    readings = iter([(160, 1000), (260, 1400)])  # 100 of 400 jiffies busy: a quarter of the machine
    monkeypatch.setattr(threads, "_cpu_times", lambda path="": next(readings))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.9, 1.0, 0.5))
    assert threads.busy_cores(seconds=0) == pytest.approx(1.0)
    monkeypatch.setattr(threads, "_cpu_times", lambda path="": None)
    assert threads.busy_cores(seconds=0) == 1.9


@pytest.mark.slow
def test_resuming_a_finished_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "mixture-1d", "model.network.kwargs.hidden=16", "train.steps=2", "train.batch_size=16",
            "train.threads=1", "sample.n=10", "sample.steps=2", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished all 2 steps (last logged loss" in out and "nothing to train" in out
    assert f"bfn train {tmp_path / 'run'} --resume train.steps=4" in out
    assert "examples/s" not in out and "nan" not in out


def test_presets_name_prints_the_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "mixture-1d"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["name"] == "mixture-1d" and text.startswith("# 1-D mixture")
    assert main(["presets", "nope"]) == 2
    assert "unknown preset 'nope'; choose one of " + ", ".join(list_presets()) in capsys.readouterr().err
