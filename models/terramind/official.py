"""Official TerraMind v1 checkpoint keys ↔ this package's wrappers (pure functions).

The official files hold the encoder-decoder's state dict without prefix (``encoder_embeddings.*``,
``decoder_embeddings.*``, ``encoder.*``, ``encoder_norm.*``, ``decoder_proj_context.*``,
``decoder.*``, ``decoder_norm.*``, ``mask_token``). terratorch maps them as follows (spec §3.6):

- ``TerraMindViT``: ``k → k``;
- ``TerraMindGeneration``: ``k → sampler.model.k``;
- ``TerraMindTiM``: ``k → k`` and ``k → sampler.model.k`` (both copies get the same values).

``tokenizer.*`` keys come from the tokenizer files, and ``missing_mod_token`` (concat merge) only
from fine-tuned checkpoints. Band subsets are sliced from the full pretrained patch embedding.
``pos_emb`` buffers and the LayerNorms' zero ``bias`` buffers are recomputable: when a checkpoint
lacks them, ``init_deterministic_buffers`` recreates them (sin-cos tables, zeros).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from .backbone import TerraMindViT, select_band_columns
from .blocks import LayerNorm
from .embeddings import embedding_spec

SAMPLER_PREFIX = "sampler.model."


def official_key(model_key: str) -> str | None:
    """The official checkpoint key that fills ``model_key`` (None: not from the official file)."""
    if model_key.startswith("tokenizer.") or model_key == "missing_mod_token":
        return None
    if model_key.startswith(SAMPLER_PREFIX):
        return model_key[len(SAMPLER_PREFIX) :]
    return model_key


def _band_subsets(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return dict(model.band_indices) if isinstance(model, TerraMindViT) else {}


def recomputable_keys(model: nn.Module) -> set[str]:
    """Model keys ``init_deterministic_buffers`` can recreate: sin-cos ``pos_emb``, LayerNorm zero ``bias``."""
    keys: set[str] = set()
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, LayerNorm) and not module.has_bias_parameter:
            keys.add(f"{dot}bias")
        elif hasattr(module, "pos_emb") and hasattr(module, "init_deterministic_buffers"):
            keys.add(f"{dot}pos_emb")
    return keys


def official_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{official key: shape}`` of everything ``model`` takes from an official checkpoint.

    Patch embeddings of band subsets are listed with their full pretrained shape.
    """
    subsets = _band_subsets(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        official = official_key(key)
        if official is None:
            continue
        shape = tuple(tensor.shape)
        for modality in subsets:
            if official == f"encoder_embeddings.{modality}.proj.weight":
                pixels = shape[1] // len(subsets[modality])
                shape = (shape[0], pixels * int(embedding_spec(modality).num_channels))  # type: ignore[arg-type]
        shapes[official] = shape
    return shapes


def from_official_state_dict(
    model: nn.Module, official: Mapping[str, torch.Tensor], *, allow_missing_buffers: bool = True
) -> dict[str, torch.Tensor]:
    """Model-keyed state dict built from an official one (strict: shapes must match).

    Raises ``CheckpointError`` for a shape mismatch or a missing key that cannot be recomputed.
    Returned tensors are the checkpoint's (band subsets: sliced copies).
    """
    subsets = _band_subsets(model)
    recomputable = recomputable_keys(model) if allow_missing_buffers else set()
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for key, tensor in model.state_dict(keep_vars=True).items():
        source = official_key(key)
        if source is None:
            continue
        if source not in official:
            if key not in recomputable:
                missing.append(source)
            continue
        value = official[source]
        for modality, indices in subsets.items():
            if source == f"encoder_embeddings.{modality}.proj.weight":
                embedding = model.encoder_embeddings[modality]
                value = select_band_columns(value, indices, embedding.patch_size[0] * embedding.patch_size[1])
        if tuple(value.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint tensor '{source}' has shape {tuple(value.shape)}, the model expects {tuple(tensor.shape)} "
                f"for '{key}'; is it a checkpoint of another TerraMind size?"
            )
        out[key] = value
    if missing:
        raise CheckpointError(
            f"{len(missing)} tensor(s) missing from the checkpoint, e.g. {', '.join(missing[:5])}; "
            "is it a TerraMind v1 checkpoint with these modalities?"
        )
    return out


def modules_with_deterministic_buffers(model: nn.Module) -> Iterator[nn.Module]:
    """Every sub-module (once) that can recreate its fixed buffers."""
    seen: set[int] = set()
    for module in model.modules():
        if hasattr(module, "init_deterministic_buffers") and id(module) not in seen:
            seen.add(id(module))
            yield module


def init_deterministic_buffers(model: nn.Module, only_meta: bool = True) -> int:
    """Recreate fixed buffers (sin-cos tables, zero LayerNorm biases) on CPU; returns the count.

    With ``only_meta`` only modules that still hold a buffer on the ``meta`` device are touched
    (the loader's case after ``load_state_dict(assign=True)``).
    """
    count = 0
    for module in modules_with_deterministic_buffers(model):
        tensors = list(module.buffers(recurse=False)) + list(module.parameters(recurse=False))
        if only_meta and not any(t.is_meta for t in tensors):
            continue
        module.init_deterministic_buffers()
        count += 1
    return count


def load_official_state_dict(model: nn.Module, official: Mapping[str, torch.Tensor], *, assign: bool = False) -> None:
    """Load an official checkpoint into a wrapper: map keys, slice bands, recreate absent buffers, re-tie."""
    mapped = from_official_state_dict(model, official)
    result = model.load_state_dict(mapped, strict=False, assign=assign)
    unexpected = list(result.unexpected_keys)
    if unexpected:
        raise CheckpointError(f"unexpected keys after mapping: {unexpected[:5]}")
    tie = getattr(model, "tie_weights", None)
    if tie is not None:
        tie()
    init_deterministic_buffers(model, only_meta=True)


def untrained_official_state_dict(model: nn.Module, include_buffers: bool = True) -> dict[str, torch.Tensor]:
    """An official-layout checkpoint for ``model`` filled by the deterministic untrained rule.

    Used by the goldens' tests and by the offline demo (outputs then tagged UNTRAINED). Without
    ``include_buffers`` the recomputable buffers are left out, as a parameters-only file would.
    """
    from ..weights.untrained import deterministic_tensor

    skip = {official_key(k) for k in recomputable_keys(model)} if not include_buffers else set()
    return {
        key: deterministic_tensor(key, shape)
        for key, shape in official_shapes(model).items()
        if key not in skip
    }
