"""The worker protocol, version 1: a job in, JSON-line events out (torch-free).

The QGIS side (``processing_algorithms``) writes a job file and starts
``python -m <plugin>.models.worker <job.json>``; the worker streams one JSON object per line on
stdout and exits 0 on success, 1 on a handled error, 2 on a bad job, 130 when cancelled.
The same entry point is the headless command line (``--help`` there).

Job (JSON object)::

    {"protocol": 1,
     "task": "reconstruct" | "generate" | "segment" | "map_water" | "describe" | "download" | "export_onnx"
             | "embed" | "similarity" | "cluster" | "classify" | "prepare_training_data" | "finetune",
     "inputs":  {"<MODALITY or role>": {"path": "...", "bands": [1, 2, ...] | null,
                                        "nodata": <number> | null, "file_nodata": true,
                                        "name": "layer name",
                                        "dates": [<date>, ...]}},
     "outputs": {"<output key>": "<path of the GeoTIFF to write>"},
     "model":   {"id": "terramind_v1_base", "weights": null | "<file or folder>",
                 "tokenizer_weights": {"<MODALITY>": "<file or folder>"}, "untrained": false,
                 "catalogue_paths": ["<folder of JSON model cards>"]},
     "params":  {task-specific values: timesteps, seed, temperature, top_p, top_k, ...},
     "tiling":  {"tile_size": 224, "overlap": 32, "batch_size": 4},
     "extent":  null | [xmin, ymin, xmax, ymax]   (in the CRS of the first input),
     "device":  "auto" | "cpu" | "cuda" | "cuda:N",
     "precision": "fp32" | "bf16" | "fp16"}

``bands`` are 1-based band numbers of the file, listed in the model's band order (null: the file's
bands as they are). ``nodata`` overrides the file's no-data value; with ``nodata`` null,
``file_nodata`` false (added in protocol 1, additively; default true) ignores the file's value too.
``dates`` (added in protocol 1, additively; task ``segment`` with a multi-temporal model): every date of
the input in date order, one file each; a date is a path or an object with the input's own fields
(``path``, ``bands``, ``nodata``, ``file_nodata``, ``name``), the fields it leaves out taken from the
input; ``path`` may then be left out (it is the first date's). Without ``dates`` an input is one date.
``params["backend"]`` (tasks ``segment`` and ``reconstruct``) is ``"torch"``
or ``"onnx"``; left out, a ``model.weights`` file ending in ``.onnx`` (an export of
``models/backends/onnx_export.py``) selects ONNX Runtime, which needs no torch
(models/runtime/backend.py).

Tasks without input rasters (``inputs`` empty, ``tiling``/``extent`` unused):

- ``download`` (added in protocol 1, additively): ``params.models`` (catalogue ids; a TerraMind id
  brings its tokenizers, or those of ``params.tokenizers``: a list of modalities) and optional
  ``params.folder`` that receives each file under its official file name (the layout ``weights``
  accepts as a folder); result ``metrics.files``: model id, repo, revision, path, bytes, sha256 per
  file (models/worker/tasks/download.py).
- ``export_onnx`` (added in protocol 1, additively): a fine-tuned segmentation model
  (``model.weights`` + ``params.config``) or a tokenizer (``model.id`` + ``model.weights``) to the
  ``.onnx`` file ``outputs.model`` (a tokenizer's decoder graph to ``outputs.decoder``, by default
  ``onnx_decoder_path(outputs.model)``) for ``tiling.tile_size``; result ``metrics.export_check``:
  the deviation from torch the exporter measured (models/worker/tasks/export_onnx.py).

Embedding tasks (added in protocol 1, additively; parameters: models/core/embedding_params.py, the
raster's self-description: models/core/embeddings.py):

- ``embed``: ``inputs`` = modalities as for ``generate``, ``model.id`` a TerraMind model; ``params``
  ``merge``, ``layers``, ``bands`` (band subsets), ``tim``, ``seed``, ``dtype``; ``outputs.embeddings``
  (D bands, one pixel per 16 x 16 patch, tagged ``TERRAMIND_EMBEDDING``) and optional ``outputs.pca``
  (3 bands); result ``metrics``: ``dim``, ``token_grid``, ``explained_variance`` (with PCA).
- ``similarity``, ``cluster``, ``classify``: ``inputs.EMBEDDINGS`` = an embedding raster, or the inputs of
  ``embed`` (with its ``model`` and ``params``: the embeddings are made first, in a scratch file next to
  the first output). ``similarity``: ``params.references`` (features, models/core/features.py) and
  ``aggregate``; ``outputs.similarity``. ``cluster``: ``params`` ``k``, ``seed``, ``sample_size``,
  ``max_iterations``; ``outputs.clusters`` and optional ``outputs.centres`` (.csv). ``classify``:
  ``params.labels`` (features with a class) and ``folds``, ``seed``, ``regularization``, or
  ``params.classifier`` (a saved classifier .json to apply), ``upsample``; ``outputs.classes``,
  optional ``outputs.probabilities`` and, when training, ``outputs.classifier`` (.json); result
  ``metrics``: ``cv_accuracy``, ``confusion_matrix``, ``classes``.

Fine-tuning tasks (added in protocol 1, additively; parameters: models/core/training_params.py):

- ``prepare_training_data``: ``inputs`` = one raster per modality (the first one's grid, cut to
  ``extent``, is the dataset's); ``params.labels`` (features with a class, models/core/features.py, in
  the first input's CRS) or ``params.label_raster`` (``{"path", "band", "nodata", "name"}``), and
  ``classes``, ``buffer``, ``chip_size``, ``stride``, ``block_size``, ``fractions``, ``seed``,
  ``bands``, ``overwrite``; ``outputs.dataset`` = a new folder (TerraTorch's
  ``GenericMultiModalDataModule`` layout + ``dataset.json``, written as ``<folder>.partial-<pid>`` and
  renamed); result ``metrics``: ``classes``, ``chips`` and ``class_pixels`` per split
  (models/worker/tasks/prepare_training_data.py).
- ``finetune``: no ``inputs``; ``model.id`` = the backbone (``terramind_v1_<size>[_tim]``; weights as
  for every task, or ``untrained``); ``params.dataset`` (a folder of ``prepare_training_data``) and
  ``name``, ``modalities``, ``bands``, ``loss``, ``class_weights``, ``lr``, ``epochs``, ``batch_size``,
  ``patience``, ``backbone``, ``augment``, ``statistics``, ``seed``, ``resume``; ``outputs.model`` =
  the folder that receives ``<name>.ckpt`` (Lightning), ``<name>.yaml`` (TerraTorch), the model card
  ``<name>.json``, ``metrics.csv``, ``training_curve.png`` and the test evaluation; result ``outputs``
  names each file, ``metrics``: best epoch, val and test metrics (models/worker/tasks/finetune.py).

Events (one JSON object per line, key ``event``):

- ``{"event": "progress", "percent": 0-100}``
- ``{"event": "info", "message": "..."}`` / ``{"event": "warning", "message": "..."}``
- ``{"event": "result", "outputs": {"<output key>": "<path>"}, "metrics": {...}}`` (last line on success)
- ``{"event": "error", "type": "<TerraMindError subclass name>", "message": "..."}`` (last line on failure);
  when a rule knows the job field at fault (added in protocol 1, additively) also ``"field"`` (e.g.
  ``"params.outputs"``, ``"inputs.S1GRD"``) and ``"detail"`` (the message without the field's name,
  which ``message`` leads with)

Outputs are written to ``<path>.partial-<pid>.tif`` and renamed when complete; a cancelled or failed
worker removes its partial files, and the QGIS side removes any left by a killed worker
(``partial_glob``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import ConfigError

PROTOCOL_VERSION = 1
TASKS = ("reconstruct", "generate", "segment", "map_water", "describe", "download", "export_onnx", "embed", "similarity",
         "cluster", "classify", "prepare_training_data", "finetune")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16", "fp16")

EXIT_OK, EXIT_ERROR, EXIT_BAD_JOB, EXIT_CANCELLED = 0, 1, 2, 130


@dataclass(frozen=True)
class InputSpec:
    path: str
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    file_nodata: bool = True  # with nodata None: use the file's no-data value (False: every pixel is data)
    name: str = ""
    dates: tuple[InputSpec, ...] = ()  # multi-temporal input: every date in order (the first is ``path``)

    @property
    def all_dates(self) -> tuple[InputSpec, ...]:
        """The input's dates in order: ``dates``, or the input itself when it is one date."""
        return self.dates or (replace(self, dates=()),)

    @classmethod
    def from_dict(cls, v: dict[str, Any] | str, parent: InputSpec | None = None) -> InputSpec:
        """An input (or, with ``parent``, one of its dates: a path or the fields that differ) from the job."""
        if isinstance(v, str) and parent is not None:
            return replace(parent, path=v, dates=())
        if not isinstance(v, dict):
            raise ConfigError(f"malformed job: an input must be an object with 'path', got {v!r}")
        base = parent or cls(path="")
        spec = cls(
            path=v.get("path", base.path),
            bands=tuple(v["bands"]) if v.get("bands") else (None if "bands" in v else base.bands),
            nodata=v.get("nodata", base.nodata),
            file_nodata=bool(v.get("file_nodata", base.file_nodata)),
            name=v.get("name", base.name),
        )
        if parent is not None:
            return spec
        dates = v.get("dates") or []
        if not isinstance(dates, list):
            raise ConfigError(f"malformed job: 'dates' must be a list of files or inputs, got {dates!r}")
        dated = tuple(cls.from_dict(d, spec) for d in dates)
        if dated and not spec.path:
            spec = replace(spec, path=dated[0].path)
        return replace(spec, dates=dated)


