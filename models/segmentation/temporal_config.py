"""The multi-temporal and tiled-inference settings of a TerraTorch fine-tuning config (torch-free).

``TemporalSpec`` is TerraTorch's ``TemporalWrapper`` as the config asks for it: the
``backbone_use_temporal`` / ``backbone_temporal_*`` arguments that
``terratorch/models/utils.py::_get_backbone`` pops before building the backbone (pooling, number
of dates, date groups), plus what the data module did with the dates (ImpactMesh repeats a
one-date file, the DEM, over every date). A multi-temporal model takes every input as
``(B, C, T, H, W)`` (``SegmentationConfig.input_layout``).

``TiledInferenceSpec`` is the task's ``tiled_inference_parameters`` (the keyword arguments of
``terratorch/tasks/tiled_inference.py::tiled_inference``) with that function's defaults filled in,
recorded so a run can default to them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

POOLINGS = ("mean", "max", "diff", "keep", "concat")
# backbone_* keys _get_backbone pops for the wrapper (without the "backbone_" prefix)
TEMPORAL_KEYS = ("use_temporal", "temporal_pooling", "temporal_concat", "temporal_n_timestamps",
                 "temporal_features_permute_op", "temporal_subset_lengths")  # fmt: skip
TILED_KEYS = ("crop", "stride", "delta", "h_crop", "w_crop", "h_stride", "w_stride", "average_patches",
              "blend_overlaps", "batch_size", "padding")  # fmt: skip
_TILED_IGNORED = ("verbose", "device", "out_channels")  # no effect on the result (out_channels is deprecated)


def temporal_problems(pooling: str, n_timestamps: int | None, subset_lengths: list[int] | None) -> list[str]:
    """What the reference's ``TemporalWrapper.__init__`` refuses, phrased with the config keys."""
    if pooling not in POOLINGS:
        return [f"backbone_temporal_pooling '{pooling}' (supported: {', '.join(POOLINGS)})"]
    problems = []
    if subset_lengths is not None:
        if pooling == "diff" and len(subset_lengths) != 2:
            problems.append(
                f"backbone_temporal_pooling 'diff' needs exactly two groups in backbone_temporal_subset_lengths, "
                f"got {len(subset_lengths)}: {subset_lengths}"
            )
        if n_timestamps is not None and sum(subset_lengths) != n_timestamps:
            problems.append(
                f"backbone_temporal_subset_lengths {subset_lengths} add up to {sum(subset_lengths)}, but "
                f"backbone_temporal_n_timestamps is {n_timestamps}; they must be equal"
            )
    return problems


@dataclass(frozen=True)
class TemporalSpec:
    """TerraTorch's ``TemporalWrapper`` settings of a fine-tuned model."""

    pooling: str = "mean"  # mean | max | diff | keep | concat
    n_timestamps: int | None = None  # backbone_temporal_n_timestamps (needed by 'concat')
    subset_lengths: tuple[int, ...] | None = None  # dates averaged in groups before pooling
    features_permute_op: tuple[int, ...] | None = None
    repeat_single_date: bool = False  # the data module repeats a one-date input over every date

    @property
    def dates(self) -> int | None:
        """The number of dates a run must give, or ``None`` when the model takes any number.

        ``subset_lengths`` fix it to their sum, ``concat`` to ``n_timestamps`` (the decoder's channel
        count depends on it), ``diff`` to 2; ``mean``/``max`` pool any number of dates.
        """
        if self.subset_lengths is not None:
            return sum(self.subset_lengths)
        if self.pooling == "concat":
            return self.n_timestamps
        if self.pooling == "diff":
            return 2
        return None

    @property
    def trained_dates(self) -> int | None:
        """The number of dates the model was trained with, as far as the config says."""
        return self.dates if self.dates is not None else self.n_timestamps

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TemporalSpec:
        d = dict(d)
        for key in ("subset_lengths", "features_permute_op"):
            d[key] = tuple(d[key]) if d.get(key) is not None else None
        return cls(**d)


def _int_list(value: Any) -> list[int] | None:
    if not isinstance(value, (list, tuple)) or not value:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return [int(v) for v in value]


