"""Run on many scenes: the fleet on a real LocalCluster, driven from Processing (and from a graphical model).

Scenes are copies of the LULC example patches (plus one corrupt file); the template reconstructs them with the
reduced test tokenizer, about a second of work each.
"""

from __future__ import annotations

import json
import shutil

import processing
import pytest
from qgis.core import QgsProcessingException
from tm_helpers import CATALOGUE, EXAMPLES

ALG = "terramind:runonmanyscenes"
SCENES = ("282D_485L_3_3", "38D_378R_2_3")


def _template(folder) -> str:
    data = {
        "protocol": 1, "task": "reconstruct",
        "inputs": {"LULC": {"name": "{scene}"}},
        "outputs": {"reconstruction": "{scene}/rec.tif"},
        "model": {"id": "test_tokenizer_lulc", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
        "params": {"modality": "LULC", "seed": 3},
        "tiling": {"tile_size": 224, "overlap": 0, "batch_size": 1}, "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    path = folder / "template.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def _scenes(folder, broken: bool = False) -> str:
    folder.mkdir()
    for scene in SCENES:
        shutil.copy(EXAMPLES / "LULC" / f"{scene}.tif", folder / f"{scene}.tif")
    if broken:
        (folder / "broken.tif").write_bytes(b"II*\0 this is not a GeoTIFF")
    return str(folder / "*.tif")


def test_every_scene_is_done_and_a_broken_one_is_reported(terramind_provider, recording_feedback, tmp_path):
    feedback = recording_feedback()
    params = {"TEMPLATE": _template(tmp_path), "SCENE_PATTERN": _scenes(tmp_path / "scenes", broken=True),
              "OUTPUT_FOLDER": str(tmp_path / "out"), "WORKERS": 2, "RETRIES": 0}  # fmt: skip
    result = processing.run(ALG, params, feedback=feedback)
    assert (result["SUCCEEDED"], result["FAILED"], result["SKIPPED"]) == (2, 1, 0)
    for scene in SCENES:
        assert (tmp_path / "out" / scene / "rec.tif").is_file()
    assert not (tmp_path / "out" / "broken" / "rec.tif").exists() and not list((tmp_path / "out").rglob("*.partial-*"))
    records = [json.loads(line) for line in open(result["MANIFEST"], encoding="utf-8")]
    assert {r["scene"]: r["status"] for r in records} == {"282D_485L_3_3": "succeeded", "38D_378R_2_3": "succeeded",
                                                          "broken": "failed"}  # fmt: skip
    assert any(w.startswith("scene broken: InputRasterError") for w in feedback.warnings)
    assert feedback.progress and feedback.progress[-1] == 100.0
    assert sum("started on" in m for m in feedback.infos) == 3

    again = processing.run(ALG, {**params, "SCENE_PATTERN": str(tmp_path / "scenes" / "2*.tif")})
    assert (again["SUCCEEDED"], again["SKIPPED"]) == (0, 1)  # a rerun does only what is missing


@pytest.mark.parametrize(("change", "match"), [
    ({"SCENE_PATTERN": ""}, r"SCENE_PATTERN: give the scenes"),
    ({"SCHEDULER": "tcp://127.0.0.1:1"}, r"WORKERS: give either a scheduler address or a number of local workers"),
    ({"TEMPLATE": "BROKEN"}, r"template"),
])  # fmt: skip
def test_bad_input_is_one_message(terramind_provider, tmp_path, change, match):
    params = {"TEMPLATE": _template(tmp_path), "SCENE_PATTERN": _scenes(tmp_path / "scenes"),
              "OUTPUT_FOLDER": str(tmp_path / "out"), "WORKERS": 1}  # fmt: skip
    if change.get("TEMPLATE") == "BROKEN":
        bad = tmp_path / "bad.json"
        bad.write_text('{"task": "describe"}')
        change = {"TEMPLATE": str(bad)}
    with pytest.raises(QgsProcessingException, match=match) as info:
        processing.run(ALG, {**params, **change})
    assert "Traceback" not in str(info.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.tif"))
