"""Typed parameters of the fine-tuning tasks (``prepare_training_data``, ``finetune``), torch-free.

The same contract as models/core/params.py: one frozen dataclass per task, ``from_params`` reads the
job's ``params`` strictly, ``as_params`` writes it, ``__post_init__`` checks ranges and ``check(...)``
checks against the inputs (prepare) or the dataset folder's ``dataset.json`` (fine-tune; read here
with the standard library, ``DatasetSummary``), so the QGIS dialog and the worker refuse a value with
the same message. Every ``ConfigError`` carries the job field at fault.

Classes of a label source (``params.classes``): text, one class per entry separated by ``;`` or new
lines, numbered 0, 1, ... in the order written: ``"<values>: <name> [#RRGGBB]"`` where ``<values>``
are the label values (raster values or the class field's values, comma-separated) the class takes, or
``*`` for every value no other entry lists (e.g. ``"*: Others #D9D9D9; 1: Water #1F77B4"`` turns a
LULC raster into water vs the rest). Or a JSON list of ``{"name", "color", "values": [...] | "*"}``.
Without classes, every distinct label value is its own class (``features.class_table``). Values that no
entry lists (and no ``*``) are unlabelled: ``ignore_index`` -1.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, UnsupportedModalityError
from .features import FeatureSet, Label, class_table
from .modalities import ClassInfo, band_subsets, get_modality
from .outputs import check_writable_folder
from .params import MAX_SEED, check_range, modality_names, read_bool, read_float, read_int, read_text
from .styles import qualitative_palette

SIZES = ("tiny", "small", "base", "large")
BACKBONES = tuple(f"terramind_v1_{s}{t}" for s in SIZES for t in ("", "_tim"))
DEFAULT_BACKBONE = "terramind_v1_tiny"
DEFAULT_CHIP_SIZE = 224
MIN_CHIP_SIZE, MAX_CHIP_SIZE = 32, 1024
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
LOSSES = ("dice", "ce", "focal")
CLASS_WEIGHTS = ("none", "balanced")
BACKBONE_MODES = ("auto", "frozen", "trainable")  # auto: frozen on CPU, trainable on CUDA
STATISTICS = ("pretraining", "dataset")
OTHER = "*"
CLASSES_EXAMPLE = "*: Others #D9D9D9; 1: Water #1F77B4"
DATASET_FORMAT = "terramind_qgis.dataset"
DATASET_FORMAT_VERSION = 1
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_ENTRY = re.compile(r"^\s*([^:]+?)\s*:\s*(.*?)\s*(#[0-9A-Fa-f]{6})?\s*$")


# ----------------------------------------------------------------------------- classes of a label source
@dataclass(frozen=True)
class ClassRule:
    """One class of the dataset: its name, colour and the label values it takes (``other``: every other value)."""

    name: str
    color: str | None = None
    values: tuple[Label, ...] = ()
    other: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "color": self.color, "values": OTHER if self.other else list(self.values)}


def _value(text: str) -> Label:
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def parse_class_rules(value: Any) -> tuple[ClassRule, ...]:
    """``params.classes`` (text or a JSON list, module docstring) → the class rules in class order."""
    if value is None or value == "" or value == []:
        return ()
    where = "params.classes"
    items: list[Any]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError as e:
                raise ConfigError(f"is not a valid JSON list of {{name, color, values}} ({e})", field=where) from None
        else:
            items = []
            for part in filter(str.strip, re.split(r"[;\n]", text)):
                m = _ENTRY.match(part)
                if not m or not m.group(1).strip():
                    raise ConfigError(f"cannot read '{part.strip()}'; write '<values>: <name> [#RRGGBB]', e.g. "
                                      f"'{CLASSES_EXAMPLE}'", field=where)  # fmt: skip
                values = m.group(1).strip()
                listed = OTHER if values == OTHER else [_value(v) for v in values.split(",") if v.strip()]
                items.append({"name": m.group(2) or values, "color": m.group(3), "values": listed})
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"must be text like '{CLASSES_EXAMPLE}' or a list of classes, got {value!r}", field=where)
    rules: list[ClassRule] = []
    for i, d in enumerate(items):
        if not isinstance(d, Mapping) or "values" not in d:
            raise ConfigError(f"class {i + 1} must be an object with 'name' and 'values', got {d!r}", field=where)
        name = str(d.get("name") or "").strip()
        color = d.get("color") or None
        if color is not None and not _COLOUR.fullmatch(str(color)):
            raise ConfigError(f"colour '{color}' of class '{name}' is not #RRGGBB", field=where)
        raw = d["values"]
        if raw == OTHER:
            rules.append(ClassRule(name or "Others", color and str(color).upper(), (), True))
            continue
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"class '{name}' needs the label values it takes (a list, or '*' for every other value)",
                              field=where)  # fmt: skip
        values = tuple(check_class_value(v, where) for v in raw)
        rules.append(ClassRule(name or ", ".join(map(str, values)), color and str(color).upper(), values))
    if sum(r.other for r in rules) > 1:
        raise ConfigError("has more than one '*' class; one class takes every other value", field=where)
    seen: dict[str, str] = {}
    for r in rules:
        for v in r.values:
            if str(v) in seen:
                raise ConfigError(f"label value {v!r} is given to both '{seen[str(v)]}' and '{r.name}'", field=where)
            seen[str(v)] = r.name
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"class name(s) {', '.join(twice)} appear more than once", field=where)
    return tuple(rules)


def check_class_value(value: Any, where: str) -> Label:
    """A label value: a whole number or text (a fractional number is refused: classes are not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"class value {value!r} is neither a whole number nor text", field=where)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ConfigError(f"class value {value!r} is not a whole number; classes must be whole numbers or text "
                              "(round or reclassify the class field/raster first)", field=where)  # fmt: skip
        return int(value)
    return value


