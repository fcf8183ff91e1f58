"""TerraTorch's ``TemporalWrapper``: one backbone run over every date, its features pooled over time.

Mirrors ``terratorch/models/utils.py::TemporalWrapper`` (1.2.11) operation for operation, with the
same attribute names (``encoder``, ``pooling``, ``features_permute_op``, ``subset_lengths``,
``reverse_permute_op``, ``out_channels``), so a checkpoint's ``model.encoder.encoder.*`` keys load
unchanged (the wrapper adds one ``encoder.`` level and owns no tensors itself).

Forward, for inputs ``(B, C, T, H, W)`` (a tensor, or ``{modality: (B, C_m, T, H, W)}`` with the
same ``B`` and ``T`` everywhere):

1. dates fold into the batch, date-major per sample: ``(B, C, T, H, W) → (B*T, C, H, W)`` (row
   ``b*T + t`` is sample ``b`` at date ``t``), and the encoder runs once on that batch;
2. every feature map is optionally permuted (``features_permute_op``) and unfolded to
   ``(B, T, ...)``: a conv map ``(B*T, C, h, w) → (B, T, C, h, w)``; ViT tokens
   ``(B*T, N, D) → (B, T, D, N, 1)``; multimodal dict features per modality;
3. ``subset_lengths`` (optional) first averages consecutive dates in groups (``[2, 3]``: dates 0-1
   and 2-4), giving ``T' = len(subset_lengths)`` "dates";
4. pooling over the (possibly grouped) dates: ``mean``/``max`` → ``(B, C, ...)``; ``diff`` (exactly
   two dates) → date 0 minus date 1; ``concat`` → ``(B, T'*C, ...)``, channel ``t*C + c`` (date-major);
   ``keep`` → ``(B, T', C, ...)`` unchanged;
5. the permutation is reversed, and ViT features go back to tokens: ``(B, C', N, 1) → (B, N, C')``
   (``keep``: ``(B, T', D, N, 1) → (B, T', N, D)``).

``out_channels`` is what the necks are built for: the encoder's for every pooling but ``concat``,
which multiplies each by ``n_timestamps`` (``None`` without it, as in the reference). Note that the
reference does this even when ``subset_lengths`` leave fewer groups than ``n_timestamps``; the
config reader refuses that combination (the necks would not fit the features).

Errors are typed (``ConfigError`` for settings, ``InputRasterError`` for inputs that do not fit;
both are ``ValueError`` like the reference's). Dimensions: ``B`` batch, ``T`` dates, ``C``
channels, ``H, W`` image size, ``N`` tokens, ``D`` token width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.errors import ConfigError, InputRasterError
from .temporal_config import temporal_problems


def reverse_permutation(permute_op: Sequence[int] | None) -> list[int] | None:
    """The permutation that undoes ``permute_op`` (``None`` for none)."""
    if permute_op is None:
        return None
    reverse = [0] * len(permute_op)
    for i, p in enumerate(permute_op):
        reverse[p] = i
    return reverse


class TemporalWrapper(nn.Module):
    """Run ``encoder`` on every date of ``(B, C, T, H, W)`` inputs and pool its features over time."""

    def __init__(
        self,
        encoder: nn.Module,
        pooling: str = "mean",
        n_timestamps: int | None = None,
        features_permute_op: Sequence[int] | None = None,
        subset_lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        problems = temporal_problems(pooling, n_timestamps, list(subset_lengths) if subset_lengths is not None else None)
        if problems:
            raise ConfigError("the temporal wrapper cannot be built: " + "; ".join(problems))
        self.encoder = encoder
        self.pooling = pooling
        self.n_timestamps = n_timestamps
        self.features_permute_op = list(features_permute_op) if features_permute_op is not None else None
        self.subset_lengths = [int(n) for n in subset_lengths] if subset_lengths is not None else None
        self.reverse_permute_op = reverse_permutation(self.features_permute_op)
        if hasattr(encoder, "out_channels"):
            channels = list(encoder.out_channels)
            if pooling == "concat":
                self.out_channels = None if n_timestamps is None else [c * n_timestamps for c in channels]
            else:
                self.out_channels = channels

    def pool_temporal(self, stacked: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, ...)`` → pooled features (module docstring, steps 3-4)."""
        t = stacked.shape[1]
        if self.subset_lengths is not None:
            if sum(self.subset_lengths) != t:
                raise InputRasterError(
                    f"the model groups its dates as {self.subset_lengths} (backbone_temporal_subset_lengths), "
                    f"which needs {sum(self.subset_lengths)} dates; the input has {t}"
                )
            groups = torch.split(stacked, self.subset_lengths, dim=1)  # each (B, T_i, C, ...)
            stacked = torch.stack([g.mean(dim=1) for g in groups], dim=1)  # (B, T', C, ...)
        if self.pooling == "concat":
            return stacked.flatten(1, 2)  # (B, T'*C, ...)
        if self.pooling == "max":
            return torch.max(stacked, dim=1).values  # (B, C, ...)
        if self.pooling == "diff":
            if stacked.shape[1] != 2:
                raise InputRasterError(
                    f"'diff' pooling compares exactly two dates (after backbone_temporal_subset_lengths grouping); "
                    f"the input has {stacked.shape[1]}"
                )
            return stacked[:, 0] - stacked[:, 1]  # (B, C, ...)
        if self.pooling == "mean":
            return torch.mean(stacked, dim=1)  # (B, C, ...)
        return stacked  # keep: (B, T', C, ...)

    @staticmethod
    def reshape_5d(feature: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """Encoder output on the folded batch → ``(B, T, C, ...)`` (ViT tokens get a size-1 last dim)."""
        if feature.dim() == 4:  # conv map (B*T, C, h, w)
            return feature.reshape(b, t, *feature.shape[1:])  # (B, T, C, h, w)
        if feature.dim() == 3:  # tokens (B*T, N, D)
            n, d = feature.shape[-2:]
            return feature.reshape(b, t, n, d).permute(0, 1, 3, 2).unsqueeze(-1)  # (B, T, D, N, 1)
        raise InputRasterError(f"the temporal wrapper expects 3-D or 4-D encoder features, got {feature.dim()}-D")

    @staticmethod
    def vit_postprocess(feature: torch.Tensor) -> torch.Tensor:
        """``(..., D, N, 1)`` → ``(..., N, D)``; anything without the size-1 last dim is returned as is.

        ``transpose(-2, -1)`` is the reference's ``movedim(-1, -2)`` (the same view); the TorchScript
        ONNX exporter writes ``movedim`` as a Transpose with a negative permutation entry, which
        ONNX Runtime refuses to load.
        """
        if feature.shape[-1] != 1:
            return feature
        return feature.squeeze(-1).transpose(-2, -1)  # (..., N, D): the reference's movedim(-1, -2)

    @staticmethod
    def permute_op(feature: torch.Tensor, op: list[int] | None) -> torch.Tensor:
        if op is None:
            return feature
        if len(op) != feature.dim():
            raise InputRasterError(
                f"backbone_temporal_features_permute_op {op} has {len(op)} entries for {feature.dim()}-D features"
            )
        return torch.permute(feature, op)

    def _pool_one(self, feature: torch.Tensor, b: int, t: int) -> torch.Tensor:
        feature = self.permute_op(feature, self.features_permute_op)
        pooled = self.pool_temporal(self.reshape_5d(feature, b, t))
        pooled = self.permute_op(pooled, self.reverse_permute_op)
        return self.vit_postprocess(pooled) if pooled.shape[-1] == 1 else pooled

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> list:
        """Pooled features per encoder output of ``(B, C, T, H, W)`` inputs (a tensor or a modality dict)."""
        is_dict = isinstance(x, Mapping)
        sample = next(iter(x.values())) if is_dict else x  # type: ignore[union-attr]
        if sample.dim() != 5:
            raise InputRasterError(f"a multi-temporal model takes inputs (B, C, T, H, W), got {tuple(sample.shape)}")
        b, t = sample.shape[0], sample.shape[2]
        if is_dict:
            odd = {k: tuple(v.shape) for k, v in x.items() if v.dim() != 5 or (v.shape[0], v.shape[2]) != (b, t)}  # type: ignore[union-attr]
            if odd:  # the reference would fold them into a wrong batch; say so instead
                raise InputRasterError(f"every input needs the same batch size {b} and number of dates {t}; got {odd}")
            flat: torch.Tensor | dict[str, torch.Tensor] = {
                k: v.permute(0, 2, 1, 3, 4).reshape(-1, v.shape[1], *v.shape[3:])  # (B*T, C_m, H, W)
                for k, v in x.items()  # type: ignore[union-attr]
            }
        else:
            flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, *x.shape[1:2], *x.shape[3:])  # type: ignore[union-attr]
        features = self.encoder(flat)
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        out: list = []
        for feature in features:
            if isinstance(feature, Mapping):  # multimodal dict features
                out.append({k: self._pool_one(v, b, t) for k, v in feature.items()})
            else:
                out.append(self._pool_one(feature, b, t))
        return out
