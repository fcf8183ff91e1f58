"""The recipe of a fine-tuning run: IBM's TerraMind fine-tuning defaults, each one overridable (torch-free).

Defaults from IBM's TerraTorch configs (``tests/data/terramind_configs/``, IBM/terramind ``configs/``):
``SelectIndices`` [2, 5, 8, 11] ([5, 11, 17, 23] for large) → ``ReshapeTokensToImage``
(``remove_cls_token: False``) → ``LearnedInterpolateToPyramidal`` → ``UNetDecoder`` with channels
[256, 128, 64, 32] (tiny) or [512, 256, 128, 64] (base; IBM publishes no small or large config:
small takes tiny's channels, large base's), head dropout 0.1, ``dice`` loss with
``ignore_index: -1``, AdamW (torch's default weight decay 0.01; the burn-scars config uses 0.1),
learning rate 1e-4 (the burn-scars and ImpactMesh configs; Sen1Floods11 uses 2e-5 with a trainable
backbone), ``ReduceLROnPlateau`` on ``val/loss`` (factor 0.5, patience 5), early stopping on
``val/loss`` (patience 10, ImpactMesh), batch size 8, D4 augmentation, ``seed_everything: 42``.

Plugin choices: ``freeze_backbone=None`` freezes the backbone on CPU (an epoch then costs only
neck + decoder + head, trainer.py) and trains it on CUDA; ``statistics="pretraining"`` standardises
with TerraMind's pre-training means/stds (what a pre-trained, especially a frozen, encoder expects;
IBM's configs do the same), ``"dataset"`` with the train split's own (dataset.json);
``class_weights="balanced"`` derives weights from the train split's label frequencies
(``losses.balanced_class_weights``). As in TerraTorch, class weights act on the ``ce`` loss only.

``task_args``/``data_args`` turn a recipe and a dataset into the ``SemanticSegmentationTask`` and
``GenericMultiModalDataModule`` arguments of a TerraTorch config; the model is then described by
``models/segmentation/config.config_from_task_args``, the same parser that loads checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.configs import BackboneNamed
from ..core.errors import ConfigError, UnsupportedModalityError
from ..core.modalities import MODALITIES, resolve_input_key

SIZES = ("tiny", "small", "base", "large")
SIZE_DEFAULTS: dict[str, dict[str, tuple[int, ...]]] = {
    "tiny": {"indices": (2, 5, 8, 11), "decoder_channels": (256, 128, 64, 32)},
    "small": {"indices": (2, 5, 8, 11), "decoder_channels": (256, 128, 64, 32)},
    "base": {"indices": (2, 5, 8, 11), "decoder_channels": (512, 256, 128, 64)},
    "large": {"indices": (5, 11, 17, 23), "decoder_channels": (512, 256, 128, 64)},
}
LOSSES = ("ce", "dice", "focal")
PRECISIONS = {"fp32": "32", "bf16": "bf16-mixed", "fp16": "16-mixed"}  # → Lightning's Trainer(precision=...)
STATISTICS = ("pretraining", "dataset")
CLASS_WEIGHTS_NOTE = "class weights act on the 'ce' loss only (TerraTorch's init_loss does not pass them to {loss})"


@dataclass(frozen=True)
class Recipe(BackboneNamed):
    """Everything a fine-tuning run is made of besides the data (module docstring for the defaults)."""

    backbone: str = "terramind_v1_tiny"  # terramind_v1_<tiny|small|base|large>[_tim]
    modalities: tuple[str, ...] = ("S2L2A",)
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)  # optional band subset per modality
    merge_method: str = "mean"
    decoder_channels: tuple[int, ...] | None = None  # None: the size's default
    head_dropout: float = 0.1
    loss: str = "dice"
    class_weights: str | tuple[float, ...] | None = None  # None, "balanced" or one weight per class
    lr: float = 1e-4
    weight_decay: float = 0.01
    max_epochs: int = 50
    batch_size: int = 8
    augment: bool = True  # D4 on the train split
    freeze_backbone: bool | None = None  # None: frozen on CPU, trainable on CUDA
    precision: str = "fp32"
    seed: int = 42
    scheduler_factor: float = 0.5
    scheduler_patience: int = 5
    early_stopping_patience: int | None = 10  # None: no early stopping
    statistics: str = "pretraining"
    no_data_replace: float = 0.0
    cache_features: bool = True  # frozen backbone: encoder outputs computed once per chip (and D4 element)
    tim_modalities: tuple[str, ...] = ()  # *_tim backbones: default ("LULC",)

    def __post_init__(self) -> None:
        problems = []
        parts = self.backbone.split("_")
        if not (self.backbone.startswith("terramind_v1_") and len(parts) in (3, 4) and parts[2] in SIZES
                and (len(parts) == 3 or parts[3] == "tim")):  # fmt: skip
            problems.append(f"backbone '{self.backbone}' (expected terramind_v1_<tiny|small|base|large>[_tim])")
        if not self.modalities:
            problems.append("modalities: at least one input modality is needed")
        for m in self.modalities:
            try:
                key = resolve_input_key(m)
            except UnsupportedModalityError as e:
                problems.append(f"modality '{m}': {e}")
                continue
            modality = next(x for x in MODALITIES.values() if x.input_key == key)
            if modality.is_tokenized_input:
                problems.append(f"modality '{m}' is a tokenized input ({modality.name}); fine-tuning takes pixel inputs")
        for m, bands in self.bands.items():
            if m not in self.modalities:
                problems.append(f"bands given for '{m}', which is not among the modalities {list(self.modalities)}")
            elif not bands:
                problems.append(f"bands of '{m}' is empty")
        if self.merge_method not in ("mean", "max", "concat"):
            problems.append(f"merge_method '{self.merge_method}' (mean, max or concat)")
        if self.decoder_channels is not None and (len(self.decoder_channels) != 4 or min(self.decoder_channels) < 1):
            problems.append(f"decoder_channels {self.decoder_channels} (four positive numbers, one per pyramid level)")
        if not 0 <= self.head_dropout < 1:
            problems.append(f"head_dropout {self.head_dropout} (0 <= p < 1)")
        if self.loss not in LOSSES:
            problems.append(f"loss '{self.loss}' (one of {', '.join(LOSSES)})")
        cw = self.class_weights
        if isinstance(cw, str) and cw != "balanced":
            problems.append(f"class_weights '{cw}' (None, 'balanced' or one number per class)")
        if isinstance(cw, tuple) and (not cw or min(cw) < 0):
            problems.append(f"class_weights {cw} (non-negative numbers, one per class)")
        if not self.lr > 0:
            problems.append(f"lr {self.lr} (a positive learning rate)")
        if self.weight_decay < 0:
            problems.append(f"weight_decay {self.weight_decay} (>= 0)")
        if self.max_epochs < 1 or self.batch_size < 1:
            problems.append(f"max_epochs {self.max_epochs} and batch_size {self.batch_size} (positive integers)")
        if self.precision not in PRECISIONS:
            problems.append(f"precision '{self.precision}' (one of {', '.join(PRECISIONS)})")
        if self.statistics not in STATISTICS:
            problems.append(f"statistics '{self.statistics}' (one of {', '.join(STATISTICS)})")
        if not 0 < self.scheduler_factor < 1 or self.scheduler_patience < 0:
            problems.append(f"scheduler factor {self.scheduler_factor} (0..1) / patience {self.scheduler_patience} (>= 0)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(f"early_stopping_patience {self.early_stopping_patience} (>= 1, or None for none)")
        if self.tim_modalities and not self.is_tim:
            problems.append("tim_modalities on a backbone without '_tim'")
        if self.bands and self.is_tim:
            problems.append("bands on a TiM backbone (TerraTorch refuses band subsets with TiM)")
        if problems:
            raise ConfigError("invalid fine-tuning recipe: " + "; ".join(problems))

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.decoder_channels or SIZE_DEFAULTS[self.size]["decoder_channels"])

    def frozen_on(self, device_type: str) -> bool:
        """Whether the backbone is frozen on a device of ``device_type`` ('cpu', 'cuda', ...)."""
        return device_type == "cpu" if self.freeze_backbone is None else bool(self.freeze_backbone)

    def notes(self) -> list[str]:
        """What the user should know about this recipe (shown once at the start of a run)."""
        out = []
        if self.class_weights is not None and self.loss != "ce":
            out.append(CLASS_WEIGHTS_NOTE.format(loss=self.loss))
        if self.is_tim and self.cache_features:
            out.append("TiM backbones sample tokens at every forward pass: their features are not cached")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = {m: list(b) for m, b in self.bands.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown recipe entries {unknown}; known: {', '.join(sorted(known))}")
        d = dict(d)
        for key in ("modalities", "tim_modalities", "decoder_channels"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        if isinstance(d.get("class_weights"), list):
            d["class_weights"] = tuple(float(w) for w in d["class_weights"])
        if d.get("bands"):
            d["bands"] = {m: tuple(b) for m, b in d["bands"].items()}
        return cls(**d)


def necks(recipe: Recipe) -> list[dict[str, Any]]:
    """The IBM neck chain for the recipe's size."""
    return [
        {"name": "SelectIndices", "indices": list(SIZE_DEFAULTS[recipe.size]["indices"])},
        {"name": "ReshapeTokensToImage", "remove_cls_token": False},
        {"name": "LearnedInterpolateToPyramidal"},
    ]