@dataclass(frozen=True)
class ModelRequest:
    id: str
    weights: str | None = None
    tokenizer_weights: dict[str, str] = field(default_factory=dict)
    untrained: bool = False
    catalogue_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class TilingSpec:
    """How a raster is cut into model tiles (pixels of the working grid)."""

    tile_size: int = 224
    overlap: int = 32
    batch_size: int = 4

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"must be a whole number, got {value!r}", field=f"tiling.{name}")
        if self.tile_size < 32 or self.tile_size % 16:
            raise ConfigError(f"must be a multiple of 16 and at least 32, got {self.tile_size}", field="tiling.tile_size")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise ConfigError(f"must be between 0 and half the tile size ({self.tile_size // 2} px), got {self.overlap}",
                              field="tiling.overlap")  # fmt: skip
        if self.batch_size < 1:
            raise ConfigError(f"must be at least 1, got {self.batch_size}", field="tiling.batch_size")

    def require_multiple(self, multiple: int, why: str) -> None:
        """The tile size must be a multiple of ``multiple`` (e.g. 32 for the diffusion decoders)."""
        if self.tile_size % multiple:
            near = max(multiple, round(self.tile_size / multiple) * multiple)
            raise ConfigError(f"must be a multiple of {multiple} ({why}), got {self.tile_size} (try {near})",
                              field="tiling.tile_size")  # fmt: skip


