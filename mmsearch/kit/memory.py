"""Give freed memory back to the OS.

glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed,
so after one big image the next ones come from the heap arenas, one per decoding
thread, and their pages are never returned: a service that decoded a few
7000 x 7000 pages kept ~430 MB after answering (found by tests/fuzz). A fixed
threshold keeps every block from it up mmapped, and unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from mmsearch.kit.logging import get_logger

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
log = get_logger(__name__)


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Pin glibc's mmap threshold to `threshold_bytes` (0: leave glibc's dynamic default).
    True when it was set; False without glibc (musl, macOS: nothing to do there)."""
    if threshold_bytes <= 0:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    if not done:
        log.warning("mmap_threshold_not_set", threshold_bytes=threshold_bytes)
    return done
