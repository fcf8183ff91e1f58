"""Typed task parameters: every request rule written once, used by the QGIS side and the worker.

Each task's parameters are one frozen dataclass (``Sampling``, ``GenerateParams``,
``ReconstructParams``, ``SegmentParams``, ``MapWaterParams``). Its ``__post_init__`` checks the
values' ranges; its ``check(...)`` checks them against a model's catalogue entry and the inputs
given. ``from_params`` reads the job's ``params`` dict (the worker), ``as_params`` writes it (the
QGIS side), so the values cross the process boundary in one form. A broken rule raises
``ConfigError`` with ``field`` = the job field at fault; the worker prefixes the job field's name,
QGIS its parameter key (``errors.where``).

Defaults live here and nowhere else (``DEFAULT_TIMESTEPS``, the sampling defaults of terratorch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalogue import ModelSpec, tokenizer_for
from .errors import ConfigError, UnsupportedModalityError
from .modalities import RAW_INPUTS, get_modality

DEFAULT_TIMESTEPS = 10  # DDIM steps: the IBM/terramind notebooks' value (the reference's own default is 50)
MAX_TIMESTEPS = 1000
MAX_SEED = 2**31 - 1
MAP_WATER_OPTIONAL_INPUTS = ("S1GRD", "S1RTC")
FINETUNED_INPUTS = RAW_INPUTS  # fine-tuned TerraTorch backbones read pixels, not tokens


# ----------------------------------------------------------------------------- readers
def read_int(params: Mapping[str, Any], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    """``params[name]`` as a whole number in ``[low, high]`` (``default`` when absent)."""
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"must be a whole number, got {value!r}", field=f"params.{name}")
    return check_range(name, int(value), low, high)


def read_float(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"must be a number, got {value!r}", field=f"params.{name}")
    return float(value)


def read_bool(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", field=f"params.{name}")
    return value


def read_text(params: Mapping[str, Any], name: str, example: str = "") -> str | None:
    """``params[name]`` as text (None when absent or empty)."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"must be text{' like ' + repr(example) if example else ''}, got {value!r}", field=f"params.{name}")
    return value


def check_range(name: str, value: float, low: float | None, high: float | None) -> Any:
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ConfigError(f"must be at least {low:g}, got {value:g}", field=f"params.{name}")
        raise ConfigError(f"must be between {low:g} and {high:g}, got {value:g}", field=f"params.{name}")
    return value


def modality_names(values: Any, name: str) -> tuple[str, ...]:
    """A list of modality names, canonical (``'dem'`` → ``'DEM'``)."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ConfigError(f"must be a list of modality names, got {values!r}", field=f"params.{name}")
    try:
        return tuple(get_modality(str(v)).name for v in values)
    except UnsupportedModalityError as e:
        raise ConfigError(str(e), field=f"params.{name}") from None


# ----------------------------------------------------------------------------- model checks
def require_kind(spec: ModelSpec, kind: str, task: str, example: str) -> None:
    if spec.kind != kind:
        raise ConfigError(f"'{spec.id}' is a {spec.kind}; {task} needs a {kind} model (e.g. {example})", field="model.id")


def require_inputs_accepted(spec: ModelSpec, inputs: Sequence[str]) -> None:
    for name in inputs:
        if name not in spec.inputs:
            raise ConfigError(f"model '{spec.id}' does not accept {name} (it accepts {', '.join(spec.inputs)})",
                              field=f"inputs.{name}")  # fmt: skip


def require_weights(spec: ModelSpec, weights: str | None, untrained: bool) -> None:
    """A model card without published weights needs local weights or the untrained fill."""
    if spec.weights is None and not weights and not untrained:
        raise ConfigError(f"'{spec.id}' has no published weights; give a checkpoint in WEIGHTS or tick UNTRAINED",
                          field="model.id")  # fmt: skip


def decoder_tile_multiple(spec: ModelSpec, outputs: Sequence[str]) -> int:
    """Tile sizes must be multiples of this: 32 where a diffusion (DiVAE) decoder makes an output, else 16."""
    kinds = [(spec if spec.kind == "tokenizer" else tokenizer_for(spec, m)).config.kind for m in outputs]
    return 32 if "divae" in kinds else 16


# ----------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Sampling:
    """TerraMind's token sampling (terratorch defaults: temperature 1, top-p 0.8, no top-k)."""

    temperature: float = 1.0
    top_p: float = 0.8  # nucleus threshold; 0 disables it
    top_k: int | float = 0  # the k most likely tokens (int), or that fraction of the vocabulary (float in [0, 1])

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0.0, None)
        check_range("top_p", self.top_p, 0.0, 1.0)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, float)):
            raise ConfigError(f"must be a whole number, got {self.top_k!r}", field="params.top_k")
        if isinstance(self.top_k, float) and not 0 <= self.top_k <= 1:
            raise ConfigError(f"must be a whole number >= 0 or a fraction in [0, 1], got {self.top_k}", field="params.top_k")
        check_range("top_k", self.top_k, 0, None)

    @property
    def greedy(self) -> bool:
        return abs(self.temperature) <= 1e-10  # numpy.isclose(T, 0, atol=1e-10), as the reference

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Sampling:
        d = cls()
        return cls(read_float(params, "temperature", d.temperature), read_float(params, "top_p", d.top_p),
                   read_int(params, "top_k", d.top_k))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


