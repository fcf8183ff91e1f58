"""Typed parameters of the embedding tasks (``embed``, ``similarity``, ``cluster``, ``classify``), torch-free.

The same contract as models/core/params.py (which holds the generation-side tasks): one frozen
dataclass per task, ``from_params`` reads the job's ``params`` strictly, ``as_params`` writes it,
``__post_init__`` checks ranges and ``check(...)`` checks against the model's card and the inputs;
every ``ConfigError`` carries the job field at fault. The QGIS side builds the same objects, so the
dialog and the worker refuse a value with the same message.

- ``EmbedParams``: merge mode (``mean``, ``max``, ``concat``: one vector per token; ``dict`` and no
  merge have no raster form), the encoder layers (1-based; several are averaged; none: the last),
  band subsets per raw modality (terratorch's ``bands``: pretrained patch-embedding columns), TiM
  modalities (generated as tokens first, seeded), the output data type, the optional PCA view.
- ``SimilarityParams``: reference features and how several are combined (``mean``: similarity to
  their averaged embedding, ``max``: the best similarity to any of them).
- ``ClusterParams``: k, seed, the sample k-means is fitted on, its iterations.
- ``ClassifyParams``: labelled features (training) or a saved classifier (applying), folds, seed,
  L2 regularisation, upsampling to the input grid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalogue import ModelSpec
from .errors import ConfigError
from .features import FeatureSet, require_folds, require_two_classes
from .job import TilingSpec
from .modalities import Modality, band_subsets, get_modality
from .params import (
    MAX_SEED,
    check_range,
    modality_names,
    read_bool,
    read_float,
    read_int,
    read_text,
    require_inputs_accepted,
    require_kind,
)

MERGE_METHODS = ("mean", "max", "concat")  # merges with one vector per token (dict and None have no raster form)
DATA_TYPES = ("float32", "float16")
AGGREGATES = ("mean", "max")
DEFAULT_SAMPLE_SIZE = 20000
MAX_CLUSTERS = 254  # uint8 class ids; 255 is nodata
DEFAULT_FOLDS = 5
MAX_FOLDS = 20
DEFAULT_REGULARIZATION = 0.01
LAYERS_EXAMPLE = "12, 9-12 or 4,8,12"


def parse_layers(text: str | None) -> tuple[int, ...]:
    """``'12'``, ``'9-12'``, ``'4, 8, 12'`` → 1-based layer numbers (empty: the last layer)."""
    if text is None or not text.strip():
        return ()
    out: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigError(f"'{text}' is not a list of layer numbers; give e.g. {LAYERS_EXAMPLE}", field="params.layers")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ConfigError(f"'{part}' counts down; write the range as {b}-{a}", field="params.layers")
        out += range(a, b + 1)
    return tuple(dict.fromkeys(out))


def check_token_tiling(tiling: TilingSpec) -> None:
    """Token boundaries of neighbouring tiles line up only with overlaps of whole 16-pixel patches."""
    if tiling.overlap % 16:
        near = max(16, round(tiling.overlap / 16) * 16) if tiling.overlap else 0
        raise ConfigError(f"must be a multiple of 16 for embeddings (whole 16-pixel patches), got {tiling.overlap} "
                          f"(try {near})", field="tiling.overlap")  # fmt: skip


def _seed(params: Mapping[str, Any]) -> int:
    return read_int(params, "seed", 0, 0, MAX_SEED)


def _choice(params: Mapping[str, Any], name: str, options: Sequence[str], default: str) -> str:
    value = params.get(name, default)
    if value not in options:
        raise ConfigError(f"must be one of {', '.join(options)}, got {value!r}", field=f"params.{name}")
    return value


# ----------------------------------------------------------------------------- embed
@dataclass(frozen=True)
class EmbedParams:
    """Task ``embed``: how the encoder's features become an embedding raster."""

    merge: str = "mean"
    layers: tuple[int, ...] = ()  # 1-based encoder blocks, averaged; () = the last
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)  # modality -> band names (a subset)
    tim: tuple[str, ...] = ()
    seed: int = 0
    dtype: str = "float32"
    pca: bool = False

    def __post_init__(self) -> None:
        if self.merge not in MERGE_METHODS:
            raise ConfigError(f"must be one of {', '.join(MERGE_METHODS)} (one vector per token), got {self.merge!r}",
                              field="params.merge")  # fmt: skip
        if self.dtype not in DATA_TYPES:
            raise ConfigError(f"must be one of {', '.join(DATA_TYPES)}, got {self.dtype!r}", field="params.dtype")
        for v in self.layers:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"layers are numbered from 1, got {v!r}", field="params.layers")
        object.__setattr__(self, "tim", modality_names(list(self.tim), "tim"))
        object.__setattr__(self, "bands", band_subsets(self.bands))
        check_range("seed", self.seed, 0, MAX_SEED)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, pca: bool = False) -> EmbedParams:
        layers = params.get("layers") or ()
        if isinstance(layers, str):
            layers = parse_layers(layers)
        if not isinstance(layers, (list, tuple)):
            raise ConfigError(f"must be a list of layer numbers (1-based), got {layers!r}", field="params.layers")
        bands = params.get("bands") or {}
        if not isinstance(bands, Mapping) or not all(isinstance(v, (list, tuple)) for v in bands.values()):
            raise ConfigError(f'must map modalities to band names, e.g. {{"S2L2A": ["B02", "B03", "B04"]}}, got {bands!r}',
                              field="params.bands")  # fmt: skip
        tim = params.get("tim") or []
        return cls(_choice(params, "merge", MERGE_METHODS, "mean"), tuple(layers), dict(bands), tuple(tim),
                   _seed(params), _choice(params, "dtype", DATA_TYPES, "float32"), read_bool(params, "pca", pca))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"merge": self.merge, "layers": list(self.layers), "bands": {k: list(v) for k, v in self.bands.items()},
                "tim": list(self.tim), "seed": self.seed, "dtype": self.dtype, "pca": self.pca}  # fmt: skip

    def check(self, spec: ModelSpec, inputs: Sequence[str]) -> None:
        """The model can embed these inputs this way."""
        require_kind(spec, "terramind", "embedding extraction", "terramind_v1_base")
        if not inputs:
            raise ConfigError(f"give at least one input; model '{spec.id}' accepts {', '.join(spec.inputs)}",
                              field="inputs")  # fmt: skip
        require_inputs_accepted(spec, inputs)
        depth = spec.config.encoder_depth  # type: ignore[union-attr]
        for v in self.layers:
            if v > depth:
                raise ConfigError(f"model '{spec.id}' has {depth} encoder layers (1-{depth}), got {v}", field="params.layers")
        for name in self.bands:
            if name not in inputs:
                raise ConfigError(f"a band subset is given for {name}, which is not an input", field="params.bands")
            if get_modality(name).is_tokenized_input:
                raise ConfigError(f"{name} is read through its tokenizer; band subsets are for raw-pixel inputs",
                                  field="params.bands")  # fmt: skip
        for name in self.tim:
            if name not in spec.outputs:
                raise ConfigError(f"model '{spec.id}' cannot generate {name} for TiM (it generates "
                                  f"{', '.join(spec.outputs)})", field="params.tim")  # fmt: skip
            if name in inputs and not get_modality(name).is_tokenized_input:
                raise ConfigError(f"{name} is a raw input; TiM generates modalities that are not given (or tokenized ones)",
                                  field="params.tim")  # fmt: skip
        if self.tim and self.bands:
            raise ConfigError("band subsets cannot be combined with TiM (terratorch's TiM backbone has no band subsets)",
                              field="params.tim")  # fmt: skip

    def layer_numbers(self, spec: ModelSpec) -> tuple[int, ...]:
        return self.layers or (spec.config.encoder_depth,)  # type: ignore[union-attr]

    def modality(self, name: str) -> Modality:
        """Input ``name`` as the model reads it: its band subset (names, labels, statistics) if one is given."""
        base = get_modality(name)
        return base.with_bands(self.bands[name]) if name in self.bands else base

    def dim(self, spec: ModelSpec, inputs: Sequence[str]) -> int:
        """D of the embedding raster: the model width, times the merged modalities for ``concat``."""
        width = spec.config.dim  # type: ignore[union-attr]
        if self.merge != "concat":
            return width
        tim_extra = [m for m in self.tim if m not in inputs]
        return width * (len(inputs) + len(tim_extra))


