"""What a fine-tuned segmentation model is, read from a TerraTorch config (torch-free).

A TerraTorch fine-tune is described by the Lightning CLI YAML it was trained with (or, equally, by
the ``hyper_parameters`` Lightning stores in the ``.ckpt``): ``model.init_args.model_args`` are the
keyword arguments of ``EncoderDecoderFactory.build_model`` (``backbone_*`` → backbone, ``decoder_*``
→ decoder, ``head_*`` → head, ``necks``, ``num_classes``), ``model.init_args.class_names`` names the
classes, and the data module's ``means``/``stds``/``no_data_replace`` say how raw pixels were
standardised (terratorch 1.2.11 ``datamodules/generic_multimodal_data_module.py`` means/stds); when the YAML leaves
the statistics to a known data module, its defaults
are used (``datamodules.py``). Multi-temporal models (TerraTorch's ``TemporalWrapper``,
``backbone_use_temporal``) and the task's ``tiled_inference_parameters`` are read by
``temporal_config.py``. ``SegmentationConfig`` is that information, validated; everything the
config asks for that this plugin cannot do is reported in ONE ``ConfigError`` naming each entry.
Training-only settings (loss, optimiser, freezing, drop rates, augmentations) are ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.configs import BackboneNamed
from ..core.errors import ConfigError, UnsupportedModalityError
from ..core.modalities import MODALITIES, resolve_input_key
from .datamodules import resolve_data_module
from .temporal_config import TemporalSpec, TiledInferenceSpec, temporal_spec_from_args, tiled_inference_from_args

SIZES = ("tiny", "small", "base", "large")
MERGE_METHODS = ("mean", "max", "concat")
SUPPORTED_NECKS = (
    "SelectIndices", "ReshapeTokensToImage", "LearnedInterpolateToPyramidal", "InterpolateToPyramidal",
    "MaxpoolToPyramidal", "PermuteDims", "AddBottleneckLayer",
)  # fmt: skip
SUPPORTED_DECODERS = ("UNetDecoder", "UperNetDecoder")
TASK_CLASSES = ("SemanticSegmentationTask", "terratorch.tasks.SemanticSegmentationTask",
                "terratorch.tasks.segmentation_tasks.SemanticSegmentationTask")  # fmt: skip
TIM_OPTIONS = ("tim_chained_generations", "tim_decoding_steps", "tim_temps", "tim_top_p", "tim_top_k")
# backbone_* arguments that only matter for training or for fetching pre-trained weights.
_IGNORED_BACKBONE_ARGS = ("pretrained", "ckpt_path", "drop_path_rate", "drop_rate", "attn_drop_rate", "modality_drop_rate")
_TOP_LEVEL_ARGS = ("backbone", "necks", "decoder", "num_classes", "rescale")


@dataclass(frozen=True)
class InputSpec:
    """One input modality of the model: its config name, band names and standardisation."""

    name: str  # as written in the config (the key of the input dict), e.g. 'S2L1C', 'S1GRD'
    modality: str  # canonical modality of models/core/modalities.py, e.g. 'S1GRD'
    bands: tuple[str, ...]  # band names in model channel order
    mean: tuple[float, ...]
    std: tuple[float, ...]
    band_subset: bool = False  # True when the config chose bands (``backbone_bands``)


@dataclass(frozen=True)
class SegmentationConfig(BackboneNamed):
    """A fine-tuned TerraMind segmentation model, as far as inference needs it."""

    backbone: str  # e.g. 'terramind_v1_base' or 'terramind_v1_base_tim'
    inputs: tuple[InputSpec, ...]
    merge_method: str
    necks: tuple[dict[str, Any], ...]
    decoder: str
    decoder_kwargs: dict[str, Any]
    num_classes: int
    head_dropout: float = 0.0
    head_channel_list: tuple[int, ...] | None = None
    tim_modalities: tuple[str, ...] = ()
    tim_options: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    no_data_replace: float = 0.0
    rescale: bool = True
    notes: tuple[str, ...] = ()  # things the user should know (defaults taken, settings ignored)
    temporal: TemporalSpec | None = None  # multi-temporal wrapper; None: single-date model
    tiled_inference: TiledInferenceSpec | None = None  # the task's tiled_inference_parameters, if any

    @property
    def catalogue_id(self) -> str:
        """The catalogue entry of the pre-trained backbone architecture, e.g. 'terramind_v1_base'."""
        return self.backbone.removesuffix("_tim")

    @property
    def bands(self) -> dict[str, list[str]] | None:
        """``backbone_bands`` as the backbone builder takes it (None when no subset was chosen)."""
        chosen = {i.name: list(i.bands) for i in self.inputs if i.band_subset}
        return chosen or None

    @property
    def input_layout(self) -> str:
        """Dimension order of every model input: ``'BCHW'``, or ``'BCTHW'`` for a multi-temporal model."""
        return "BCTHW" if self.temporal is not None else "BCHW"

    def input_shape(self, name: str) -> tuple[int | str, ...]:
        """The shape input ``name`` must have, e.g. ``('B', 12, 4, 'H', 'W')`` (``'T'`` when any number of dates)."""
        spec = next((i for i in self.inputs if i.name == name), None)
        if spec is None:
            raise ConfigError(f"the model has no input '{name}'; its inputs are {', '.join(i.name for i in self.inputs)}")
        if self.temporal is None:
            return ("B", len(spec.bands), "H", "W")
        return ("B", len(spec.bands), self.temporal.dates or "T", "H", "W")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [asdict(i) for i in self.inputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentationConfig:
        try:
            d = dict(d)
            d["inputs"] = tuple(
                InputSpec(**{**i, "bands": tuple(i["bands"]), "mean": tuple(i["mean"]), "std": tuple(i["std"])})
                for i in d["inputs"]
            )
            d["necks"] = tuple(dict(n) for n in d["necks"])
            for key in ("tim_modalities", "notes"):
                d[key] = tuple(d.get(key) or ())
            for key in ("class_names", "head_channel_list"):
                d[key] = tuple(d[key]) if d.get(key) is not None else None
            if d.get("temporal") is not None:
                d["temporal"] = TemporalSpec.from_dict(d["temporal"])
            if d.get("tiled_inference") is not None:
                d["tiled_inference"] = TiledInferenceSpec(**d["tiled_inference"])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"invalid segmentation model description: {e}") from None


def _split_prefix(args: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in args.items() if k.startswith(prefix)}


def _stats_for(name: str, stats: Any, single: bool) -> list[float] | None:
    if isinstance(stats, dict):
        return stats.get(name)
    if isinstance(stats, list) and single:
        return stats
    return None


def _input_spec(
    name: str, bands: list[str] | None, data: dict[str, Any], single: bool, problems: list[str], notes: list[str]
) -> InputSpec | None:
    try:
        key = resolve_input_key(name)
    except UnsupportedModalityError as e:
        problems.append(f"backbone_modalities entry '{name}': {e}")
        return None
    modality = next(m for m in MODALITIES.values() if m.input_key == key)
    if modality.is_tokenized_input:
        problems.append(f"backbone_modalities entry '{name}' (tokenized {modality.name} input)")
        return None
    band_names = list(bands) if bands else list(modality.bands)
    mean = _stats_for(name, data.get("means"), single)
    std = _stats_for(name, data.get("stds"), single)
    if isinstance(data.get("means"), str) or isinstance(data.get("stds"), str):
        problems.append("data means/stds given as a file path (write the numbers into the config)")
        return None
    if mean is None or std is None:
        unknown = [b for b in band_names if b not in modality.bands]
        if unknown:
            problems.append(f"data means/stds for '{name}' (needed because bands {unknown} have no TerraMind statistics)")
            return None
        mean = [modality.mean[modality.bands.index(b)] for b in band_names]
        std = [modality.std[modality.bands.index(b)] for b in band_names]
        notes.append(f"no data means/stds for '{name}' in the config: using the TerraMind v1 pre-training statistics")
    if len(mean) != len(band_names) or len(std) != len(band_names):
        problems.append(
            f"data means/stds for '{name}' have {len(mean)}/{len(std)} values but the model reads {len(band_names)} bands"
        )
        return None
    if any(float(s) == 0 for s in std):
        problems.append(f"data stds for '{name}' contain 0")
        return None
    return InputSpec(name, modality.name, tuple(band_names), tuple(float(v) for v in mean),
                     tuple(float(v) for v in std), band_subset=bool(bands))  # fmt: skip


def config_from_task_args(
    task_args: dict[str, Any], data_args: dict[str, Any] | None = None, *, data_module: str | None = None
) -> SegmentationConfig:
    """Build the config from ``model.init_args`` (or checkpoint ``hyper_parameters``) and ``data.init_args``.

    ``data_module``: the data section's ``class_path``; for the modules of ``datamodules.py`` their
    default statistics fill what ``data_args`` leaves out.
    """
    problems: list[str] = []
    notes: list[str] = []
    defaults = resolve_data_module(data_module, data_args)
    data = dict(defaults.data)
    problems += defaults.problems
    notes += defaults.notes
    factory = task_args.get("model_factory", "EncoderDecoderFactory")
    if factory != "EncoderDecoderFactory":
        problems.append(f"model_factory '{factory}'")
    if task_args.get("model") is not None:
        problems.append("a custom 'model' object instead of model_args")
    if task_args.get("aux_heads"):
        problems.append("aux_heads (auxiliary decoders)")
    args = dict(task_args.get("model_args") or {})
    if not args:
        raise ConfigError("the config has no model.init_args.model_args: is this a TerraTorch fine-tuning config?")

    backbone = str(args.get("backbone", ""))
    parts = backbone.split("_")
    if not (backbone.startswith("terramind_v1_") and len(parts) in (3, 4) and parts[2] in SIZES
            and (len(parts) == 3 or parts[3] == "tim")):  # fmt: skip
        problems.append(f"backbone '{backbone}' (supported: terramind_v1_<tiny|small|base|large>[_tim])")
    bb = _split_prefix(args, "backbone_")
    dec_kwargs = _split_prefix(args, "decoder_")
    head = _split_prefix(args, "head_")
    known = {*_TOP_LEVEL_ARGS, *(f"backbone_{k}" for k in bb), *(f"decoder_{k}" for k in dec_kwargs),
             *(f"head_{k}" for k in head)}  # fmt: skip
    for key in sorted(set(args) - known):
        if not (key in ("image_size_out", "peft_config", "aux_decoders", "num_outputs") and args[key] is None):
            problems.append(f"model_args.{key}")

    modalities = list(bb.pop("modalities", None) or [])
    if not modalities:
        problems.append("backbone_modalities is missing (the model's inputs must be listed)")
    bands = bb.pop("bands", None) or {}
    merge = bb.pop("merge_method", "mean")
    if merge not in MERGE_METHODS:
        problems.append(f"backbone_merge_method '{merge}' (supported: {', '.join(MERGE_METHODS)})")
    tim_modalities = list(bb.pop("tim_modalities", None) or (["LULC"] if backbone.endswith("_tim") else []))
    tim_options = {k: bb.pop(k) for k in TIM_OPTIONS if k in bb}
    if tim_options.get("tim_decoding_steps", 1) != 1:
        problems.append(f"backbone_tim_decoding_steps {tim_options['tim_decoding_steps']} (the reference only runs 1)")
    if tim_modalities and not backbone.endswith("_tim"):
        problems.append("backbone_tim_modalities on a backbone without '_tim'")
    if bands and backbone.endswith("_tim"):
        problems.append("backbone_bands on a TiM backbone (the reference refuses it too)")
    for key in ("img_size", "patch_size"):
        if key in bb and bb[key] != {"img_size": 224, "patch_size": 16}[key]:
            problems.append(f"backbone_{key} {bb[key]} (TerraMind v1 runs at 224 px with 16 px patches)")
        bb.pop(key, None)
    if bb.pop("padding", "reflect") != "reflect":
        problems.append("backbone_padding other than 'reflect'")
    for key in _IGNORED_BACKBONE_ARGS:
        bb.pop(key, None)
    temporal = temporal_spec_from_args(bb, tim=backbone.endswith("_tim"), repeat_single_date=defaults.repeat_single_date,
                                       problems=problems, notes=notes)  # fmt: skip
    for key in sorted(bb):
        problems.append(f"backbone_{key}")

    single = len(modalities) == 1
    unknown_bands = sorted(set(bands) - set(modalities))
    if unknown_bands:
        problems.append(f"backbone_bands for modalities {unknown_bands} that are not in backbone_modalities")
    inputs = []
    for name in modalities:
        if isinstance(name, dict):
            problems.append(f"new modality {name} (only TerraMind v1 modalities are supported)")
            continue
        spec = _input_spec(str(name), bands.get(name), data, single, problems, notes)
        if spec:
            inputs.append(spec)

    necks = [dict(n) for n in args.get("necks") or []]
    for i, neck in enumerate(necks):
        if neck.get("name") not in SUPPORTED_NECKS:
            problems.append(f"neck '{neck.get('name')}' (necks[{i}]; supported: {', '.join(SUPPORTED_NECKS)})")
    decoder = args.get("decoder")
    if decoder not in SUPPORTED_DECODERS:
        problems.append(f"decoder '{decoder}' (supported: {', '.join(SUPPORTED_DECODERS)})")
    if "channels" in dec_kwargs and decoder == "UNetDecoder" and not isinstance(dec_kwargs["channels"], list):
        problems.append("decoder_channels must be a list for UNetDecoder")
    num_classes = args.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        problems.append(f"num_classes {num_classes!r} (a positive integer is needed)")
    dropout = head.pop("dropout", 0.0)
    channel_list = head.pop("channel_list", None)
    for key in sorted(head):
        problems.append(f"head_{key}")
    class_names = task_args.get("class_names")
    if class_names is not None and isinstance(num_classes, int) and len(class_names) != num_classes:
        problems.append(f"class_names has {len(class_names)} names for {num_classes} classes")
    no_data = data.get("no_data_replace", 0.0)
    if no_data is None:
        no_data = 0.0
        notes.append("no_data_replace is not set in the config: nodata pixels are filled with 0 (raw units)")

    tiled = tiled_inference_from_args(task_args.get("tiled_inference_parameters"), notes)

    if problems:
        raise ConfigError("this fine-tuned model asks for things the plugin does not support: " + "; ".join(problems))
    return SegmentationConfig(
        backbone=backbone,
        inputs=tuple(inputs),
        merge_method=merge,
        necks=tuple(necks),
        decoder=str(decoder),
        decoder_kwargs=dec_kwargs,
        num_classes=int(num_classes),  # type: ignore[arg-type]
        head_dropout=float(dropout or 0.0),
        head_channel_list=tuple(channel_list) if channel_list is not None else None,
        tim_modalities=tuple(tim_modalities),
        tim_options=tim_options,
        class_names=tuple(str(c) for c in class_names) if class_names is not None else None,
        no_data_replace=float(no_data),
        rescale=bool(args.get("rescale", True)),
        notes=tuple(notes),
        temporal=temporal,
        tiled_inference=tiled,
    )


def config_from_yaml_dict(cfg: dict[str, Any]) -> SegmentationConfig:
    """Build the config from a parsed Lightning CLI YAML (``model:`` and ``data:`` sections)."""
    model = cfg.get("model") or {}
    class_path = model.get("class_path", "SemanticSegmentationTask")
    if class_path not in TASK_CLASSES:
        raise ConfigError(
            f"this fine-tuned model asks for things the plugin does not support: task '{class_path}' "
            "(only SemanticSegmentationTask)"
        )
    data_section = cfg.get("data") or {}
    return config_from_task_args(model.get("init_args") or {}, data_section.get("init_args") or {},
                                 data_module=data_section.get("class_path"))  # fmt: skip


def load_yaml_config(path: str) -> dict[str, Any]:
    """Parse a TerraTorch YAML file (safe loader), with one clear error when it is not one."""
    import yaml  # PyYAML: the configs users have are YAML

    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the model config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"the model config {path} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ConfigError(f"the model config {path} has no 'model:' section; expected a TerraTorch (Lightning CLI) config")
    return cfg