def _seed(params: Mapping[str, Any]) -> int:
    return read_int(params, "seed", 0, 0, MAX_SEED)


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"must be a whole number, got {seed!r}", field="params.seed")
    check_range("seed", seed, 0, MAX_SEED)


def _check_timesteps(timesteps: int) -> None:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int):
        raise ConfigError(f"must be a whole number, got {timesteps!r}", field="params.timesteps")
    check_range("timesteps", timesteps, 1, MAX_TIMESTEPS)


# ----------------------------------------------------------------------------- generate
@dataclass(frozen=True)
class GenerateParams:
    """Task ``generate``: the outputs in generation order (each conditioned on the inputs and the ones before)."""

    outputs: tuple[str, ...]
    timesteps: int = DEFAULT_TIMESTEPS
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", modality_names(list(self.outputs), "outputs"))
        if not self.outputs:
            raise ConfigError("is empty; request at least one modality to generate", field="params.outputs")
        twice = sorted({m for m in self.outputs if self.outputs.count(m) > 1})
        if twice:
            raise ConfigError(f"{', '.join(twice)} is requested twice", field="params.outputs")
        _check_timesteps(self.timesteps)
        _check_seed(self.seed)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], default_outputs: Sequence[str] = ()) -> GenerateParams:
        outputs = params.get("outputs") or list(default_outputs)
        return cls(modality_names(outputs, "outputs"), read_int(params, "timesteps", DEFAULT_TIMESTEPS),
                   Sampling.from_params(params), _seed(params))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"outputs": list(self.outputs), "timesteps": self.timesteps, **self.sampling.as_params(), "seed": self.seed}

    def check(self, spec: ModelSpec, inputs: Sequence[str]) -> None:
        """The model can make these outputs from these inputs."""
        require_kind(spec, "terramind", "generation", "terramind_v1_base")
        if not inputs:
            raise ConfigError(f"give at least one input; model '{spec.id}' accepts {', '.join(spec.inputs)}",
                              field="inputs")  # fmt: skip
        require_inputs_accepted(spec, inputs)
        for m in self.outputs:
            if m not in spec.outputs:
                raise ConfigError(f"model '{spec.id}' cannot generate {m} (it generates {', '.join(spec.outputs)})",
                                  field="params.outputs")  # fmt: skip
            if m in inputs:
                raise ConfigError(f"{m} is also an input; TerraMind cannot generate a modality it is given: "
                                  f"remove it from the outputs or leave that input empty", field="params.outputs")  # fmt: skip

    def tile_multiple(self, spec: ModelSpec) -> int:
        return decoder_tile_multiple(spec, self.outputs)


