"""The fleet's job template: one worker job (``models/core/job.py``) for every scene.

A template is a worker job JSON without per-scene paths, or with placeholders::

    {"protocol": 1, "task": "generate",
     "inputs":  {"S2L2A": {"path": "{S2L2A}", "name": "{scene}"},
                 "S1GRD": {"optional": true}},
     "outputs": {"LULC": "{scene}/lulc.tif"},
     "model":   {"id": "terramind_v1_base"},
     "params":  {"outputs": ["LULC"], "seed": 0},
     "tiling":  {"tile_size": 224, "overlap": 32, "batch_size": 4}, "device": "cuda"}

- ``inputs.<KEY>``: an input of the job, as the worker takes it (``bands``, ``nodata``, ...).
  Its ``path`` may be left out (or null): it is then ``{KEY}``, the scene's raster of modality KEY.
  A path may hold placeholders: ``{<MODALITY>}`` (the scene's raster of that modality) and
  ``{scene}`` (the scene id); a path without placeholders is the same file for every scene (e.g. a
  DEM mosaic). ``"optional": true``: a scene without that modality runs without the input (else
  that scene fails with a one-line error). Left out or empty, ``inputs`` = every modality of the
  scene, with default settings.
- ``outputs.<KEY>``: a path relative to the fleet's output folder that contains ``{scene}`` (one
  sub-folder per scene, ``{scene}/lulc.tif``, or a name prefix, ``{scene}_lulc.tif``); null = the
  default ``{scene}/<KEY>.tif``. Left out, the task's outputs: ``generate`` one per
  ``params.outputs``, ``reconstruct`` ``reconstruction``, ``segment`` ``classes``, ``map_water``
  ``water``.
- Relative paths of files the template names (``model.weights``, ``model.tokenizer_weights``,
  ``model.catalogue_paths``, ``params.config``, inputs without placeholders) are relative to the
  template file's folder.
- ``device`` ``cuda``/``cuda:N``: each scene asks Dask for the worker resource ``GPU`` (1).

Only the raster tasks run per scene: ``generate``, ``reconstruct``, ``segment``, ``map_water``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError, TerraMindError, where
from ..core.job import Job
from ..core.modalities import MODALITIES, get_modality

FLEET_TASKS = ("generate", "reconstruct", "segment", "map_water")
DEFAULT_OUTPUTS = {"reconstruct": ("reconstruction",), "segment": ("classes",), "map_water": ("water",)}
DEFAULT_OUTPUT_PATH = "{scene}/{key}.tif"
PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class SceneJob:
    """The worker job of one scene, ready to run."""

    scene: str
    job: dict[str, Any]
    outputs: dict[str, str]  # output key -> absolute path
    job_sha256: str  # of the canonical job JSON: a record of another job does not count on resume
    gpu: bool

    def job_json(self) -> str:
        return json.dumps(self.job, indent=1, sort_keys=True)


class JobTemplate:
    """A validated template (``from_file``/``from_dict``); ``scene_job`` fills it in for one scene."""

    def __init__(self, data: dict[str, Any], base_dir: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError("the job template must be a JSON object (a worker job)")
        task = data.get("task")
        if task not in FLEET_TASKS:
            raise ConfigError(f"the template's task must be one of {', '.join(FLEET_TASKS)} (one raster job per scene), "
                              f"got {task!r}")  # fmt: skip
        self.data = copy.deepcopy(data)
        self.base_dir = base_dir
        self.task: str = task
        self.inputs = self._read_inputs(self.data.get("inputs") or {})
        self.output_paths = self._read_outputs(self.data.get("outputs"))
        self.device = str(self.data.get("device", "auto"))
        self._resolve_model_paths()

    @classmethod
    def from_file(cls, path: str) -> JobTemplate:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read the job template '{path}': {e.strerror or e}") from None
        except ValueError as e:
            raise ConfigError(f"the job template '{path}' is not valid JSON: {e}") from None
        return cls(data, os.path.dirname(os.path.abspath(path)))

    @property
    def gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def output_keys(self) -> tuple[str, ...]:
        return tuple(self.output_paths)

    # -- reading the template ------------------------------------------------------------------
    def _read_inputs(self, inputs: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(inputs, dict):
            raise ConfigError("template 'inputs' must be an object {KEY: {\"path\": ...}}")
        out = {}
        for key, spec in inputs.items():
            spec = {} if spec is None else spec
            if not isinstance(spec, dict):
                raise ConfigError(f"template input '{key}' must be an object like {{\"path\": \"{{{key}}}\"}}")
            spec = dict(spec)
            if not spec.get("path"):
                spec["path"] = "{" + key + "}"
            if not isinstance(spec["path"], str):
                raise ConfigError(f"template input '{key}': path must be text, got {spec['path']!r}")
            spec["path"] = PLACEHOLDER.sub(_canonical_placeholder, spec["path"])
            out[key] = spec
        return out

    def _read_outputs(self, outputs: Any) -> dict[str, str]:
        if outputs is None or outputs == {}:
            params = self.data.get("params") or {}
            keys = params.get("outputs") if self.task == "generate" else DEFAULT_OUTPUTS[self.task]
            if not keys or not isinstance(keys, (list, tuple)):
                raise ConfigError("the template names no outputs: give 'outputs' (or params.outputs for generate)")
            outputs = {str(k): None for k in keys}
        if not isinstance(outputs, dict):
            raise ConfigError("template 'outputs' must be an object {KEY: \"{scene}/name.tif\"}")
        paths = {}
        for key, path in outputs.items():
            path = path or DEFAULT_OUTPUT_PATH.replace("{key}", key)
            if not isinstance(path, str):
                raise ConfigError(f"template output '{key}' must be a path, got {path!r}")
            if os.path.isabs(path) or ".." in path.replace("\\", "/").split("/"):
                raise ConfigError(f"template output '{key}': '{path}' must be relative to the output folder")
            if "{scene}" not in path:
                raise ConfigError(f"template output '{key}': '{path}' must contain {{scene}} (one file per scene)")
            unknown = set(PLACEHOLDER.findall(path)) - {"scene"}
            if unknown:
                raise ConfigError(f"template output '{key}': unknown placeholder {{{min(unknown)}}} "
                                  "(outputs may use {scene})")  # fmt: skip
            paths[key] = path
        return paths

    def _abs(self, path: Any) -> Any:
        if isinstance(path, str) and path and not os.path.isabs(path) and "://" not in path:
            return os.path.normpath(os.path.join(self.base_dir, path))
        return path

    def _resolve_model_paths(self) -> None:
        model = self.data.setdefault("model", {})
        if not isinstance(model, dict):
            raise ConfigError("template 'model' must be an object {\"id\": ...}")
        if model.get("weights"):
            model["weights"] = self._abs(model["weights"])
        if isinstance(model.get("tokenizer_weights"), dict):
            model["tokenizer_weights"] = {k: self._abs(v) for k, v in model["tokenizer_weights"].items()}
        if model.get("catalogue_paths"):
            model["catalogue_paths"] = [self._abs(p) for p in model["catalogue_paths"]]
        params = self.data.get("params")
        if isinstance(params, dict) and isinstance(params.get("config"), str):
            params["config"] = self._abs(params["config"])

    # -- one scene -------------------------------------------------------------------------------
    def scene_job(self, scene: str, assets: dict[str, str], out_dir: str) -> SceneJob:
        """The job of scene ``scene`` whose rasters are ``assets`` (modality -> path); outputs under ``out_dir``.

        Raises ``ConfigError`` (one line, naming the scene) when the scene lacks a required modality
        or the result is not a valid worker job."""
        values = {"scene": scene, **assets}
        specs = self.inputs or {m: {"path": "{" + m + "}"} for m in assets}
        inputs = {}
        for key, spec in specs.items():
            spec = dict(spec)
            optional = bool(spec.pop("optional", False))
            names = PLACEHOLDER.findall(spec["path"])
            missing = [n for n in names if n not in values]
            if missing:
                if optional:
                    continue
                have = ", ".join(sorted(assets)) or "none"
                raise ConfigError(f"scene '{scene}' has no {missing[0]} raster for input '{key}' (it has: {have})")
            spec["path"] = _fill(spec["path"], values) if names else self._abs(spec["path"])
            if isinstance(spec.get("name"), str):
                spec["name"] = _fill(spec["name"], values, strict=False)
            inputs[key] = spec
        outputs = {k: os.path.join(out_dir, _fill(p, {"scene": scene})) for k, p in self.output_paths.items()}
        job = {**copy.deepcopy(self.data), "inputs": inputs, "outputs": outputs}
        job.setdefault("protocol", 1)
        try:
            Job.from_dict(job)  # the worker's own checks of the job's shape (torch-free)
        except ConfigError as e:
            raise ConfigError(f"scene '{scene}': {where(e)}") from None
        text = json.dumps(job, sort_keys=True)
        return SceneJob(scene, job, outputs, hashlib.sha256(text.encode()).hexdigest(), self.gpu)

    def modalities(self) -> tuple[str, ...]:
        """The modalities the template's placeholders name (canonical names)."""
        found = []
        for spec in self.inputs.values():
            found += [name for name in PLACEHOLDER.findall(spec["path"]) if name != "scene"]
        return tuple(dict.fromkeys(found))


def _canonical_placeholder(match: re.Match[str]) -> str:
    """``{s2l2a}`` -> ``{S2L2A}``; ``{scene}`` stays; an unknown name is an error."""
    name = match.group(1)
    if name == "scene":
        return match.group(0)
    try:
        return "{" + get_modality(name).name + "}"
    except TerraMindError:
        raise ConfigError(f"unknown placeholder {{{name}}} in a template input path; use {{scene}} or a modality "
                          f"({', '.join(MODALITIES)})") from None


def _fill(text: str, values: dict[str, str], strict: bool = True) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if strict:
            raise ConfigError(f"unknown placeholder {{{name}}} in '{text}'")
        return match.group(0)

    return PLACEHOLDER.sub(sub, text)
