"""From a template and scenes to the jobs of a fleet run: which scenes run, which are already done.

A scene whose job cannot be made (it lacks a modality the template needs, its band assets cannot
be stacked) is *broken*: it is recorded as failed with its one-line error and does not stop the
others. A scene is *complete* when the manifest says so (``manifest.outputs_match``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..core.errors import ConfigError, TerraMindError
from .manifest import outputs_match
from .scenes import Scene
from .template import JobTemplate, SceneJob

VRT_FOLDER = os.path.join(".fleet", "vrt")  # inside the output folder


@dataclass
class FleetPlan:
    task: str = ""
    jobs: list[SceneJob] = field(default_factory=list)  # every scene with a job, in order
    broken: dict[str, str] = field(default_factory=dict)  # scene -> why it has no job
    complete: list[str] = field(default_factory=list)  # scenes whose outputs the manifest vouches for

    @property
    def to_run(self) -> list[SceneJob]:
        done = set(self.complete)
        return [j for j in self.jobs if j.scene not in done]

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.broken)


def scene_assets(scene: Scene, out_dir: str) -> dict[str, str]:
    """The scene's rasters by modality; per-band assets become one VRT each (under ``.fleet/vrt``)."""
    assets = dict(scene.assets)
    if scene.bands:
        from .vrt import stack_vrt

        for modality, hrefs in scene.bands.items():
            assets[modality] = stack_vrt(hrefs, os.path.join(out_dir, VRT_FOLDER, f"{scene.id}.{modality}.vrt"))
    return assets


def make_plan(template: JobTemplate, scenes: list[Scene], out_dir: str, records: dict[str, dict] | None = None) -> FleetPlan:
    """The jobs of ``scenes`` with outputs under ``out_dir``; ``records`` (the manifest's latest per
    scene) mark the complete ones."""
    out_dir = os.path.abspath(out_dir)
    plan = FleetPlan(task=template.task)
    owner: dict[str, str] = {}
    for scene in scenes:
        try:
            job = template.scene_job(scene.id, scene_assets(scene, out_dir), out_dir)
        except TerraMindError as e:
            plan.broken[scene.id] = str(e)
            continue
        for path in job.outputs.values():
            if path in owner:
                raise ConfigError(f"scenes '{owner[path]}' and '{scene.id}' would both write '{path}'")
            owner[path] = scene.id
        plan.jobs.append(job)
    for job in plan.jobs:
        record = (records or {}).get(job.scene)
        if record and record.get("job_sha256") == job.job_sha256 and outputs_match(record, out_dir, job.outputs):
            plan.complete.append(job.scene)
    return plan
