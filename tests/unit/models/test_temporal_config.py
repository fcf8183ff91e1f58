"""Reading multi-temporal TerraTorch configs: wrapper settings, data-module statistics, tiling (torch-free)."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.segmentation.config import SegmentationConfig, config_from_task_args, config_from_yaml_dict
from terramind_qgis.models.segmentation.datamodules import CROP_MEANS, IMPACTMESH_STATS, resolve_data_module
from terramind_qgis.models.segmentation.temporal_config import TemporalSpec, TiledInferenceSpec

CONFIGS = Path(__file__).resolve().parents[3] / "tests" / "data" / "terramind_configs"
IMPACTMESH = CONFIGS / "impactmesh"


def load(name: str) -> dict:
    return yaml.safe_load(((IMPACTMESH if "impactmesh" in name else CONFIGS) / f"terramind_v1_{name}.yaml").read_text())


def with_backbone_args(cfg: dict, **kwargs) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["model"]["init_args"]["model_args"].update({f"backbone_{k}": v for k, v in kwargs.items()})
    return cfg


@pytest.mark.parametrize("size", ["tiny", "base"])
@pytest.mark.parametrize("disaster", ["flood", "fire"])
def test_impactmesh_configs(size: str, disaster: str) -> None:
    cfg = config_from_yaml_dict(load(f"{size}_impactmesh_{disaster}"))
    assert cfg.backbone == f"terramind_v1_{size}" and cfg.input_layout == "BCTHW"
    assert cfg.temporal == TemporalSpec("concat", n_timestamps=4, repeat_single_date=True)
    assert cfg.temporal.dates == 4
    assert [(i.name, len(i.bands)) for i in cfg.inputs] == [("S2L2A", 12), ("S1RTC", 2), ("DEM", 1)]
    assert [cfg.input_shape(i.name) for i in cfg.inputs] == [("B", 12, 4, "H", "W"), ("B", 2, 4, "H", "W"),
                                                             ("B", 1, 4, "H", "W")]  # fmt: skip
    stats = IMPACTMESH_STATS[disaster]
    assert [list(i.mean) for i in cfg.inputs] == [stats["means"][m] for m in ("S2L2A", "S1RTC", "DEM")]
    assert [list(i.std) for i in cfg.inputs] == [stats["stds"][m] for m in ("S2L2A", "S1RTC", "DEM")]
    assert cfg.notes == (f"means/stds: the ImpactMesh data module's {disaster} dataset statistics (not in the YAML)",)
    assert cfg.tiled_inference == TiledInferenceSpec(crop=256, stride=208, delta=8, batch_size=64)
    assert (cfg.num_classes, cfg.no_data_replace, cfg.decoder) == (2, 0.0, "UNetDecoder")
    assert SegmentationConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


def test_impactmesh_statistics_are_the_data_modules_own() -> None:
    """The table equals ``datasets_stats`` of IBM/ImpactMesh's impactmesh_datamodule.py (copied next to the configs)."""
    tree = ast.parse((IMPACTMESH / "impactmesh_datamodule.py.txt").read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "datasets_stats"]
    source = ast.literal_eval(node.value)
    assert {k: {s: v[s] for s in ("means", "stds")} for k, v in source.items()} == IMPACTMESH_STATS


def test_impactmesh_statistics_choice() -> None:
    """As ``ImpactMeshDataModule.__init__``: disaster_type, else data_root; given means+stds win; else refused."""
    path = "impactmesh.impactmesh_datamodule.ImpactMeshDataModule"
    assert resolve_data_module(path, {"data_root": "x", "disaster_type": "fire"}).data["means"]["DEM"] == [412.745]
    assert resolve_data_module(path, {"data_root": "/data/ImpactMesh-FLOOD"}).data["stds"]["S1RTC"] == [4.24, 4.105]
    own = resolve_data_module(path, {"data_root": "fire", "means": {"DEM": [1.0]}, "stds": {"DEM": [2.0]}})
    assert own.data["means"] == {"DEM": [1.0]} and own.notes == () and own.repeat_single_date
    cfg = load("tiny_impactmesh_flood")
    cfg["data"]["init_args"]["data_root"] = "data/my-event"
    with pytest.raises(ConfigError, match=r"ImpactMesh data module's statistics: set data.init_args.disaster_type"):
        config_from_yaml_dict(cfg)


