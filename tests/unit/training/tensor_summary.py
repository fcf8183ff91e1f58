"""Compact, checkable summaries of large tensors (gradients, weights) for the training goldens.

Storing every gradient of the decoder would take megabytes, so each tensor ``t`` under name ``k``
is stored as (1) ``t.flat[idx]`` at up to ``SAMPLES`` positions ``idx`` drawn from
``numpy.random.default_rng(crc32(k))`` (the whole tensor when it is small) and (2) whole-tensor
statistics: L2 norm, sum, max |t|, and two projections on fixed Gaussian vectors (seed
``crc32(k) ^ PROBE``). The projections catch any deviation spread over the tensor that the samples
miss. Shared by tools/goldens/training.py and the tests.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import torch

SAMPLES = 256
PROBE = 0x5EED


def sample_index(key: str, numel: int) -> np.ndarray:
    if numel <= SAMPLES:
        return np.arange(numel)
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    return np.sort(rng.choice(numel, SAMPLES, replace=False))


def _probes(key: str, numel: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")) ^ PROBE)
    return rng.standard_normal((2, numel))


def summarise(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``{prefix:key:values, prefix:key:stats}`` for every tensor."""
    out = {}
    for key, t in tensors.items():
        flat = t.detach().double().cpu().numpy().ravel()
        out[f"{prefix}:{key}:values"] = flat[sample_index(key, flat.size)].astype(np.float32)
        stats = [np.linalg.norm(flat), flat.sum(), np.abs(flat).max(initial=0.0), *(_probes(key, flat.size) @ flat)]
        out[f"{prefix}:{key}:stats"] = np.asarray(stats, np.float64)
    return out


def deviation(prefix: str, ours: Mapping[str, torch.Tensor], golden: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per tensor: the largest deviation of samples and statistics, relative to the tensor's scale.

    Scale: max |t| of the reference for samples, norm and max; the reference's L2 norm for the two
    Gaussian projections (their deviation is about ||ours - ref||_2, so this is the relative L2
    error); the L2 norm times sqrt(numel) for the sum (its Cauchy-Schwarz bound).
    """
    keys = sorted(k.split(":")[1] for k in golden if k.startswith(f"{prefix}:") and k.endswith(":values"))
    if sorted(ours) != keys:
        raise AssertionError(f"{prefix}: tensors differ: only ours {sorted(set(ours) - set(keys))[:5]}, "
                             f"only golden {sorted(set(keys) - set(ours))[:5]}")  # fmt: skip
    mine = summarise(prefix, ours)
    out = {}
    for key in keys:
        ref_v, our_v = golden[f"{prefix}:{key}:values"].astype(np.float64), mine[f"{prefix}:{key}:values"].astype(np.float64)
        ref_s, our_s = golden[f"{prefix}:{key}:stats"], mine[f"{prefix}:{key}:stats"]
        scale = max(ref_s[2], 1e-30)
        numel = ours[key].numel()
        norm = max(ref_s[0], 1e-30)
        out[key] = float(max(np.abs(our_v - ref_v).max(initial=0.0) / scale, abs(our_s[0] - ref_s[0]) / scale,
                             abs(our_s[2] - ref_s[2]) / scale, abs(our_s[1] - ref_s[1]) / (norm * np.sqrt(numel)),
                             *(abs(our_s[i] - ref_s[i]) / norm for i in (3, 4))))  # fmt: skip
    return out