def check_class_values(values: Sequence[Any], where: str) -> None:
    """Every value of a class field or raster must be a whole number or text (one message listing the others)."""
    bad = [v for v in values if isinstance(v, float) and (not math.isfinite(v) or v != int(v))]
    if bad:
        shown = ", ".join(f"{v:g}" for v in sorted(bad)[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ConfigError(f"holds non-integer class values ({shown}); classes must be whole numbers or text "
                          "(round or reclassify them first)", field=where)  # fmt: skip


def resolve_classes(rules: Sequence[ClassRule], present: Sequence[Label]) -> tuple[tuple[ClassInfo, ...], dict[str, int],
                                                                                     int | None]:  # fmt: skip
    """(classes 0..K-1, label value (as text) → class id, the id of the '*' class or None) for the label values
    ``present`` in the source."""
    if not rules:
        table = class_table(list(present)) if present else ()
        distinct = sorted(set(present), key=lambda v: (isinstance(v, str), v))
        classes = tuple(ClassInfo(i, c.name, c.color) for i, c in enumerate(table))
        return classes, {str(v): i for i, v in enumerate(distinct)}, None
    palette = qualitative_palette(len(rules))
    classes = tuple(ClassInfo(i, r.name, r.color or ("#D9D9D9" if r.other else palette[i])) for i, r in enumerate(rules))
    mapping = {str(v): i for i, r in enumerate(rules) for v in r.values}
    other = next((i for i, r in enumerate(rules) if r.other), None)
    return classes, mapping, other


# ----------------------------------------------------------------------------- prepare
@dataclass(frozen=True)
class LabelRaster:
    """A class raster as the label source: its file, band, nodata (None: the file's) and layer name."""

    path: str
    band: int = 1
    nodata: float | None = None
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "band": self.band, "nodata": self.nodata, "name": self.name}


@dataclass(frozen=True)
class PrepareParams:
    """Task ``prepare_training_data``: labels (features with a class, or a class raster) → a dataset folder."""

    labels: FeatureSet | None = None
    label_raster: LabelRaster | None = None
    classes: tuple[ClassRule, ...] = ()
    buffer: float = 0.0  # points and lines: burnt this far around (grid CRS units); 0: the pixels they touch
    chip_size: int = DEFAULT_CHIP_SIZE
    stride: int | None = None  # None: the chip size (no overlap)
    block_size: int | None = None  # spatial blocks of the split, px; None: twice the chip size
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)  # band names an input holds (a subset)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.label_raster is None):
            raise ConfigError("give the labels either as features with a class or as a class raster (one of them)",
                              field="params.labels")  # fmt: skip
        for name in ("chip_size", "stride", "block_size", "seed"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"must be a whole number, got {v!r}", field=f"params.{name}")
        check_range("chip_size", self.chip_size, MIN_CHIP_SIZE, MAX_CHIP_SIZE)
        if self.chip_size % 16:
            near = max(MIN_CHIP_SIZE, round(self.chip_size / 16) * 16)
            raise ConfigError(f"must be a multiple of 16 (TerraMind's patch size), got {self.chip_size} (try {near})",
                              field="params.chip_size")  # fmt: skip
        if self.stride is not None:
            check_range("stride", self.stride, 1, 4 * self.chip_size)
        if self.block_size is not None:
            check_range("block_size", self.block_size, self.chip_size, None)
        check_range("seed", self.seed, 0, MAX_SEED)
        if not math.isfinite(self.buffer) or self.buffer < 0:
            raise ConfigError(f"must be 0 or a positive distance, got {self.buffer!r}", field="params.buffer")
        fr = self.fractions
        if (len(fr) != 3 or any(not isinstance(f, (int, float)) or isinstance(f, bool) or f < 0 for f in fr)
                or abs(sum(fr) - 1) > 1e-3 or fr[0] <= 0 or fr[1] <= 0):  # fmt: skip
            raise ConfigError(f"must be three fractions (train, val, test) adding up to 1, train and val above 0, "
                              f"got {list(fr)}", field="params.fractions")  # fmt: skip
        object.__setattr__(self, "bands", band_subsets(self.bands))

    @property
    def effective_stride(self) -> int:
        return self.stride or self.chip_size

    @property
    def effective_block_size(self) -> int:
        return self.block_size or 2 * self.chip_size

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PrepareParams:
        labels = params.get("labels")
        feature_set = None
        if labels is not None:
            if isinstance(labels, Mapping) and isinstance(labels.get("features"), list):
                for f in labels["features"]:
                    if isinstance(f, Mapping) and f.get("class") is not None:
                        check_class_value(f["class"], "params.labels.class")
            feature_set = FeatureSet.from_params(labels, "params.labels", labelled=True)
        raster = params.get("label_raster")
        label_raster = None
        if raster is not None:
            if not isinstance(raster, Mapping) or not isinstance(raster.get("path"), str) or not raster["path"]:
                raise ConfigError('must be {"path": "<class raster>", "band": 1, "nodata": null}', field="params.label_raster")
            band = raster.get("band", 1)
            if isinstance(band, bool) or not isinstance(band, int) or band < 1:
                raise ConfigError(f"band must be a band number (1-based), got {band!r}", field="params.label_raster")
            nodata = raster.get("nodata")
            if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, (int, float))):
                raise ConfigError(f"nodata must be a number or null, got {nodata!r}", field="params.label_raster")
            label_raster = LabelRaster(raster["path"], band, nodata, str(raster.get("name") or ""))
        fractions = params.get("fractions", list(DEFAULT_FRACTIONS))
        if not isinstance(fractions, (list, tuple)):
            raise ConfigError(f"must be three fractions (train, val, test), got {fractions!r}", field="params.fractions")
        bands = params.get("bands") or {}
        if not isinstance(bands, Mapping) or not all(isinstance(v, (list, tuple)) for v in bands.values()):
            raise ConfigError(f'must map modalities to band names, e.g. {{"S2L2A": ["BLUE", "GREEN", "RED"]}}, got {bands!r}',
                              field="params.bands")  # fmt: skip

        def optional(name: str) -> int | None:
            return None if params.get(name) is None else read_int(params, name, 0)

        return cls(feature_set, label_raster, parse_class_rules(params.get("classes")), read_float(params, "buffer", 0.0),
                   read_int(params, "chip_size", DEFAULT_CHIP_SIZE), optional("stride"), optional("block_size"),
                   tuple(fractions), read_int(params, "seed", 0), dict(bands), read_bool(params, "overwrite", False))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {
            "labels": self.labels.as_params() if self.labels else None,
            "label_raster": self.label_raster.as_dict() if self.label_raster else None,
            "classes": [r.as_dict() for r in self.classes], "buffer": self.buffer, "chip_size": self.chip_size,
            "stride": self.stride, "block_size": self.block_size, "fractions": list(self.fractions), "seed": self.seed,
            "bands": {k: list(v) for k, v in self.bands.items()}, "overwrite": self.overwrite,
        }  # fmt: skip

    def check(self, inputs: Sequence[str], band_counts: Mapping[str, int] | None = None) -> None:
        """The inputs (modality names, the first defines the grid) can be chipped; band names fit the bands given."""
        if not inputs:
            raise ConfigError("give at least one input raster (one per modality)", field="inputs")
        for m in inputs:
            try:
                modality = get_modality(m)
            except UnsupportedModalityError as e:
                raise ConfigError(str(e), field=f"inputs.{m}") from None
            if modality.is_tokenized_input or not modality.can_be_input:
                raise ConfigError(f"{modality.name} is not a pixel input TerraMind can be fine-tuned on", field=f"inputs.{m}")
        for m in self.bands:
            if m not in inputs:
                raise ConfigError(f"band names are given for {m}, which is not an input", field="params.bands")
        for m, n in (band_counts or {}).items():
            names = self.band_names(m)
            if n != len(names):
                raise ConfigError(f"{len(names)} band(s) of {m} are expected ({', '.join(names)}), the input gives {n}; "
                                  "choose the bands in the modality's order, or name the bands the input holds",
                                  field=f"inputs.{m}")  # fmt: skip

    def band_names(self, modality: str) -> tuple[str, ...]:
        m = get_modality(modality)
        return self.bands.get(m.name) or m.bands


