"""Download models for offline use, in QGIS: parameter keys, a folder filled from a prepared offline
Hugging Face cache, the offline error, and a reconstruction that then reads the folder alone.

The models are custom model cards of the reduced test architectures with a made-up Hugging Face
source (the catalogue's official ids behave the same, see tests/unit/worker/test_worker_download.py);
``HF_HUB_OFFLINE=1`` throughout, so nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingException
from tm_helpers import CATALOGUE, REPO, add_model_cards, raster_facts

from testlib.hub import COMMIT, make_hub_cache

ALG = "terramind:downloadmodels"
TM, DEM = "qdl_terramind", "qdl_tokenizer_dem"
SOURCES = {TM: ("test-org/QDL-TerraMind", "QDL_TerraMind.pt"), DEM: ("test-org/QDL-Tokenizer-DEM", "QDL_Tokenizer_DEM.pt")}


def card(model_id: str, base: str, **changes) -> dict:
    data = json.loads((CATALOGUE / f"{base}.json").read_text())
    repo, filename = SOURCES[model_id]
    return {**data, "id": model_id, "weights": {"repo_id": repo, "filename": filename, "revision": "main"}, **changes}


@pytest.fixture
def cards(terramind_provider, tmp_path, monkeypatch):
    """A reduced TerraMind card with one tokenizer (DEM), both with a Hugging Face source; offline."""
    folder = tmp_path / "cards"
    folder.mkdir()
    add_model_cards(monkeypatch, folder, {
        "tm.json": card(TM, "test_terramind_tiny", inputs=["S2L2A"], outputs=["DEM"], tokenizers={"DEM": DEM}),
        "dem.json": card(DEM, "test_tokenizer_dem")})  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def test_parameter_keys_and_choices(cards):
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    assert [p.name() for p in alg.parameterDefinitions()] == ["MODELS", "TOKENIZERS", "FOLDER"]
    assert [o.name() for o in alg.outputDefinitions()] == ["FOLDER", "FILES"]
    assert alg.group() == "Environment" and alg.shortHelpString()
    models = alg.parameterDefinition("MODELS")
    assert models.allowMultiple() and models.usesStaticStrings() and models.defaultValue() == "terramind_v1_base"
    from terramind_qgis.models.core.catalogue import OFFICIAL

    assert models.options()[: len(OFFICIAL)] == [s.id for s in OFFICIAL]  # official ids first, then custom cards
    assert {TM, DEM} <= set(models.options()) and "test_tokenizer_dem" not in models.options()  # no weights: not listed
    assert alg.parameterDefinition("TOKENIZERS").options() == ["S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC"]


def test_download_into_a_folder(cards, tmp_path, recording_feedback):
    content = {TM: b"terramind weights", DEM: b"dem tokenizer weights"}
    for model_id, (repo, filename) in SOURCES.items():
        make_hub_cache(cards, repo, filename, content[model_id])
    feedback = recording_feedback()
    folder = tmp_path / "offline"
    result = processing.run(ALG, {"MODELS": [TM], "FOLDER": str(folder)}, feedback=feedback)
    assert result["FOLDER"] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["QDL_TerraMind.pt", "QDL_Tokenizer_DEM.pt"]
    files = json.loads(result["FILES"])
    assert [(f["model"], f["repo"], f["revision"], f["commit"]) for f in files] == [
        (TM, "test-org/QDL-TerraMind", "main", COMMIT), (DEM, "test-org/QDL-Tokenizer-DEM", "main", COMMIT)]
    for f in files:
        assert f["path"] == str(folder / f["filename"]) and (folder / f["filename"]).read_bytes() == content[f["model"]]
        assert (f["bytes"], f["sha256"]) == (len(content[f["model"]]), hashlib.sha256(content[f["model"]]).hexdigest())
    assert any(m.startswith(f"{DEM}: {folder}") for m in feedback.infos)
    assert feedback.progress and max(feedback.progress) == 100.0
    # without a folder the files stay where they are, in the cache
    kept = processing.run(ALG, {"MODELS": [DEM]})
    assert kept["FOLDER"] is None
    assert json.loads(kept["FILES"])[0]["path"].startswith(str(cards))


def test_offline_cache_miss_and_bad_choices(cards, tmp_path):
    with pytest.raises(QgsProcessingException) as info:
        processing.run(ALG, {"MODELS": [DEM], "FOLDER": str(tmp_path / "offline")})
    message = str(info.value)
    assert "cannot get weights file 'QDL_Tokenizer_DEM.pt' from Hugging Face repo 'test-org/QDL-Tokenizer-DEM'" in message
    assert "HF_HUB_OFFLINE=1 forbids downloading" in message and message.count("\n") == 0
    with pytest.raises(QgsProcessingException, match="TOKENIZERS picks the tokenizers of TerraMind models, but MODELS has none"):
        processing.run(ALG, {"MODELS": [DEM], "TOKENIZERS": ["DEM"]})
    with pytest.raises(QgsProcessingException, match=f"model '{TM}' has no tokenizer for LULC"):
        processing.run(ALG, {"MODELS": [TM], "TOKENIZERS": ["LULC"]})


def test_reconstruction_reads_the_downloaded_folder_alone(cards, tmp_path, example, worker_python):
    """A real (untrained-filled) tokenizer checkpoint goes through the cache into the folder; with the cache
    gone and HF_HUB_OFFLINE=1, reconstruction with WEIGHTS = the folder runs and records that file."""
    made = tmp_path / "dem.pt"
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]);"
              "from terramind_qgis.models import build; from terramind_qgis.models.core import catalogue;"
              "from terramind_qgis.models.core.job import ModelRequest; catalogue.load_cards(sys.argv[2]);"
              "tok = build.load_tokenizer(ModelRequest('test_tokenizer_dem', untrained=True));"
              "torch.save(tok.state_dict(), sys.argv[3])")  # fmt: skip
    subprocess.run([worker_python, "-c", script, str(REPO / ".pluginpath"), str(CATALOGUE), str(made)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    make_hub_cache(cards, *SOURCES[DEM], made.read_bytes())
    folder = tmp_path / "offline"
    processing.run(ALG, {"MODELS": [DEM], "FOLDER": str(folder)})
    shutil.rmtree(cards)
    out = processing.run("terramind:reconstructwithtokenizer", {
        "INPUT": example("DEM"), "MODALITY": "DEM", "MODEL": DEM, "WEIGHTS": str(folder), "TIMESTEPS": 1,
        "OUTPUT": str(tmp_path / "rec.tif"), "DEVICE": "cpu"})  # fmt: skip
    facts = raster_facts(out["OUTPUT"])
    assert facts["size"] == raster_facts(example("DEM"))["size"]
    assert json.loads(facts["tags"]["TERRAMIND_WEIGHTS_SOURCE"]) == {"model": str(folder / "QDL_Tokenizer_DEM.pt")}
