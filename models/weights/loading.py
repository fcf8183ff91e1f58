"""Strict loading of checkpoints onto modules built on the meta device: THE one loading path.

``load_checkpoint_(module, checkpoint, mapping, what=...)`` is what every model takes, whether its
tensors come from a file (``models/build.py``, ``models/segmentation``) or from the deterministic
untrained fill (``untrained_checkpoint``: the offline demo, tests and benchmarks):

1. band subsets: a module that declares ``band_indices`` sees the file through ``bands.band_subset_view``;
2. ``load_into_``: the checkpoint is checked strictly (``matching.match_keys``), floating tensors are
   converted to the module's dtype where they differ, and they are assigned with
   ``load_state_dict(strict=False, assign=True)`` so that each tensor exists once (memory-mapped
   ``torch.load`` tensors stay mapped; nothing is initialised and then overwritten). Tensors shared
   under several names (tied heads, shared modality embeddings, TiM's shared embedding modules) are
   assigned once and re-tied;
3. ``materialise_``: every module with ``init_deterministic_buffers`` recreates the buffers the file
   did not provide, and no meta tensor may be left.

``untrained_checkpoint`` makes the deterministic stand-in for a checkpoint (models/weights/
untrained.py rule, applied to the *checkpoint* key names and shapes so that aliases, the
reference's key mapping and band subsets give the same values as the golden scripts).
"""

from __future__ import annotations

import torch

from ..core.errors import CheckpointError
from .bands import band_subset_view, pretrained_proj_shapes
from .matching import (
    KeyMapping,
    MatchReport,
    alias_groups,
    describe_checkpoint,
    expected_layout,
    match_keys,
)
from .reading import Checkpoint, TensorDictCheckpoint
from .untrained import deterministic_tensor


def load_checkpoint_(
    module: torch.nn.Module, checkpoint: Checkpoint, mapping: KeyMapping, *, what: str = "the model"
) -> MatchReport:
    """Fill ``module`` (built on ``meta`` or not) from ``checkpoint`` under ``mapping``; strict.

    The whole loading path (see the module docstring); ``what`` names the model in error messages
    (e.g. "model 'terramind_v1_tokenizer_dem'"). Raises ``CheckpointError`` naming every missing,
    unexpected and mis-shaped key, or any tensor still without a value.
    """
    report = load_into_(module, band_subset_view(checkpoint, module), mapping, what=what)
    materialise_(module, what=what)
    return report


def load_into_(module: torch.nn.Module, checkpoint: Checkpoint, mapping: KeyMapping, *, what: str) -> MatchReport:
    """Fill the tensors of ``module`` that ``mapping`` covers from ``checkpoint``; strict.

    ``what`` names the model in error messages (e.g. "model 'terramind_v1_tokenizer_dem'").
    Raises ``CheckpointError`` listing every missing, unexpected and mis-shaped key.
    """
    layout = expected_layout(module, mapping)
    aliases = alias_groups(module)
    shapes = checkpoint.shapes()
    report = match_keys(shapes, layout, mapping, aliases)
    if not report.ok:
        raise CheckpointError(
            f"checkpoint file '{checkpoint.path}' does not fit {what}; the file looks like "
            f"{describe_checkpoint(shapes)}. Nothing was loaded:\n{report.problems()}"
        )
    alias_of = {k: tuple(g) for g in aliases for k in g}
    state: dict[str, torch.Tensor] = {}
    filled_groups: set[tuple[str, ...]] = set()
    for module_key, ckpt_key in report.assignments.items():
        group = alias_of.get(module_key)
        if group is not None:
            if group in filled_groups:
                continue  # one value per shared tensor; the other names are re-tied below
            filled_groups.add(group)
        state[module_key] = _as_dtype(checkpoint[ckpt_key], layout[module_key].dtype, ckpt_key, checkpoint)
    module.load_state_dict(state, strict=False, assign=True)
    _retie_(module, aliases, state)
    return report