def check_dataset_folder(path: str, overwrite: bool, field_name: str = "outputs.dataset") -> str:
    """The folder a dataset is written to: new (or, with ``overwrite``, an earlier dataset), in a writable folder."""
    if not isinstance(path, str) or not path:
        raise ConfigError("needs a folder path", field=field_name)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"'{path}' is a file; give a folder for the dataset", field=field_name)
        if not overwrite:
            raise ConfigError(f"the folder '{path}' exists already; choose a new folder (or allow overwriting an "
                              "earlier dataset)", field=field_name)  # fmt: skip
        if not os.path.isfile(os.path.join(path, "dataset.json")):
            raise ConfigError(f"'{path}' exists and is not a dataset folder (no dataset.json); it is never replaced",
                              field=field_name)  # fmt: skip
    check_writable_folder(os.path.dirname(os.path.abspath(path)), field_name)
    return path


# ----------------------------------------------------------------------------- the dataset, as JSON
def read_dataset_document(folder: str | os.PathLike[str], field_name: str | None = "params.dataset") -> tuple[str, dict]:
    """``(path, document)`` of a dataset folder's ``dataset.json``, which must be readable JSON of this
    format and version; else one ``ConfigError`` saying which (on ``field_name``)."""
    path = os.path.join(folder, "dataset.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"'{folder}' is not a fine-tuning dataset folder: cannot read dataset.json "
                          f"({e.strerror or e}); make one with Prepare training data", field=field_name) from None
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})", field=field_name) from None
    if not isinstance(doc, dict) or doc.get("format") != DATASET_FORMAT:
        raise ConfigError(f"{path} is not a fine-tuning dataset description (expected \"format\": "
                          f"\"{DATASET_FORMAT}\")", field=field_name)  # fmt: skip
    if doc.get("format_version") != DATASET_FORMAT_VERSION:
        raise ConfigError(f"{path} has format_version {doc.get('format_version')}; this plugin reads "
                          f"{DATASET_FORMAT_VERSION}", field=field_name)  # fmt: skip
    return path, doc


