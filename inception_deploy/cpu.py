"""The cores this process may use, and one shared thread pool for numpy work (stage: all).

numpy releases the GIL in its array operations, so work split into chunks runs on every
core from threads (the calibrators' threshold searches, a tensor per core:
collect.calibrate). ONNX Runtime sessions are sized from `cores()` too
(backends/onnxruntime_backend.create_session callers).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None


def cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_pool() -> ThreadPoolExecutor:
    """One worker per core, made on first use and kept for the process."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="inception-deploy")
    return _POOL


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere a no-op).

    A pass that frees a batch of large ORT outputs while the next is being made leaves freed
    chunks spread over the heap, which glibc keeps: over 256 Inception v3 images quantize's
    calibration step peaked at 1062 MB against about 880 at 64 images, and at 939 MB with a
    trim every 8 batches (one run each; no time cost measurable at 128 images, 25 s either
    way). Always mapping large arrays instead (MALLOC_MMAP_THRESHOLD_) gave 926 MB but made
    the pass 25% slower."""
    import ctypes
    import ctypes.util

    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
        if _LIBC is not False and not hasattr(_LIBC, "malloc_trim"):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None