# ----------------------------------------------------------------------------- reconstruct
@dataclass(frozen=True)
class ReconstructParams:
    """Task ``reconstruct``: one modality through its tokenizer and back."""

    modality: str
    timesteps: int = DEFAULT_TIMESTEPS
    seed: int = 0
    difference: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", modality_names([self.modality], "modality")[0])
        _check_timesteps(self.timesteps)
        _check_seed(self.seed)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], inputs: Sequence[str], difference: bool) -> ReconstructParams:
        name = params.get("modality") or (inputs[0] if len(inputs) == 1 else None)
        if not name:
            raise ConfigError("is required when the job has several inputs", field="params.modality")
        return cls(str(name), read_int(params, "timesteps", DEFAULT_TIMESTEPS), _seed(params),
                   read_bool(params, "difference", difference))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"modality": self.modality, "timesteps": self.timesteps, "seed": self.seed, "difference": self.difference}

    def check(self, spec: ModelSpec, inputs: Sequence[str]) -> None:
        if self.modality not in inputs:
            raise ConfigError(f"is {self.modality} but there is no {self.modality} input", field="params.modality")
        require_kind(spec, "tokenizer", "reconstruction", f"terramind_v1_tokenizer_{self.modality.lower()}")
        if spec.modality != self.modality:
            raise ConfigError(f"'{spec.id}' is the tokenizer of {spec.modality}, but the modality is {self.modality}",
                              field="model.id")  # fmt: skip

    def tile_multiple(self, spec: ModelSpec) -> int:
        return decoder_tile_multiple(spec, [self.modality])


# ----------------------------------------------------------------------------- map water
@dataclass(frozen=True)
class MapWaterParams:
    """Task ``map_water``: water from the land cover TerraMind generates (zero-shot)."""

    flooded_vegetation: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.flooded_vegetation, bool):
            raise ConfigError(f"must be true or false, got {self.flooded_vegetation!r}", field="params.flooded_vegetation")
        _check_seed(self.seed)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MapWaterParams:
        return cls(read_bool(params, "flooded_vegetation", False), Sampling.from_params(params), _seed(params))

    def as_params(self) -> dict[str, Any]:
        return {"flooded_vegetation": self.flooded_vegetation, **self.sampling.as_params(), "seed": self.seed}

    @staticmethod
    def inputs_in_order(inputs: Sequence[str]) -> tuple[str, ...]:
        """S2L2A first (the working grid), then the optional Sentinel-1 inputs given."""
        return ("S2L2A", *(m for m in MAP_WATER_OPTIONAL_INPUTS if m in inputs))

    def check(self, spec: ModelSpec, inputs: Sequence[str]) -> None:
        require_kind(spec, "terramind", "map water", "terramind_v1_base")
        if "LULC" not in spec.outputs:
            raise ConfigError(f"model '{spec.id}' cannot generate LULC, which map water needs", field="model.id")
        if "S2L2A" not in inputs:
            raise ConfigError("map water needs a Sentinel-2 L2A input (S2L2A, 12 bands); Sentinel-1 is optional",
                              field="inputs.S2L2A")  # fmt: skip
        extra = [m for m in inputs if m != "S2L2A" and m not in MAP_WATER_OPTIONAL_INPUTS]
        if extra:
            raise ConfigError(f"map water reads S2L2A and optionally {' or '.join(MAP_WATER_OPTIONAL_INPUTS)}; "
                              f"remove the input(s) {', '.join(extra)}", field=f"inputs.{extra[0]}")  # fmt: skip
        require_inputs_accepted(spec, inputs)


# ----------------------------------------------------------------------------- segment
CLASSES_EXAMPLE = "0: Others #D9D9D9; 1: Flood #1F77B4"


MIN_CHIP, MAX_CHIP = 32, 4096


@dataclass(frozen=True)
class ChipSettings:
    """TerraTorch's ``tiled_inference`` chips as a run asks for them: each value overrides the model
    config's ``tiled_inference_parameters`` (``None``: the config's, else TerraTorch's default). Any
    value given runs the model with TerraTorch's tiling even when its config has none."""

    size: int | None = None  # crop: chip height and width (px)
    stride: int | None = None  # px between chip origins
    delta: int | None = None  # px dropped at every chip border

    def __post_init__(self) -> None:
        for name, low, high in (("chip_size", MIN_CHIP, MAX_CHIP), ("chip_stride", 1, MAX_CHIP),
                                ("chip_delta", 0, MAX_CHIP // 2)):  # fmt: skip
            value = getattr(self, name.removeprefix("chip_"))
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"must be a whole number, got {value!r}", field=f"params.{name}")
            check_range(name, value, low, high)
        if self.size is not None and self.stride is not None and self.stride > self.size:
            raise ConfigError(f"must not be larger than the chip size ({self.size} px), got {self.stride}: pixels "
                              "between chips would get no prediction", field="params.chip_stride")  # fmt: skip

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.size, self.stride, self.delta))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ChipSettings:
        def one(name: str) -> int | None:  # ranges: __post_init__
            return None if params.get(name) is None else read_int(params, name, 0)

        return cls(one("chip_size"), one("chip_stride"), one("chip_delta"))

    def as_params(self) -> dict[str, Any]:
        return {"chip_size": self.size, "chip_stride": self.stride, "chip_delta": self.delta}


