"""How goldens are compared: the largest deviation relative to the largest reference value."""

from __future__ import annotations

import numpy as np

RTOL = 1e-4  # the project's tolerance on float outputs: max|ours - ref| / max|ref|


def relative_error(ours, ref) -> float:
    """``max|ours - ref| / max|ref|`` (torch tensors or arrays of the same shape)."""
    ours, ref = _array(ours), _array(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)
