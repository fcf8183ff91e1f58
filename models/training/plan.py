"""A recipe and a dataset → everything a run is: TerraTorch task/data arguments and the model config (torch-free).

``plan_run`` checks that the dataset fits the recipe (modalities, bands, splits), resolves the
class weights and the standardisation statistics, builds the ``SemanticSegmentationTask``
arguments (recipe.task_args) and describes the model with the loader's own parser,
``config_from_task_args`` (models/segmentation/config.py), so the trained network, the written
YAML and the reloaded checkpoint are the same model by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..core.errors import ConfigError
from ..core.modalities import modality_for_key, resolve_input_key
from ..segmentation.config import SegmentationConfig, config_from_task_args
from .dataset import DatasetInfo
from .recipe import Recipe, resolve_class_weights, statistics, task_args


@dataclass(frozen=True)
class RunPlan:
    recipe: Recipe
    info: DatasetInfo
    frozen: bool
    class_weights: list[float] | None
    task_args: dict[str, Any]
    means: dict[str, list[float]]
    stds: dict[str, list[float]]
    config: SegmentationConfig
    notes: tuple[str, ...]

    @property
    def data_args(self) -> dict[str, Any]:
        return {"means": self.means, "stds": self.stds, "no_data_replace": self.recipe.no_data_replace}


def _with_dataset_bands(recipe: Recipe, info: DatasetInfo) -> Recipe:
    """A dataset that holds fewer bands than the modality has reads them as a band subset (``backbone_bands``)."""
    bands = dict(recipe.bands)
    for m in recipe.modalities:
        full = modality_for_key(resolve_input_key(m)).bands
        if m not in bands and tuple(info.modalities[m].bands) != tuple(full):
            bands[m] = tuple(info.modalities[m].bands)
    return recipe if bands == recipe.bands else replace(recipe, bands=bands)


def plan_run(recipe: Recipe, info: DatasetInfo, device_type: str = "cpu") -> RunPlan:
    """The run of ``recipe`` on ``info`` on a ``device_type`` device; one ``ConfigError`` lists every mismatch."""
    problems = []
    missing = [m for m in recipe.modalities if m not in info.modalities]
    if missing:
        problems.append(f"the recipe reads {missing}, which the dataset does not have (it has {list(info.modalities)})")
    for m, bands in recipe.bands.items():
        if m in info.modalities:
            unknown = [b for b in bands if b not in info.modalities[m].bands]
            if unknown:
                problems.append(f"bands {unknown} of {m} are not in the dataset ({', '.join(info.modalities[m].bands)})")
    for split in ("train", "val"):
        if info.splits.get(split) is None or info.splits[split].chips == 0:
            problems.append(f"the dataset's {split} split is empty")
    if problems:
        raise ConfigError(f"the dataset {info.folder} does not fit the recipe: " + "; ".join(problems))
    recipe = _with_dataset_bands(recipe, info)
    notes = list(recipe.notes())
    train_pixels = info.splits["train"].class_pixels
    weights = resolve_class_weights(recipe, train_pixels)
    absent = [info.classes[i].name for i, n in enumerate(train_pixels) if n == 0]
    if absent:
        notes.append(f"classes {absent} have no pixel in the train split: the model cannot learn them")
    frozen = recipe.frozen_on(device_type)
    targs = task_args(recipe, info.num_classes, info.class_names, weights, frozen)
    means, stds = {}, {}
    for m in recipe.modalities:
        mi = info.modalities[m]
        bands = tuple(recipe.bands.get(m) or mi.bands)
        means[m], stds[m] = statistics(recipe, m, bands, mi.mean, mi.std, mi.bands)
    cfg = config_from_task_args(targs, {"means": means, "stds": stds, "no_data_replace": recipe.no_data_replace})
    return RunPlan(recipe, info, frozen, weights, targs, means, stds, cfg, tuple(notes))
