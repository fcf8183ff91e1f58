"""The inputs and output files of a tiled job, checked before any model is loaded.

``open_tiled(job, keys, outputs)`` canonicalises nothing itself: tasks call ``canonical_job`` first.
It checks the output files (models/core/outputs.py: GeoTIFF names, none over an input, none shared,
writable folders), builds the working grid from the first input and opens every input on it
(models/engine). ``open_temporal`` does the same for a multi-temporal model: every date of every
input (``InputSpec.dates``) on the grid of the first input's first date (models/engine/dates.py).
The result, ``TiledInputs``, is what a tiled task's request carries; ``close()`` releases the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ...core.errors import ConfigError
from ...core.job import Job
from ...core.modalities import MODALITIES, Modality, get_modality
from ...core.outputs import GEOTIFF_SUFFIXES, check_output_path, check_outputs_apart
from ...core.progress import Progress
from ...engine import InputRaster, InputStack, TilePlan, WorkingGrid, build_working_grid
from ...engine.dates import DateSeries, TemporalStack
from ...engine.reader import open_raster


@dataclass(frozen=True)
class TiledInputs:
    """A tiled job's checked output paths (job key -> file) and its inputs open on the working grid."""

    job: Job
    paths: dict[str, str]
    grid: WorkingGrid
    stack: InputStack | TemporalStack

    def close(self) -> None:
        self.stack.close()


def canonical_job(job: Job, *, outputs: bool = True) -> Job:
    """The job with input keys (and, with ``outputs``, output keys that name a modality) spelled
    canonically ('s2l2a' -> 'S2L2A'); tasks whose output keys are roles (map_water's 'lulc') keep them."""
    inputs: dict[str, Any] = {}
    for key, spec in job.inputs.items():
        name = get_modality(key).name  # UnsupportedModalityError names the unknown key
        if name in inputs:
            raise ConfigError(f"{name} is given twice (job.inputs has '{key}' too)", field=f"inputs.{name}")
        inputs[name] = spec
    if not outputs:
        return replace(job, inputs=inputs)
    by_lower = {m.lower(): m for m in MODALITIES}
    return replace(job, inputs=inputs, outputs={by_lower.get(k.lower(), k): v for k, v in job.outputs.items()})


def output_paths(job: Job, keys: Sequence[str], suffixes: tuple[str, ...] = GEOTIFF_SUFFIXES) -> dict[str, str]:
    """The job's path of each required output key, checked (names, none over an input, none shared)."""
    paths = {}
    for key in keys:
        path = job.outputs.get(key)
        if not path:
            raise ConfigError(f"the job has no path for this output (job.outputs['{key}'])", field=f"outputs.{key}")
        paths[key] = check_output_path(f"outputs.{key}", path, suffixes)
    sources = {f"layer '{d.name or key}'" + (f" (date {i + 1})" if len(spec.all_dates) > 1 else ""): d.path
               for key, spec in job.inputs.items() for i, d in enumerate(spec.all_dates)}  # fmt: skip
    check_outputs_apart(sources, {f"outputs.{k}": p for k, p in paths.items()})
    return paths


def open_tiled(job: Job, keys: Sequence[str], outputs: Sequence[str],
               modalities: Mapping[str, Modality] | None = None, fill: float = 0.0) -> TiledInputs:  # fmt: skip
    """Check ``outputs`` and open the inputs ``keys`` (first = the grid's reference) on the working grid.

    ``modalities`` overrides what an input is read as (a model's band subset and statistics);
    ``fill`` is what invalid pixels hold (raw units).
    """
    paths = output_paths(job, outputs)
    grid = working_grid(job, keys)
    opened: list[InputRaster] = []
    try:
        for key in keys:
            modality = (modalities or {}).get(key) or get_modality(key)
            opened.append(InputRaster(key, job.inputs[key], modality, grid))
    except BaseException:
        for inp in opened:
            inp.close()
        raise
    return TiledInputs(job, paths, grid, InputStack(opened, grid, fill))


def open_temporal(job: Job, keys: Sequence[str], outputs: Sequence[str], modalities: Mapping[str, Modality],
                  dates: int, fill: float = 0.0) -> TiledInputs:  # fmt: skip
    """Like ``open_tiled``, for a multi-temporal model reading ``dates`` dates of every input ``keys``
    (each input has ``dates`` dates or one; the count rules are checked before: core/params.py ``plan_dates``)."""
    paths = output_paths(job, outputs)
    grid = working_grid(job, keys)
    series: list[DateSeries] = []
    try:
        for key in keys:
            spec = job.inputs[key]
            many = len(spec.all_dates) > 1
            opened: list[InputRaster] = []
            series.append(DateSeries(key, opened))
            for i, date in enumerate(spec.all_dates):
                named = replace(date, name=f"{date.name or key}" + (f" (date {i + 1})" if many else ""))
                opened.append(InputRaster(key, named, modalities[key], grid))
        return TiledInputs(job, paths, grid, TemporalStack(series, grid, dates, fill))
    except BaseException:
        for s in series:
            for inp in s.dates:
                inp.close()
        raise


def working_grid(job: Job, keys: Sequence[str]) -> WorkingGrid:
    """The working grid: the first input's (its first date's) grid, cut to the job's extent."""
    if not keys:
        raise ConfigError("the job has no input raster", field="inputs")
    first = job.inputs[keys[0]].all_dates[0]
    name = first.name or keys[0]
    with open_raster(first.path, f"layer '{name}'") as src:
        return build_working_grid(src, name, job.extent)


def make_plan(job: Job, grid: WorkingGrid, group_width: int = 2048) -> TilePlan:
    t = job.tiling
    return TilePlan(grid.height, grid.width, t.tile_size, t.overlap, block_size=256, group_width=group_width)


def report_grid(progress: Progress, grid: WorkingGrid, stack: InputStack) -> None:
    """Tell the user how the inputs are being read (info events)."""
    if grid.note:
        progress.info(grid.note)
    for inp in stack.inputs:
        for message in inp.infos:
            progress.info(message)
        for message in inp.warnings:
            progress.warn(message)
        if inp.resampled:
            how = "nearest neighbour" if inp.modality.categorical else "bilinear"
            progress.info(f"layer '{inp.name}' is resampled onto the working grid ({how})")
    progress.info(f"working grid: {grid.width} x {grid.height} pixels of {grid.pixel_size:g} in {grid.crs.to_string()}")