@dataclass(frozen=True)
class DatasetSummary:
    """What ``dataset.json`` of a dataset folder says (read with the standard library)."""

    folder: str
    chip_size: int
    modalities: dict[str, tuple[str, ...]]  # modality -> band names
    classes: tuple[ClassInfo, ...]
    split_chips: dict[str, int]
    class_pixels: dict[str, tuple[int, ...]]  # split -> pixels per class

    @classmethod
    def read(cls, folder: str, field_name: str = "params.dataset") -> DatasetSummary:
        path, doc = read_dataset_document(folder, field_name)
        try:
            return cls(
                folder, int(doc["chip_size"]), {m: tuple(d["bands"]) for m, d in doc["modalities"].items()},
                tuple(ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in doc["classes"]),
                {s: int(d["chips"]) for s, d in doc["splits"].items()},
                {s: tuple(int(n) for n in d["class_pixels"]) for s, d in doc["splits"].items()},
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path} is incomplete ({type(e).__name__}: {e})", field=field_name) from None


# ----------------------------------------------------------------------------- finetune
@dataclass(frozen=True)
class FinetuneParams:
    """Task ``finetune``: the recipe's user-facing choices (models/training/recipe.py holds the rest)."""

    dataset: str
    name: str = "model"
    modalities: tuple[str, ...] = ()  # () = every modality of the dataset
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    loss: str = "dice"
    class_weights: str | tuple[float, ...] = "none"
    lr: float = 1e-4
    epochs: int = 50
    batch_size: int = 8
    patience: int = 10  # early stopping; 0: none
    backbone: str = "auto"  # auto | frozen | trainable
    augment: bool = True
    statistics: str = "pretraining"
    seed: int = 42
    resume: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError("give the dataset folder (made by Prepare training data)", field="params.dataset")
        if not self.name or any(c in self.name for c in '/\\:*?"<>|') or self.name.startswith("."):
            raise ConfigError(f"'{self.name}' must be a plain file name (no path separators)", field="params.name")
        object.__setattr__(self, "modalities", modality_names(list(self.modalities), "modalities"))
        object.__setattr__(self, "bands", band_subsets(self.bands))
        for name, options in (("loss", LOSSES), ("backbone", BACKBONE_MODES), ("statistics", STATISTICS)):
            if getattr(self, name) not in options:
                raise ConfigError(f"must be one of {', '.join(options)}, got {getattr(self, name)!r}", field=f"params.{name}")
        cw = self.class_weights
        if isinstance(cw, str) and cw not in CLASS_WEIGHTS:
            raise ConfigError(f"must be none, balanced or one weight per class, got {cw!r}", field="params.class_weights")
        if isinstance(cw, tuple) and (not cw or min(cw) < 0):
            raise ConfigError(f"must be non-negative numbers, one per class, got {list(cw)}", field="params.class_weights")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ConfigError(f"must be a learning rate in (0, 1], got {self.lr!r}", field="params.lr")
        for name, low, high in (("epochs", 1, 10000), ("batch_size", 1, 1024), ("patience", 0, 10000),
                                ("seed", 0, MAX_SEED)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"must be a whole number, got {v!r}", field=f"params.{name}")
            check_range(name, v, low, high)

    @property
    def freeze_backbone(self) -> bool | None:
        return {"auto": None, "frozen": True, "trainable": False}[self.backbone]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FinetuneParams:
        d = cls(dataset="-")
        cw: Any = params.get("class_weights", "none")
        if isinstance(cw, list):
            if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in cw):
                raise ConfigError(f"must be numbers, one per class, got {cw!r}", field="params.class_weights")
            cw = tuple(float(w) for w in cw)
        elif cw is None:
            cw = "none"
        bands = params.get("bands") or {}
        if not isinstance(bands, Mapping) or not all(isinstance(v, (list, tuple)) for v in bands.values()):
            raise ConfigError(f'must map modalities to band names, e.g. {{"S2L2A": ["BLUE", "GREEN", "RED"]}}, got {bands!r}',
                              field="params.bands")  # fmt: skip
        return cls(read_text(params, "dataset") or "", read_text(params, "name") or d.name,
                   tuple(params.get("modalities") or ()), dict(bands), params.get("loss", d.loss), cw,
                   read_float(params, "lr", d.lr), read_int(params, "epochs", d.epochs),
                   read_int(params, "batch_size", d.batch_size), read_int(params, "patience", d.patience),
                   params.get("backbone", d.backbone), read_bool(params, "augment", d.augment),
                   params.get("statistics", d.statistics), read_int(params, "seed", d.seed),
                   read_text(params, "resume"))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        cw = list(self.class_weights) if isinstance(self.class_weights, tuple) else self.class_weights
        return {"dataset": self.dataset, "name": self.name, "modalities": list(self.modalities),
                "bands": {k: list(v) for k, v in self.bands.items()}, "loss": self.loss, "class_weights": cw,
                "lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size, "patience": self.patience,
                "backbone": self.backbone, "augment": self.augment, "statistics": self.statistics, "seed": self.seed,
                "resume": self.resume}  # fmt: skip

    def check(self, model_id: str, dataset: DatasetSummary) -> None:
        """The backbone id, and the dataset against these choices: modalities, bands, chips per batch, classes."""
        if model_id not in BACKBONES:
            raise ConfigError(f"'{model_id}' is not a TerraMind backbone to fine-tune (one of {', '.join(BACKBONES)})",
                              field="model.id")  # fmt: skip
        have = dataset.modalities
        missing = [m for m in self.modalities if m not in have]
        if missing:
            raise ConfigError(f"the model is to read {', '.join(missing)}, but the dataset {dataset.folder} was prepared "
                              f"with {', '.join(have)}; choose modalities the dataset has (or prepare it with "
                              f"{', '.join(missing)})", field="params.modalities")  # fmt: skip
        for m, names in self.bands.items():
            if m not in (self.modalities or tuple(have)):
                raise ConfigError(f"bands are given for {m}, which the model does not read", field="params.bands")
            other = [b for b in names if b not in have.get(m, ())]
            if other:
                raise ConfigError(f"the dataset was written for other bands of {m}: it holds {', '.join(have[m])}, not "
                                  f"{', '.join(other)}; choose bands among those, or prepare the dataset with them",
                                  field="params.bands")  # fmt: skip
        if "_tim" in model_id and self.bands:
            raise ConfigError("TiM backbones read every band of a modality (TerraTorch refuses band subsets with TiM)",
                              field="params.bands")  # fmt: skip
        train = dataset.split_chips.get("train", 0)
        if train < self.batch_size:
            raise ConfigError(f"is {self.batch_size}, but the dataset's train split has {train} chip(s): fewer chips than "
                              "one batch; lower the batch size, or prepare more chips (a larger area, smaller chips or a "
                              "smaller stride)", field="params.batch_size")  # fmt: skip
        if dataset.split_chips.get("val", 0) == 0:
            raise ConfigError(f"the dataset {dataset.folder} has no validation chips; prepare it with a larger val "
                              "fraction or area", field="params.dataset")  # fmt: skip
        pixels = dataset.class_pixels.get("train", ())
        present = [c.name for c, n in zip(dataset.classes, pixels) if n > 0]
        if len(present) < 2:
            raise ConfigError(f"the dataset's train split holds a single class ({', '.join(present) or 'none'}); a "
                              "segmentation model needs labelled pixels of at least two classes",
                              field="params.dataset")  # fmt: skip
        if isinstance(self.class_weights, tuple) and len(self.class_weights) != len(dataset.classes):
            raise ConfigError(f"has {len(self.class_weights)} weights, but the dataset has {len(dataset.classes)} classes",
                              field="params.class_weights")  # fmt: skip


