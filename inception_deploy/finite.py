"""Non-finite numbers are errors, never "0 error" (shared by every stage boundary).

NaN compares false with everything, so a NaN slips through `max`, `<=` and `argmax` checks
and comes out as "max abs error 0, cosine 1, top-1 agreement 100%". Each boundary (weights
loaded, a data batch, calibration statistics and scales, outputs compared) asks
`first_non_finite` and raises with where the first bad value was seen.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def first_non_finite(values) -> Optional[tuple[tuple[int, ...], float]]:
    """(index, value) of the first NaN/Inf in an array or torch tensor, or None when all are finite.
    Integer arrays are always finite."""
    if hasattr(values, "detach"):  # a torch tensor: check it there, without copying it to numpy first
        import torch

        if not (values.is_floating_point() or values.is_complex()):
            return None
        bad = ~torch.isfinite(values.detach())
        if not bool(bad.any()):
            return None
        flat = int(torch.argmax(bad.reshape(-1).to(torch.uint8)))
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(values.shape))) if values.dim() else ()
        return index, float(values.detach().reshape(-1)[flat])
    array = np.asarray(values)
    if array.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    flat = int(np.argmax(bad.reshape(-1)))
    index = tuple(int(i) for i in np.unravel_index(flat, array.shape)) if array.ndim else ()
    return index, float(array.reshape(-1)[flat])


def describe(found: tuple[tuple[int, ...], float]) -> str:
    """'NaN at [0, 3]' for the result of first_non_finite."""
    index, value = found
    name = "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return f"{name} at [{', '.join(map(str, index))}]" if index else name
