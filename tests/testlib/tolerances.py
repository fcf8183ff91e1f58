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
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_logits_match(ours, ref, rtol: float = RTOL) -> None:
    """Class logits ``(B, K, ...)`` within ``rtol`` of the reference, and the same argmax wherever the
    reference's two best classes are further apart than that tolerance (near-ties may flip)."""
    ours, ref = _array(ours), _array(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    rel = relative_error(ours, ref)
    assert rel <= rtol, f"max relative deviation {rel:.2e} > {rtol:g}"
    top2 = np.sort(ref, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) < rtol * np.abs(ref).max()
    differ = ours.argmax(1) != ref.argmax(1)
    assert not (differ & ~tie).any(), f"{int((differ & ~tie).sum())} argmax differences away from ties"