@dataclass(frozen=True)
class SegmentParams:
    """Task ``segment``: a fine-tuned model (a catalogue id or a file) and how to name its classes."""

    config: str | None = None  # the TerraTorch YAML (optional for a .ckpt with hyper-parameters and catalogue ids)
    classes: str | None = None  # names/colours overriding the model's (core/classes.py)
    seed: int = 0  # TiM models sample tokens
    probabilities: bool = False
    chips: ChipSettings = field(default_factory=ChipSettings)

    def __post_init__(self) -> None:
        _check_seed(self.seed)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], probabilities: bool) -> SegmentParams:
        return cls(read_text(params, "config"), read_text(params, "classes", CLASSES_EXAMPLE), _seed(params),
                   read_bool(params, "probabilities", probabilities), ChipSettings.from_params(params))  # fmt: skip

    def as_params(self) -> dict[str, Any]:
        return {"config": self.config, "classes": self.classes, "seed": self.seed, "probabilities": self.probabilities,
                **self.chips.as_params()}  # fmt: skip

    @staticmethod
    def check_catalogue_model(spec: ModelSpec, inputs: Mapping[str, int]) -> DatePlan:
        """A catalogue fine-tuned model with ``inputs`` (modality -> number of dates): its inputs and dates."""
        require_kind(spec, "finetuned", "segmentation with a catalogue id", "terramind_v1_base_flood")
        missing = [m for m in spec.inputs if m not in inputs]
        if missing:
            raise ConfigError(f"model '{spec.id}' reads {', '.join(spec.inputs)}; give {' and '.join(missing)} "
                              f"(one layer per date)", field=f"inputs.{missing[0]}")  # fmt: skip
        extra = [m for m in inputs if m not in spec.inputs]
        if extra:
            raise ConfigError(f"model '{spec.id}' does not read {', '.join(extra)} (it reads {', '.join(spec.inputs)})",
                              field=f"inputs.{extra[0]}")  # fmt: skip
        cfg = spec.config
        return plan_dates({m: inputs[m] for m in spec.inputs}, temporal=getattr(cfg, "multi_temporal", False),
                          wanted=getattr(cfg, "dates", None))  # fmt: skip


# ----------------------------------------------------------------------------- dates
@dataclass(frozen=True)
class DatePlan:
    """How many dates a run gives the model, and which inputs' one date is repeated over them."""

    dates: int
    repeated: tuple[str, ...] = ()


def plan_dates(given: Mapping[str, int], *, temporal: bool, wanted: int | None) -> DatePlan:
    """The dates of a run: ``given`` = modality -> number of dates (layers) in input order.

    A single-date model takes one date of each input. A multi-temporal model takes ``wanted`` dates
    of every input (``None``: any number, the same for every input); an input with one date (a DEM)
    is repeated over them, as ImpactMesh's data module repeats a one-date file. Any other count is a
    ``ConfigError`` naming the input, the count given and the count the model wants.
    """
    if not temporal:
        for m, n in given.items():
            if n != 1:
                raise ConfigError(f"{n} dates (layers) given, but this model is not multi-temporal and reads one "
                                  f"date of {m}; give one layer", field=f"inputs.{m}")  # fmt: skip
        return DatePlan(1)
    several = {m: n for m, n in given.items() if n != 1}
    target = wanted if wanted is not None else next(iter(several.values()), 1)
    for m, n in several.items():
        if n != target:
            want = f"{target} dates" if wanted is not None else f"the same number of dates as the other inputs ({target})"
            raise ConfigError(f"{n} dates (layers) given, but the model reads {want} of {m}; give "
                              f"{target} layers in date order, or one layer to use it for every date",
                              field=f"inputs.{m}")  # fmt: skip
    repeated = tuple(m for m, n in given.items() if n == 1 and target > 1)
    return DatePlan(target, repeated)
