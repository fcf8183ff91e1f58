"""Reading TerraTorch fine-tuning configs, and class names/colours (torch-free modules)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from terramind_qgis.models.core.classes import default_color, parse_classes, resolve_classes
from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.modalities import ClassInfo
from terramind_qgis.models.segmentation.config import (
    SegmentationConfig,
    config_from_task_args,
    config_from_yaml_dict,
    load_yaml_config,
)

CONFIGS = Path(__file__).resolve().parents[3] / "tests" / "data" / "terramind_configs"


def ibm(name: str) -> dict:
    return load_yaml_config(str(CONFIGS / f"terramind_v1_{name}.yaml"))


def test_sen1floods11_base() -> None:
    cfg = config_from_yaml_dict(ibm("base_sen1floods11"))
    assert cfg.backbone == "terramind_v1_base" and cfg.size == "base" and not cfg.is_tim
    assert [(i.name, i.modality, len(i.bands)) for i in cfg.inputs] == [("S2L1C", "S2L1C", 13), ("S1GRD", "S1GRD", 2)]
    assert cfg.inputs[1].mean == (-12.599, -20.293) and cfg.inputs[1].std == (5.195, 5.890)
    assert [n["name"] for n in cfg.necks] == ["SelectIndices", "ReshapeTokensToImage", "LearnedInterpolateToPyramidal"]
    assert cfg.decoder == "UNetDecoder" and cfg.decoder_kwargs == {"channels": [512, 256, 128, 64]}
    assert (cfg.num_classes, cfg.head_dropout, cfg.class_names) == (2, 0.1, ("Others", "Flood"))
    assert cfg.no_data_replace == 0 and cfg.bands is None and cfg.notes == ()


def test_tim_and_burn_scars() -> None:
    tim = config_from_yaml_dict(ibm("base_tim_lulc_sen1floods11"))
    assert tim.is_tim and tim.catalogue_id == "terramind_v1_base" and tim.tim_modalities == ("LULC",)
    burn = config_from_yaml_dict(ibm("base_burnscars"))
    assert burn.bands == {"S2L2A": ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]}
    assert burn.inputs[0].band_subset and burn.inputs[0].mean[0] == pytest.approx(0.033349706741586264)
    assert burn.class_names == ("Others", "Burned")


def test_multitemporal_settings_are_refused_in_the_one_message() -> None:
    """Multi-temporal configs load (test_temporal_config.py); what cannot run is named with the rest."""
    cfg = ibm("base_multitemporal_crop")
    cfg["model"]["init_args"]["model_args"].update(backbone_temporal_pooling="keep", decoder="FCNDecoder")
    with pytest.raises(ConfigError) as err:
        config_from_yaml_dict(cfg)
    msg = str(err.value)
    assert msg.startswith("this fine-tuned model asks for things the plugin does not support: ")
    assert "backbone_temporal_pooling 'keep'" in msg and "decoder 'FCNDecoder'" in msg


def test_every_unsupported_entry_is_named_once() -> None:
    cfg = ibm("tiny_sen1floods11")
    args = cfg["model"]["init_args"]["model_args"]
    args.update(decoder="FCNDecoder", head_channel_count=3, backbone_qk_norm=True, peft_config={"method": "LORA"})
    args["necks"].append({"name": "FeaturePyramidNetworkNeck"})
    with pytest.raises(ConfigError) as err:
        config_from_yaml_dict(cfg)
    msg = str(err.value)
    for part in ("decoder 'FCNDecoder'", "head_channel_count", "backbone_qk_norm", "model_args.peft_config",
                 "neck 'FeaturePyramidNetworkNeck' (necks[3]"):  # fmt: skip
        assert msg.count(part) == 1, part


def test_other_tasks_and_backbones_are_named() -> None:
    cfg = ibm("tiny_sen1floods11")
    cfg["model"]["class_path"] = "terratorch.tasks.PixelwiseRegressionTask"
    with pytest.raises(ConfigError, match="task 'terratorch.tasks.PixelwiseRegressionTask'"):
        config_from_yaml_dict(cfg)
    args = copy.deepcopy(ibm("tiny_sen1floods11")["model"]["init_args"])
    args["model_args"]["backbone"] = "prithvi_eo_v2_300"
    with pytest.raises(ConfigError, match="backbone 'prithvi_eo_v2_300'"):
        config_from_task_args(args)


def test_statistics_default_and_checks() -> None:
    args = ibm("tiny_sen1floods11")["model"]["init_args"]
    cfg = config_from_task_args(args, {})  # no data section: TerraMind v1 statistics, said in a note
    assert cfg.inputs[0].mean[10] == 506.07 and "pre-training statistics" in cfg.notes[0]
    with pytest.raises(ConfigError, match="means/stds for 'S1GRD' have 3/2 values but the model reads 2 bands"):
        config_from_task_args(args, {"means": {"S2L1C": [0] * 13, "S1GRD": [0, 0, 0]},
                                     "stds": {"S2L1C": [1] * 13, "S1GRD": [1, 1]}})  # fmt: skip
    burn = ibm("base_burnscars")["model"]["init_args"]
    burn["model_args"]["backbone_bands"]["S2L2A"].append("THERMAL_1")
    with pytest.raises(ConfigError, match="have 6/6 values but the model reads 7 bands"):
        config_from_yaml_dict({"model": {"init_args": burn}, "data": ibm("base_burnscars")["data"]})


def test_config_round_trips_through_a_dict() -> None:
    cfg = config_from_yaml_dict(ibm("base_tim_lulc_sen1floods11"))
    assert SegmentationConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_yaml_config(str(bad))
    bad.write_text("trainer: {}\n")
    with pytest.raises(ConfigError, match="has no 'model:' section"):
        load_yaml_config(str(bad))


def test_classes_parameter_and_precedence() -> None:
    assert parse_classes("0: Others #d9d9d9; 1: Flood", 2) == {
        0: ClassInfo(0, "Others", "#D9D9D9"),
        1: ClassInfo(1, "Flood", default_color(1)),
    }
    assert parse_classes('[{"value": 1, "name": "Water", "color": "#0000ff"}]', 2)[1].color == "#0000FF"
    with pytest.raises(ConfigError, match="value 2 is outside 0..1"):
        parse_classes("2: Extra", 2)
    with pytest.raises(ConfigError, match="cannot read 'Flood'"):
        parse_classes("Flood", 2)
    card = [ClassInfo(1, "Card flood", "#123456")]
    got = resolve_classes(3, names=["A", "B", "C"], card_classes=card, override="2: User #654321")
    assert got == (ClassInfo(0, "A", "#D9D9D9"), ClassInfo(1, "Card flood", "#123456"), ClassInfo(2, "User", "#654321"))
    assert [c.name for c in resolve_classes(2)] == ["Class 0", "Class 1"]


def test_default_palette_is_distinct() -> None:
    colours = [default_color(i) for i in range(24)]
    assert len(set(colours)) == 24 and colours[0] == "#D9D9D9" and colours[1] == "#1F77B4"
