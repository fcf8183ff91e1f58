"""What every raster task shares: parameters, inputs on the working grid, outputs, metadata, seeds.

Seeds. A task derives every random stream from the user's ``seed`` and the position of a tile in
the tile grid (``tile_seed``: ``numpy.random.SeedSequence([seed, salt, row, col])`` folded to a
non-negative 63-bit integer, or to a signed 32-bit one where a model takes terratorch's call-seed
range). A run is therefore reproduced exactly by the same seed, inputs, extent and tiling; the
tile size and overlap (which move the tile grid) change it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core import catalogue
from ...core.catalogue import ModelSpec
from ...engine import GeoTiffWriter, InputRaster, InputStack, OutputRaster, TilePlan, WorkingGrid, build_working_grid
from ...core.errors import ConfigError, InputRasterError
from ...core.job import Job, blend_scratch_prefix
from ...core.modalities import MODALITIES, Modality, get_modality
from ...core.progress import Progress, ScaledProgress

if TYPE_CHECKING:  # context.py imports this module
    from .context import RunContext

PLUGIN_ROOT = Path(__file__).resolve().parents[3]


@functools.lru_cache(maxsize=1)
def plugin_version() -> str:
    """``version=`` of the plugin's metadata.txt ('unknown' when absent); read once per process."""
    try:
        for line in (PLUGIN_ROOT / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.strip().lower().startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def tile_seed(seed: int, row: int, col: int, salt: int = 0, bits: int = 63) -> int:
    """Deterministic seed of tile (row, col) for the user ``seed`` (see the module docstring)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, salt, row, col]).generate_state(2, np.uint32)
    value = (int(state[0]) << 32) | int(state[1])
    if bits == 32:  # signed 32-bit, the range terratorch draws its per-call seeds from
        return (value & 0xFFFFFFFF) - 2**31
    return value & (2**63 - 1)


# -- parameters ------------------------------------------------------------------------------
def param_int(params: dict[str, Any], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(f"parameter '{name}' must be an integer, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"parameter '{name}' must be between {low} and {high}, got {value}")
    return value


def param_float(params: dict[str, Any], name: str, default: float, low: float | None = None, high: float | None = None) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"parameter '{name}' must be a number, got {value!r}")
    value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"parameter '{name}' must be between {low} and {high}, got {value}")
    return value


def read_sampling(params: dict[str, Any]) -> dict[str, Any]:
    """The token-sampling parameters ``temperature`` (1.0), ``top_p`` (0.8) and ``top_k`` (0), checked."""
    return {
        "temperature": param_float(params, "temperature", 1.0, 0.0),
        "top_p": param_float(params, "top_p", 0.8, 0.0, 1.0),
        "top_k": param_int(params, "top_k", 0, 0),
    }


def register_cards(job: Job) -> None:
    """Register the job's extra model-card folders (``model.catalogue_paths``)."""
    for folder in job.model.catalogue_paths:
        if not os.path.isdir(folder):
            raise ConfigError(f"model card folder '{folder}' does not exist")
        catalogue.load_cards(folder)


def load_catalogue(job: Job) -> ModelSpec:
    """Register the job's extra model-card folders and return its model's entry."""
    register_cards(job)
    return catalogue.get(job.model.id)


def check_output_paths(job: Job, keys: Iterable[str]) -> dict[str, str]:
    """The job's path of each required output key, checked to be a GeoTIFF path."""
    paths = {}
    for key in keys:
        path = job.outputs.get(key)
        if not path:
            raise ConfigError(f"the job has no path for output '{key}' (job.outputs['{key}'])")
        if not path.lower().endswith((".tif", ".tiff")):
            raise ConfigError(f"output '{key}': '{path}' must be a GeoTIFF file name ending in .tif")
        if os.path.isdir(path):
            raise ConfigError(f"output '{key}': '{path}' is a folder; give a file name")
        paths[key] = path
    return paths


def check_tile_size(job: Job, multiple: int, why: str) -> None:
    if job.tiling.tile_size % multiple:
        raise ConfigError(
            f"tile size {job.tiling.tile_size} is not a multiple of {multiple} ({why}); "
            f"use e.g. {max(multiple, job.tiling.tile_size // multiple * multiple)}"
        )


# -- inputs ----------------------------------------------------------------------------------
def canonical_job(job: Job, *, outputs: bool = True) -> Job:
    """The job with input keys (and, with ``outputs``, output keys that name a modality) spelled
    canonically ('s2l2a' -> 'S2L2A'); tasks whose output keys are roles (map_water's 'lulc') keep them."""
    inputs: dict[str, Any] = {}
    for key, spec in job.inputs.items():
        name = get_modality(key).name  # UnsupportedModalityError names the unknown key
        if name in inputs:
            raise ConfigError(f"input {name} is given twice (job.inputs has '{key}' too)")
        inputs[name] = spec
    if not outputs:
        return replace(job, inputs=inputs)
    by_lower = {m.lower(): m for m in MODALITIES}
    return replace(job, inputs=inputs, outputs={by_lower.get(k.lower(), k): v for k, v in job.outputs.items()})


def check_class_values(job: Job, modality: Modality, values: np.ndarray) -> None:
    """Class-raster inputs (LULC) must hold class ids; name the layer when they do not."""
    if not modality.categorical or values.size == 0:
        return
    low, high, n = float(values.min()), float(values.max()), len(modality.classes)
    if low < 0 or high >= n:
        name = job.inputs[modality.name].name or modality.name
        raise InputRasterError(
            f"layer '{name}': {modality.name} class values must be 0..{n - 1}, found {low:g}..{high:g}; "
            "map other codes to these classes or declare them nodata"
        )


def open_inputs(
    job: Job, keys: list[str], modalities: Mapping[str, Modality] | None = None
) -> tuple[WorkingGrid, InputStack]:
    """Open and check the inputs ``keys`` (first = the grid's reference) on the working grid.

    ``modalities`` overrides what an input is read as (a model's band subset and statistics).
    """
    import rasterio

    if not keys:
        raise ConfigError("the job has no input raster")
    first = job.inputs[keys[0]]
    name = first.name or keys[0]
    try:
        with rasterio.open(first.path) as src:
            grid = build_working_grid(src, name, job.extent)
    except rasterio.errors.RasterioIOError as e:
        raise InputRasterError(f"layer '{name}': cannot open '{first.path}': {e}") from None
    opened: list[InputRaster] = []
    try:
        for key in keys:
            modality = (modalities or {}).get(key) or get_modality(key)
            opened.append(InputRaster(key, job.inputs[key], modality, grid))
    except BaseException:
        for inp in opened:
            inp.close()
        raise
    return grid, InputStack(opened, grid)


def make_plan(job: Job, grid: WorkingGrid, group_width: int = 2048) -> TilePlan:
    t = job.tiling
    return TilePlan(grid.height, grid.width, t.tile_size, t.overlap, block_size=256, group_width=group_width)


# -- outputs ---------------------------------------------------------------------------------
def modality_output(key: str, path: str, m: Modality) -> OutputRaster:
    """Output ``key`` holding modality ``m``: class ids (uint8, colour table) or its bands (float32)."""
    if m.categorical:
        return OutputRaster(key, path, (f"{m.name} class",), m.name, "uint8", m.classes)
    return OutputRaster(key, path, m.band_labels, m.name)


def output_tags(
    job: Job, spec: ModelSpec, output: str, grid: WorkingGrid, model: Any, device_used: str
) -> dict[str, str]:
    """Metadata tags of every output: model, weights, all run parameters, plugin version.

    ``model`` (the loaded model) supplies ``weights_source``: the provenance of each of its files
    (``models/build.py``; the segmentation task sets it to the model file).
    """
    tags = {
        "TERRAMIND_TASK": job.task,
        "TERRAMIND_OUTPUT": output,
        "TERRAMIND_MODEL_ID": spec.id,
        "TERRAMIND_MODEL_REVISION": spec.weights.revision if spec.weights else "n/a",
        "TERRAMIND_WEIGHTS_SOURCE": json.dumps(getattr(model, "weights_source", {})),
        "TERRAMIND_PARAMS": json.dumps(job.params, sort_keys=True, default=str),
        "TERRAMIND_TILING": json.dumps({"tile_size": job.tiling.tile_size, "overlap": job.tiling.overlap,
                                        "batch_size": job.tiling.batch_size}),  # fmt: skip
        "TERRAMIND_EXTENT": json.dumps(list(job.extent) if job.extent else None),
        "TERRAMIND_DEVICE": job.device,
        "TERRAMIND_DEVICE_USED": device_used,
        "TERRAMIND_PRECISION": job.precision,
        "TERRAMIND_INPUTS": json.dumps({k: {"name": v.name, "file": os.path.basename(v.path), "bands": v.bands}
                                        for k, v in job.inputs.items()}),  # fmt: skip
        "TERRAMIND_PLUGIN_VERSION": plugin_version(),
        "TERRAMIND_CREATED": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if job.model.untrained:
        tags["TERRAMIND_UNTRAINED"] = "YES"
    if grid.note:
        tags["TERRAMIND_GRID_NOTE"] = grid.note
    return tags


def tagged(
    spec: OutputRaster, job: Job, card: ModelSpec, grid: WorkingGrid, model: Any, device_used: str
) -> OutputRaster:
    """``spec`` with the metadata tags of ``output_tags`` (output name = its key)."""
    return replace(spec, tags=output_tags(job, card, spec.key, grid, model, device_used))


@dataclass
class OutputSet:
    """The writers of one run; all committed together, or all removed."""

    writers: dict[str, GeoTiffWriter] = field(default_factory=dict)

    def open(self, spec: OutputRaster, grid: WorkingGrid) -> GeoTiffWriter:
        self.writers[spec.key] = GeoTiffWriter(spec, grid)
        return self.writers[spec.key]

    def commit(self, progress: Progress | None = None) -> dict[str, str]:
        """Finish every output; ``progress`` hears of non-finite values, and from here on a cancel signal
        no longer interrupts (the worker's ``cleaning_up``): outputs are renamed all together or not at all."""
        if progress is not None:
            if hasattr(progress, "cleaning_up"):
                progress.cleaning_up = True
            for key, w in self.writers.items():
                if w.nonfinite:
                    progress.warn(f"{w.nonfinite} pixel(s) of output '{key}' were not finite (NaN or infinity, e.g. "
                                  "an fp16 overflow: try PRECISION fp32) and are written as nodata")  # fmt: skip
        return {key: w.commit() for key, w in self.writers.items()}

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


def report_grid(progress: Progress, grid: WorkingGrid, stack: InputStack) -> None:
    """Tell the user how the inputs are being read (info events)."""
    if grid.note:
        progress.info(grid.note)
    for inp in stack.inputs:
        if inp.note:
            progress.warn(inp.note)
        if inp.resampled:
            how = "nearest neighbour" if inp.modality.categorical else "bilinear"
            progress.info(f"layer '{inp.name}' is resampled onto the working grid ({how})")
    progress.info(f"working grid: {grid.width} x {grid.height} pixels of {grid.pixel_size:g} in {grid.crs.to_string()}")


def tiled_run_options(job: Job, ctx: RunContext) -> dict[str, Any]:
    """``run_tiled`` keywords every tiled task shares: the job's batch size, the run's progress from 2 to
    99 % (loading before, committing after), and the blender's scratch folder next to the first output."""
    first_output = next(iter(job.outputs.values()))
    return {"batch_size": job.tiling.batch_size, "progress": ScaledProgress(ctx.progress, 2.0, 99.0),
            "scratch": blend_scratch_prefix(first_output)}  # fmt: skip