@dataclass(frozen=True)
class Job:
    task: str
    inputs: dict[str, InputSpec]
    outputs: dict[str, str]
    model: ModelRequest
    params: dict[str, Any] = field(default_factory=dict)
    tiling: TilingSpec = field(default_factory=TilingSpec)
    extent: tuple[float, float, float, float] | None = None
    device: str = "auto"
    precision: str = "fp32"
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.protocol != PROTOCOL_VERSION:
            raise ConfigError(f"job protocol {self.protocol} is not supported (this worker speaks {PROTOCOL_VERSION})")
        if self.task not in TASKS:
            raise ConfigError(f"unknown task '{self.task}'; expected one of {', '.join(TASKS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be {DEVICES_HELP}, got '{self.device}'")
        if self.extent is not None and (len(self.extent) != 4 or not all(_is_number(v) for v in self.extent)):
            raise ConfigError(f"extent must be four numbers (xmin, ymin, xmax, ymax), got {list(self.extent)}")
        for key, input_spec in self.inputs.items():
            for i, spec in enumerate((input_spec, *input_spec.dates)):
                at = f"inputs.{key}" + (f".dates[{i - 1}]" if i else "")
                if not isinstance(spec.path, str) or not spec.path:
                    raise ConfigError(f"{at}.path must be a file path, got {spec.path!r}")
                if spec.nodata is not None and not _is_number(spec.nodata):
                    raise ConfigError(f"{at}.nodata must be a number or null, got {spec.nodata!r}")
                if spec.bands is not None and not all(isinstance(b, int) and not isinstance(b, bool) for b in spec.bands):
                    raise ConfigError(f"{at}.bands must be band numbers (1-based), got {list(spec.bands)}")
        for key, path in self.outputs.items():
            if not isinstance(path, str) or not path:
                raise ConfigError(f"outputs.{key} must be a file path, got {path!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        try:
            m = dict(d["model"])
            m["catalogue_paths"] = tuple(m.get("catalogue_paths", ()))
            return cls(
                task=d["task"],
                inputs={k: _input_from_dict(k, v) for k, v in d.get("inputs", {}).items()},
                outputs=dict(d.get("outputs", {})),
                model=ModelRequest(**m),
                params=dict(d.get("params", {})),
                tiling=TilingSpec(**d.get("tiling", {})),
                extent=tuple(d["extent"]) if d.get("extent") else None,  # type: ignore[arg-type]
                device=d.get("device", "auto"),
                precision=d.get("precision", "fp32"),
                protocol=d.get("protocol", PROTOCOL_VERSION),
            )
        except KeyError as e:
            raise ConfigError(f"malformed job: {e} is missing") from None
        except (TypeError, AttributeError) as e:
            raise ConfigError(f"malformed job: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> Job:
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"job is not valid JSON: {e}") from None


def _input_from_dict(key: str, v: Any) -> InputSpec:
    spec = InputSpec.from_dict(v)
    if not spec.path:
        raise ConfigError(f"malformed job: inputs.{key} has no 'path' (nor 'dates')")
    return spec


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def event(kind: str, **payload: Any) -> str:
    """One protocol line (without newline)."""
    return json.dumps({"event": kind, **payload}, allow_nan=False, default=str)


def parse_event(line: str) -> dict[str, Any] | None:
    """The event of one stdout line, or None for lines that are not protocol events."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "event" in obj else None


def partial_glob(output_path: str) -> str:
    """Glob pattern of the partial files (and scratch folders) a worker may leave for ``output_path``."""
    return f"{output_path}.partial-*"


def blend_scratch_prefix(output_path: str) -> str:
    """Path prefix of the tiled engine's scratch folder (carry files) for a job whose first output is
    ``output_path``: on the output's disk rather than a RAM-backed /tmp, and matched by ``partial_glob``."""
    return f"{output_path}.partial-blend-{os.getpid()}-"


def onnx_decoder_path(model_path: str) -> str:
    """Where task ``export_onnx`` writes a tokenizer's decoder graph unless the job says otherwise:
    next to the encoder file ``<name>.onnx``, as ``<name>.decoder.onnx`` (``x.encoder.onnx`` →
    ``x.decoder.onnx``). Both sides use it: the QGIS side to clean up after a killed worker."""
    folder, name = os.path.split(model_path)
    stem = name[: -len(".onnx")] if name.lower().endswith(".onnx") else name
    stem = stem[: -len(".encoder")] if stem.lower().endswith(".encoder") else stem
    return os.path.join(folder, f"{stem}.decoder.onnx")
