"""Keep freed tensor memory in the process on CPU, so that a training step stops paying for page faults.

PyTorch's CPU allocator hands large blocks to glibc malloc, which serves blocks above its mmap threshold (a
dynamic value capped at 32 MiB on 64-bit Linux) with fresh mmap()s and returns them with munmap() on free, and
trims the heap top back to the kernel above M_TRIM_THRESHOLD. A training step allocates and frees the same
activations every time, so every step re-maps them and touches every page again: about 20k minor page faults per
step of the official MNIST network at batch 8 (about 150-200k at batch 32, a tenth of the step in system time).
Raising both thresholds with mallopt(3) keeps those blocks in the heap, where the next step reuses them: after the
first step the faults drop to about zero. The numbers computed do not change.

`bfn train` calls it on CPU; it is a no-op off glibc Linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt(3) parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when glibc accepted both settings."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _done = ok
    return ok