# ----------------------------------------------------------------------------- similarity
@dataclass(frozen=True)
class SimilarityParams:
    """Task ``similarity``: cosine similarity of every token to reference features."""

    references: FeatureSet
    aggregate: str = "mean"

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}", field="params.aggregate")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SimilarityParams:
        return cls(FeatureSet.from_params(params.get("references"), "params.references", labelled=False),
                   _choice(params, "aggregate", AGGREGATES, "mean"))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"references": self.references.as_params(), "aggregate": self.aggregate}


# ----------------------------------------------------------------------------- cluster
@dataclass(frozen=True)
class ClusterParams:
    """Task ``cluster``: k-means on (a sample of) the embeddings, then every token to its nearest centre."""

    k: int = 8
    seed: int = 0
    sample_size: int = DEFAULT_SAMPLE_SIZE
    max_iterations: int = 100

    def __post_init__(self) -> None:
        for name, low, high in (("k", 2, MAX_CLUSTERS), ("seed", 0, MAX_SEED), ("sample_size", 2, 10_000_000),
                                ("max_iterations", 1, 10_000)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"must be a whole number, got {value!r}", field=f"params.{name}")
            check_range(name, value, low, high)
        if self.sample_size < self.k:
            raise ConfigError(f"is {self.sample_size}, fewer than the {self.k} clusters", field="params.sample_size")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ClusterParams:
        d = cls()
        return cls(read_int(params, "k", d.k), _seed(params), read_int(params, "sample_size", d.sample_size),
                   read_int(params, "max_iterations", d.max_iterations))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed, "sample_size": self.sample_size, "max_iterations": self.max_iterations}