def materialise_(module: torch.nn.Module, *, what: str) -> None:
    """Recompute deterministic buffers still on meta, then require that no meta tensor is left."""
    for _, sub in module.named_modules():
        init = getattr(sub, "init_deterministic_buffers", None)
        own = [*sub._buffers.items(), *sub._parameters.items()]
        if not callable(init) or not any(t is not None and t.is_meta for _, t in own):
            continue
        loaded_buffers = {n: b for n, b in sub._buffers.items() if b is not None and not b.is_meta}
        loaded_params = {n: p for n, p in sub._parameters.items() if p is not None and not p.is_meta}
        init()
        sub._buffers.update(loaded_buffers)  # values from the checkpoint win over recomputed ones
        sub._parameters.update(loaded_params)
    left = meta_tensor_names(module)
    if left:
        shown = ", ".join(left[:20]) + (f", ... and {len(left) - 20} more" if len(left) > 20 else "")
        raise CheckpointError(f"{what} still has {len(left)} tensor(s) without values after loading: {shown}")


def meta_tensor_names(module: torch.nn.Module) -> list[str]:
    """Parameters, buffers and plain tensor attributes that are still on the meta device."""
    names = []
    for prefix, sub in module.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for kind in (sub._parameters, sub._buffers):
            names += [dot + n for n, t in kind.items() if t is not None and t.is_meta]
        names += [dot + n for n, t in vars(sub).items() if isinstance(t, torch.Tensor) and t.is_meta]
    return sorted(set(names))


def checkpoint_layout(module: torch.nn.Module, mapping: KeyMapping) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The checkpoint keys (and shapes, dtypes) a file for this module must provide, in order.

    Band-subset patch embeddings are listed with their full pretrained shape (the file's).
    """
    full = pretrained_proj_shapes(module)
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for module_key, expected in expected_layout(module, mapping).items():
        key = mapping.checkpoint_key(module_key)
        out.setdefault(key, (full.get(key, expected.shape), expected.dtype))
    return out


def untrained_checkpoint(
    module: torch.nn.Module, mapping: KeyMapping, *, recomputable: bool = True
) -> TensorDictCheckpoint:
    """A complete checkpoint for ``module`` (file layout) filled by the deterministic untrained rule.

    With ``recomputable=False`` the buffers the module recomputes (sin-cos ``pos_emb``, LayerNorm
    zero ``bias``) are left out, as in a parameters-only file; loading then recreates them.
    """
    skip = set()
    if not recomputable:
        skip = {mapping.checkpoint_key(k) for k, e in expected_layout(module, mapping).items() if e.recomputable}
    tensors = {
        key: deterministic_tensor(key, shape, dtype)
        for key, (shape, dtype) in checkpoint_layout(module, mapping).items()
        if key not in skip
    }
    return TensorDictCheckpoint(tensors, container="untrained")


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype, key: str, checkpoint: Checkpoint) -> torch.Tensor:
    if tensor.dtype == dtype:
        return tensor
    if tensor.dtype.is_floating_point == dtype.is_floating_point:
        return tensor.to(dtype)  # e.g. fp16/bf16 checkpoints into the fp32 model
    raise CheckpointError(
        f"checkpoint file '{checkpoint.path}': key '{key}' has dtype {tensor.dtype}, the model needs {dtype}"
    )


def _retie_(module: torch.nn.Module, aliases: list[list[str]], state: dict[str, torch.Tensor]) -> None:
    """Point every name of a shared tensor at the one object that was assigned."""
    for group in aliases:
        source = next((k for k in group if k in state), None)
        if source is None:
            continue
        owner, leaf = _owner(module, source)
        tensor = owner._parameters.get(leaf) if leaf in owner._parameters else owner._buffers.get(leaf)
        for name in group:
            if name == source:
                continue
            other, other_leaf = _owner(module, name)
            if other_leaf in other._parameters:
                other._parameters[other_leaf] = tensor  # type: ignore[assignment]
            else:
                other._buffers[other_leaf] = tensor


def _owner(module: torch.nn.Module, key: str) -> tuple[torch.nn.Module, str]:
    path, _, leaf = key.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf
