"""How many CPU threads a training run uses when `train.threads=0` (auto): the cores that are free now.

PyTorch's default (one thread per core) is right on an idle machine, but when other jobs share the cores its
OpenMP threads wait on each other and a run gets several times slower (measured in issue 19: 3x with one other
job on 2 cores). So "auto" takes the cores this process may use, minus the load that is already running (the
1-minute load average), and at least one; an explicit OMP_NUM_THREADS is respected.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores() -> float:
    """The 1-minute load average (runnable processes), 0 where the OS does not report one."""
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
    return free, (f"train.threads=0 (auto): using {free} of {cores} CPU threads (load average {load:.1f} from other "
                  "jobs); set train.threads=N to choose")