# ----------------------------------------------------------------------------- classify
@dataclass(frozen=True)
class ClassifyParams:
    """Task ``classify``: train on ``labels`` (and cross-validate), or apply the saved ``classifier``."""

    labels: FeatureSet | None = None
    classifier: str | None = None  # a saved classifier (.json) to apply instead of training
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    regularization: float = DEFAULT_REGULARIZATION
    upsample: bool = False
    probabilities: bool = False

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.classifier is None):
            raise ConfigError("give either labelled features (to train a classifier) or a saved classifier file "
                              "(to apply it), not both",
                              field="params.labels" if self.labels else "params.classifier")  # fmt: skip
        if isinstance(self.folds, bool) or not isinstance(self.folds, int):
            raise ConfigError(f"must be a whole number, got {self.folds!r}", field="params.folds")
        check_range("folds", self.folds, 2, MAX_FOLDS)
        check_range("seed", self.seed, 0, MAX_SEED)
        if not self.regularization > 0:
            raise ConfigError(f"must be greater than 0, got {self.regularization:g}", field="params.regularization")
        if self.labels is not None:
            require_two_classes(self.labels)
            require_folds(self.labels, self.folds)

    @property
    def training(self) -> bool:
        return self.labels is not None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, probabilities: bool = False) -> ClassifyParams:
        classifier = read_text(params, "classifier", "classifier.json")
        labels = None if classifier and params.get("labels") is None else (
            FeatureSet.from_params(params.get("labels"), "params.labels", labelled=True))  # fmt: skip
        return cls(labels, classifier, read_int(params, "folds", DEFAULT_FOLDS), _seed(params),
                   read_float(params, "regularization", DEFAULT_REGULARIZATION), read_bool(params, "upsample", False),
                   read_bool(params, "probabilities", probabilities))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"labels": self.labels.as_params() if self.labels else None, "classifier": self.classifier,
                "folds": self.folds, "seed": self.seed, "regularization": self.regularization,
                "upsample": self.upsample, "probabilities": self.probabilities}  # fmt: skip
