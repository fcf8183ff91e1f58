"""The outputs of a run: their rasters, their metadata tags, and committing them all together."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...core.job import InputSpec, Job
from ...core.modalities import Modality
from ...core.progress import Progress
from ...engine import GeoTiffWriter, OutputRaster, WorkingGrid
from ...runtime.info import RuntimeInfo

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


def modality_output(key: str, path: str, m: Modality) -> OutputRaster:
    """Output ``key`` holding modality ``m``: class ids (uint8, colour table) or its bands (float32)."""
    if m.categorical:
        return OutputRaster(key, path, (f"{m.name} class",), m.name, "uint8", m.classes)
    return OutputRaster(key, path, m.band_labels, m.name)


def output_tags(job: Job, info: RuntimeInfo, output: str, grid: WorkingGrid, device_used: str) -> dict[str, str]:
    """Metadata tags of every output: model, weights, all run parameters, plugin version."""
    tags = {
        "TERRAMIND_TASK": job.task,
        "TERRAMIND_OUTPUT": output,
        "TERRAMIND_MODEL_ID": info.model_id,
        "TERRAMIND_MODEL_REVISION": info.revision,
        "TERRAMIND_WEIGHTS_SOURCE": json.dumps(info.weights_source),
        "TERRAMIND_PARAMS": json.dumps(job.params, sort_keys=True, default=str),
        "TERRAMIND_TILING": json.dumps({"tile_size": job.tiling.tile_size, "overlap": job.tiling.overlap,
                                        "batch_size": job.tiling.batch_size}),  # fmt: skip
        "TERRAMIND_EXTENT": json.dumps(list(job.extent) if job.extent else None),
        "TERRAMIND_DEVICE": job.device,
        "TERRAMIND_DEVICE_USED": device_used,
        "TERRAMIND_PRECISION": job.precision,
        "TERRAMIND_INPUTS": json.dumps({k: input_tag(v) for k, v in job.inputs.items()}),
        "TERRAMIND_PLUGIN_VERSION": plugin_version(),
        "TERRAMIND_CREATED": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **info.extra_tags,
    }
    if job.model.untrained or info.untrained:
        tags["TERRAMIND_UNTRAINED"] = "YES"
    if grid.note:
        tags["TERRAMIND_GRID_NOTE"] = grid.note
    return tags


def input_tag(spec: InputSpec) -> dict[str, object]:
    """What an output's metadata says about one input (its dates, in order, when it has several)."""
    tag: dict[str, object] = {"name": spec.name, "file": os.path.basename(spec.path), "bands": spec.bands}
    if spec.dates:
        tag["dates"] = [{"name": d.name, "file": os.path.basename(d.path), "bands": d.bands} for d in spec.dates]
    return tag


@dataclass
class OutputSet:
    """The writers of one run; all committed together, or all removed."""

    writers: dict[str, GeoTiffWriter] = field(default_factory=dict)

    def open(self, spec: OutputRaster, grid: WorkingGrid, job: Job, info: RuntimeInfo, device_used: str) -> GeoTiffWriter:
        """Start writing ``spec`` on ``grid``, tagged with the run's metadata."""
        tagged = replace(spec, tags={**output_tags(job, info, spec.key, grid, device_used), **spec.tags})
        self.writers[spec.key] = GeoTiffWriter(tagged, grid)
        return self.writers[spec.key]

    def warn_nonfinite(self, progress: Progress) -> None:
        for key, w in self.writers.items():
            if w.nonfinite:
                progress.warn(f"{w.nonfinite} pixel(s) of output '{key}' were not finite (NaN or infinity, e.g. "
                              "an fp16 overflow: try PRECISION fp32) and are written as nodata")  # fmt: skip

    def commit(self) -> dict[str, str]:
        return {key: w.commit() for key, w in self.writers.items()}

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