def temporal_spec_from_args(
    bb: dict[str, Any], *, tim: bool, repeat_single_date: bool, problems: list[str], notes: list[str]
) -> TemporalSpec | None:
    """Pop the wrapper's keys from ``bb`` (``backbone_*`` args, prefix removed); ``None`` without the wrapper."""
    settings = {k: bb.pop(k) for k in TEMPORAL_KEYS if k in bb}
    if not settings.get("use_temporal"):
        if set(settings) - {"use_temporal"}:
            notes.append("backbone_temporal_* settings are ignored: backbone_use_temporal is not set (as in TerraTorch)")
        return None
    pooling = settings.get("temporal_pooling", "mean")
    n = settings.get("temporal_n_timestamps")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        problems.append(f"backbone_temporal_n_timestamps {n!r} (a positive integer is needed)")
        n = None
    subsets_raw = settings.get("temporal_subset_lengths")
    subsets = _int_list(subsets_raw)
    if subsets_raw is not None and (subsets is None or min(subsets) < 1):
        problems.append(f"backbone_temporal_subset_lengths {subsets_raw!r} (a list of positive integers is needed)")
        subsets = None
    found = temporal_problems(str(pooling), n, subsets)
    problems += found
    if found:
        return None
    if settings.get("temporal_concat") is not None:
        notes.append("backbone_temporal_concat is deprecated and ignored (TerraTorch too); the pooling is "
                     f"backbone_temporal_pooling '{pooling}'")  # fmt: skip
    if pooling == "keep":
        problems.append("backbone_temporal_pooling 'keep' (it hands per-date features (B, T, N, D) to the necks, "
                        "which no segmentation decoder takes; TerraTorch fails on them too)")  # fmt: skip
    if pooling == "concat" and n is None:
        problems.append("backbone_temporal_n_timestamps is missing; 'concat' pooling needs it (it sets the "
                        "channel count of the necks and decoder)")  # fmt: skip
    if pooling == "concat" and n is not None and subsets is not None and len(subsets) != n:
        problems.append(
            f"'concat' pooling with backbone_temporal_subset_lengths {subsets}: TerraTorch sizes the necks for "
            f"{n} dates but the groups leave {len(subsets)}, so the model cannot run"
        )
    if pooling == "diff" and subsets is None and n is not None and n != 2:
        problems.append(f"'diff' pooling compares exactly 2 dates, but backbone_temporal_n_timestamps is {n}")
    if settings.get("temporal_features_permute_op") is not None:
        problems.append("backbone_temporal_features_permute_op (TerraMind's token features cannot be permuted by "
                        "the temporal wrapper; TerraTorch fails at the first forward)")  # fmt: skip
    if tim:
        problems.append("the temporal wrapper around a TiM backbone (backbone_use_temporal with a *_tim backbone)")
    return TemporalSpec(
        pooling=str(pooling),
        n_timestamps=n,
        subset_lengths=tuple(subsets) if subsets is not None else None,
        repeat_single_date=repeat_single_date,
    )


@dataclass(frozen=True)
class TiledInferenceSpec:
    """``tiled_inference`` parameters (defaults of terratorch/tasks/tiled_inference.py, 1.2.11).

    Chips of ``h_crop × w_crop`` every ``h_stride``/``w_stride`` pixels over the input, reflect-padded
    by ``delta`` first (``padding``); each chip's outer ``delta`` pixels are dropped, overlaps are
    blended with a cosine ramp (``blend_overlaps``) and averaged (``average_patches``).
    """

    crop: int = 224
    stride: int = 192
    delta: int = 8
    h_crop: int | None = None
    w_crop: int | None = None
    h_stride: int | None = None
    w_stride: int | None = None
    average_patches: bool = True
    blend_overlaps: bool = True
    batch_size: int = 16
    padding: str | bool = "reflect"

    @property
    def tile(self) -> tuple[int, int]:
        """(height, width) of a chip."""
        return (self.h_crop or self.crop, self.w_crop or self.crop)

    @property
    def strides(self) -> tuple[int, int]:
        return (self.h_stride or self.stride, self.w_stride or self.stride)

    @property
    def effective_delta(self) -> int:
        """``delta``, reduced (as the reference does, with a warning) to half the smaller overlap."""
        (h, w), (sh, sw) = self.tile, self.strides
        if (h - sh) // 2 < self.delta or (w - sw) // 2 < self.delta:
            return min((h - sh) // 2, (w - sw) // 2)
        return self.delta

    @property
    def square(self) -> bool:
        """Square chips with one stride (what the worker's chip plan runs)."""
        return self.tile[0] == self.tile[1] and self.strides[0] == self.strides[1]

    def with_overrides(self, crop: int | None = None, stride: int | None = None, delta: int | None = None) -> TiledInferenceSpec:
        """These settings with a run's chip size, stride and delta (``None``: keep this one's); a chip size or
        stride given replaces the per-axis ``h_``/``w_`` values too."""
        spec = self
        if crop is not None:
            spec = replace(spec, crop=crop, h_crop=None, w_crop=None)
        if stride is not None:
            spec = replace(spec, stride=stride, h_stride=None, w_stride=None)
        if delta is not None:
            spec = replace(spec, delta=delta)
        return spec


def tiled_inference_from_args(params: Any, notes: list[str]) -> TiledInferenceSpec | None:
    """The task's ``tiled_inference_parameters`` (``None`` when absent); unusable ones become a note."""
    if params is None:
        return None
    if not isinstance(params, dict):
        notes.append(f"tiled_inference_parameters {params!r} is not a mapping and is ignored")
        return None
    unknown = sorted(set(params) - set(TILED_KEYS) - set(_TILED_IGNORED))
    if unknown:
        notes.append(f"tiled_inference_parameters: {', '.join(unknown)} ignored (not tiled_inference arguments)")
    kwargs = {k: params[k] for k in TILED_KEYS if k in params and params[k] is not None}
    sizes = [k for k in ("crop", "stride", "delta", "h_crop", "w_crop", "h_stride", "w_stride", "batch_size") if k in kwargs]
    bad = [k for k in sizes
           if not isinstance(kwargs[k], int) or isinstance(kwargs[k], bool) or kwargs[k] < (0 if k == "delta" else 1)]
    spec = TiledInferenceSpec(**kwargs) if not bad else None
    if spec is not None and any(s > c for s, c in zip(spec.strides, spec.tile)):
        bad.append("stride (larger than the crop: pixels between chips would get no prediction)")
    if bad:
        notes.append(f"tiled_inference_parameters ignored: {', '.join(bad)} not usable ({params})")
        return None
    return spec