def test_multitemporal_crop_config_is_accepted() -> None:
    cfg = config_from_yaml_dict(load("base_multitemporal_crop"))
    assert cfg.temporal == TemporalSpec("concat", n_timestamps=3) and cfg.temporal.dates == 3
    assert cfg.input_shape("S2L2A") == ("B", 6, 3, "H", "W") and cfg.inputs[0].band_subset
    assert list(cfg.inputs[0].mean) == list(CROP_MEANS.values()) and cfg.tiled_inference is None
    assert "MultiTemporalCropClassification data module" in cfg.notes[0] and len(cfg.class_names) == 13


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(temporal_pooling="median"), "backbone_temporal_pooling 'median' (supported: mean, max, diff, keep, concat)"),
        (dict(temporal_pooling="keep"), "backbone_temporal_pooling 'keep' (it hands per-date features"),
        (dict(temporal_n_timestamps=None), "backbone_temporal_n_timestamps is missing; 'concat' pooling needs it"),
        (dict(temporal_subset_lengths=[1, 3]), "'concat' pooling with backbone_temporal_subset_lengths [1, 3]: "
                                               "TerraTorch sizes the necks for 4 dates but the groups leave 2"),
        (dict(temporal_subset_lengths=[2, 3]), "add up to 5, but backbone_temporal_n_timestamps is 4"),
        (dict(temporal_pooling="diff", temporal_subset_lengths=[1, 1, 2]), "'diff' needs exactly two groups"),
        (dict(temporal_pooling="diff"), "'diff' pooling compares exactly 2 dates, but backbone_temporal_n_timestamps is 4"),
        (dict(temporal_subset_lengths=[0, 4]), "backbone_temporal_subset_lengths [0, 4] (a list of positive integers"),
        (dict(temporal_features_permute_op=[0, 2, 1]), "backbone_temporal_features_permute_op (TerraMind's token"),
        (dict(temporal_n_timestamps="four"), "backbone_temporal_n_timestamps 'four' (a positive integer"),
        (dict(temporal_window=3), "backbone_temporal_window"),
    ],
)  # fmt: skip
def test_wrapper_settings_that_cannot_run(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_yaml_dict(with_backbone_args(load("tiny_impactmesh_flood"), **settings))
    assert message in str(err.value)


def test_wrapper_settings_that_run() -> None:
    base = load("tiny_impactmesh_flood")
    mean = config_from_yaml_dict(with_backbone_args(base, temporal_pooling="mean", temporal_n_timestamps=None))
    assert mean.temporal.dates is None and mean.input_shape("DEM") == ("B", 1, "T", "H", "W")
    groups = config_from_yaml_dict(with_backbone_args(base, temporal_pooling="diff", temporal_subset_lengths=[2, 2]))
    assert groups.temporal.dates == 4 and groups.temporal.subset_lengths == (2, 2)
    deprecated = config_from_yaml_dict(with_backbone_args(base, temporal_concat=True))
    assert any("backbone_temporal_concat is deprecated" in n for n in deprecated.notes)
    off = config_from_yaml_dict(with_backbone_args(base, use_temporal=False))
    assert off.temporal is None and off.input_layout == "BCHW" and off.input_shape("DEM") == ("B", 1, "H", "W")
    assert any("ignored: backbone_use_temporal is not set" in n for n in off.notes)


def test_temporal_tim_is_named() -> None:
    cfg = with_backbone_args(load("tiny_impactmesh_flood"))
    cfg["model"]["init_args"]["model_args"]["backbone"] = "terramind_v1_tiny_tim"
    with pytest.raises(ConfigError, match=r"the temporal wrapper around a TiM backbone"):
        config_from_yaml_dict(cfg)


def test_tiled_inference_parameters() -> None:
    args = copy.deepcopy(load("tiny_impactmesh_flood")["model"]["init_args"])
    spec = config_from_task_args(args).tiled_inference
    assert (spec.tile, spec.strides, spec.delta, spec.effective_delta) == ((256, 256), (208, 208), 8, 8)
    assert (spec.average_patches, spec.blend_overlaps, spec.padding) == (True, True, "reflect")
    args["tiled_inference_parameters"] = {"crop": 224, "h_stride": 200, "w_stride": 220, "delta": 16, "verbose": True}
    spec = config_from_task_args(args).tiled_inference
    assert spec.strides == (200, 220) and spec.effective_delta == 2  # reduced to half the smaller overlap
    args["tiled_inference_parameters"] = {"crop": 128, "stride": 200, "speed": 2}
    cfg = config_from_task_args(args)
    assert cfg.tiled_inference is None
    assert any("speed ignored" in n for n in cfg.notes) and any("stride (larger than the crop" in n for n in cfg.notes)
