"""The cores this process may use, and one shared thread pool for numpy work (stage: all).

numpy releases the GIL in its array operations, so work split into chunks runs on every
core from threads (the entropy calibrator's KL search). ONNX Runtime sessions are sized from
`cores()` too (backends/onnxruntime_backend.create_session callers).
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
