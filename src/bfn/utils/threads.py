"""How many CPU threads a training run uses when `train.threads=0` (auto): the cores that are free now.

PyTorch's default (one thread per core) is right on an idle machine, but when other jobs share the cores its
OpenMP threads wait on each other and a run gets several times slower (measured in issue 19: 3x with one other
job on 2 cores). So "auto" takes the cores this process may use, minus the cores that other jobs keep busy right
now, and at least one; an explicit OMP_NUM_THREADS is respected. "Right now" is the CPU time the kernel counted
over a quarter of a second (/proc/stat), not the 1-minute load average: that average decays with a one-minute time
constant, so just after a two-thread job has ended it still reads about 1 (0.8 was seen), and a run started then
(e.g. `bfn train` right after `bfn eval`) used to get one thread for its whole life. Where /proc/stat is missing,
the load average is the fallback.
"""

from __future__ import annotations

import os
import time

#: how long `busy_cores` watches the CPUs
SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times(path: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot from the first line of /proc/stat; None where unreadable.
    Idle time is `idle` + `iowait` (fields 4 and 5 of "cpu  user nice system idle iowait irq softirq steal")."""
    try:
        with open(path) as f:
            fields = f.readline().split()
        if not fields or fields[0] != "cpu":
            return None
        values = [int(v) for v in fields[1:9]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many cores other work keeps busy now: the busy share of all CPUs' time over `seconds` (this process
    sleeps meanwhile) times the CPU count; the 1-minute load average where /proc/stat is missing; 0 if neither."""
    before = _cpu_times()
    if before is not None:
        time.sleep(seconds)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            share = (after[0] - before[0]) / (after[1] - before[1])
            return share * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def auto_threads(cores: int | None = None, load: float | None = None) -> tuple[int, str | None]:
    """(threads, a note or None): the free cores, round(cores - load), between 1 and cores; the note says how
    many were chosen and how to change it when that is fewer than the cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    cores = usable_cores() if cores is None else cores
    if env.isdecimal() and int(env) > 0:
        return min(int(env), cores), None
    load = busy_cores() if load is None else load
    free = max(1, min(cores, round(cores - load)))
    if free == cores:
        return free, None
    return free, (f"train.threads=0 (auto): using {free} of {cores} CPU threads ({load:.1f} cores busy with other "
                  "jobs); set train.threads=N to choose")