def check_model_folder(folder: str, name: str, resume: str | None, field_name: str = "outputs.model") -> str:
    """The folder a fine-tuned model is written to: no model of that name in it yet (unless resuming)."""
    if not isinstance(folder, str) or not folder:
        raise ConfigError("needs a folder path", field=field_name)
    if os.path.isfile(folder):
        raise ConfigError(f"'{folder}' is a file; give a folder for the model files", field=field_name)
    existing = [s for s in (".ckpt", ".yaml", ".json") if os.path.exists(os.path.join(folder, name + s))]
    if existing and not resume:
        raise ConfigError(f"the folder '{folder}' already holds a model '{name}' ({', '.join(name + s for s in existing)}); "
                          "choose another folder or model name, or resume from its checkpoint", field=field_name)  # fmt: skip
    check_writable_folder(folder if os.path.isdir(folder) else os.path.dirname(os.path.abspath(folder)), field_name)
    return folder


def parse_bands(text: str | None, field_name: str = "params.bands") -> dict[str, tuple[str, ...]]:
    """``"S2L2A: BLUE, GREEN, RED; S1RTC: VV"`` → ``{"S2L2A": ("BLUE", "GREEN", "RED"), "S1RTC": ("VV",)}``."""
    out: dict[str, tuple[str, ...]] = {}
    for part in filter(str.strip, re.split(r"[;\n]", text or "")):
        name, sep, bands = part.partition(":")
        names = tuple(b.strip() for b in bands.split(",") if b.strip())
        if not sep or not names:
            raise ConfigError(f"cannot read '{part.strip()}'; write '<MODALITY>: <band>, <band>; ...', e.g. "
                              "'S2L2A: BLUE, GREEN, RED'", field=field_name)  # fmt: skip
        try:
            modality = get_modality(name.strip())
        except UnsupportedModalityError as e:
            raise ConfigError(str(e), field=field_name) from None
        out[modality.name] = modality.band_subset(names, field_name)
    return out