def resolve_class_weights(recipe: Recipe, class_pixels: tuple[int, ...]) -> list[float] | None:
    """The class weights the task gets: None, the recipe's own, or balanced from the train pixel counts."""
    from .losses import balanced_class_weights  # torch-free function, module imports torch lazily here

    if recipe.class_weights is None:
        return None
    if recipe.class_weights == "balanced":
        return [round(w, 6) for w in balanced_class_weights(class_pixels)]
    weights = list(recipe.class_weights)  # type: ignore[arg-type]
    if len(weights) != len(class_pixels):
        raise ConfigError(f"class_weights has {len(weights)} values but the dataset has {len(class_pixels)} classes")
    return [float(w) for w in weights]


def task_args(recipe: Recipe, num_classes: int, class_names: tuple[str, ...], class_weights: list[float] | None,
              frozen: bool) -> dict[str, Any]:  # fmt: skip
    """``model.init_args`` of the TerraTorch config (``SemanticSegmentationTask``); offline-loadable."""
    model_args: dict[str, Any] = {
        "backbone": recipe.backbone,
        "backbone_pretrained": False,  # the weights travel in the checkpoint; no download on loading
        "backbone_modalities": list(recipe.modalities),
    }
    if recipe.bands:
        model_args["backbone_bands"] = {m: list(b) for m, b in recipe.bands.items()}
    if recipe.is_tim:
        model_args["backbone_tim_modalities"] = list(recipe.tim_modalities or ("LULC",))
    model_args.update({
        "backbone_merge_method": recipe.merge_method,
        "necks": necks(recipe),
        "decoder": "UNetDecoder",
        "decoder_channels": list(recipe.channels),
        "head_dropout": recipe.head_dropout,
        "num_classes": int(num_classes),
    })  # fmt: skip
    return {
        "model_factory": "EncoderDecoderFactory",
        "model_args": model_args,
        "loss": recipe.loss,
        "ignore_index": -1,
        "class_weights": class_weights,
        "freeze_backbone": bool(frozen),
        "freeze_decoder": False,
        "class_names": list(class_names),
    }


def statistics(recipe: Recipe, modality: str, bands: tuple[str, ...], dataset_mean: tuple[float, ...],
               dataset_std: tuple[float, ...], dataset_bands: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """(means, stds) of ``bands`` of ``modality``: TerraMind's pre-training statistics or the dataset's."""
    if recipe.statistics == "dataset":
        idx = [dataset_bands.index(b) for b in bands]
        return [dataset_mean[i] for i in idx], [dataset_std[i] for i in idx]
    key = resolve_input_key(modality)
    m = next(x for x in MODALITIES.values() if x.input_key == key)
    missing = [b for b in bands if b not in m.bands]
    if missing:
        raise ConfigError(f"bands {missing} of {modality} have no TerraMind pre-training statistics; "
                          "use statistics='dataset'")  # fmt: skip
    return [m.mean[m.bands.index(b)] for b in bands], [m.std[m.bands.index(b)] for b in bands]
