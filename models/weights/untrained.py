"""Deterministic untrained weights: one rule that fills any state dict the same way everywhere.

Used by (1) the golden script, which fills the reference (terratorch) models with it, (2) the tests,
which fill this package's models with it and compare, and (3) the demo when the official weights
are not reachable (its outputs are then tagged UNTRAINED). It is never used silently.

Rule, per state-dict key ``k`` and shape ``s`` (float32 unless the target is an integer buffer):

1. ``seed_key(k)`` folds tensors that the model ties or shares onto one name, so aliases get
   identical values: ``*.to_logits.weight`` → ``*.token_emb.weight`` (tied output head),
   ``decoder_embeddings.M.mod_emb`` → ``encoder_embeddings.M.mod_emb`` (shared modality embedding),
   ``sampler.model.encoder_embeddings.*`` → ``encoder_embeddings.*`` (TiM shares its embeddings).
2. ``g = torch.Generator().manual_seed(zlib.crc32(seed_key(k)))`` and ``r = torch.randn(s, generator=g)``.
3. By the key's last component and rank:
   - ``running_var``: ``0.5 + rand(s)`` (from the same generator, instead of randn);
   - ``running_mean``: ``0.2 r``; integer buffers (``num_batches_tracked``): ones;
   - rank ≤ 1 ``weight`` (norm scales): ``1 + 0.2 r``; rank ≤ 1 ``bias``: ``0.1 r``;
   - ``pos_emb``, ``mod_emb``, ``mask_token``, ``missing_mod_token``: ``0.5 r``;
   - everything else (linear, conv, embedding tables): ``r / sqrt(numel / s[0])``.

Every tensor is non-zero, so layers the reference zero-initialises (UNet output convs, ...) matter.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

import torch

_EMBEDDING_LEAVES = ("pos_emb", "mod_emb", "mask_token", "missing_mod_token")


def seed_key(key: str) -> str:
    """The name whose hash seeds ``key`` (aliases map onto one name)."""
    k = key.replace("sampler.model.encoder_embeddings.", "encoder_embeddings.")
    if k.endswith(".to_logits.weight"):
        k = k[: -len("to_logits.weight")] + "token_emb.weight"
    if k.endswith(".mod_emb") and "decoder_embeddings." in k:
        k = k.replace("decoder_embeddings.", "encoder_embeddings.")
    return k


def deterministic_tensor(key: str, shape: Iterable[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The value the rule assigns to state-dict entry ``key`` of ``shape``."""
    shape = tuple(int(n) for n in shape)
    if not dtype.is_floating_point:
        return torch.ones(shape, dtype=dtype)
    g = torch.Generator().manual_seed(zlib.crc32(seed_key(key).encode("utf-8")))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return (0.5 + torch.rand(shape, generator=g)).to(dtype)
    r = torch.randn(shape, generator=g)
    if leaf == "running_mean":
        out = 0.2 * r
    elif len(shape) <= 1 and leaf == "weight":
        out = 1.0 + 0.2 * r
    elif len(shape) <= 1 and leaf == "bias":
        out = 0.1 * r
    elif leaf in _EMBEDDING_LEAVES:
        out = 0.5 * r
    else:
        fan_in = max(1, r.numel() // max(1, shape[0])) if shape else 1
        out = r / math.sqrt(fan_in)
    return out.to(dtype)


def deterministic_state_dict(
    shapes: Mapping[str, tuple[Iterable[int], torch.dtype] | Iterable[int]],
) -> dict[str, torch.Tensor]:
    """Fill every key of ``shapes`` (key → shape, or key → (shape, dtype)) by the rule."""
    out: dict[str, torch.Tensor] = {}
    for key, spec in shapes.items():
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], torch.dtype):
            out[key] = deterministic_tensor(key, spec[0], spec[1])
        else:
            out[key] = deterministic_tensor(key, spec)  # type: ignore[arg-type]
    return out


def fill_module_(module: torch.nn.Module, prefix: str = "") -> torch.nn.Module:
    """Fill a materialised module's persistent state in place by the rule (keys get ``prefix``)."""
    with torch.no_grad():
        for key, tensor in module.state_dict(keep_vars=True).items():
            tensor.copy_(deterministic_tensor(prefix + key, tensor.shape, tensor.dtype))
    return module
