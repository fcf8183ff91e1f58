"""Task ``download``: files from an offline Hugging Face cache, into a folder that models/build.py loads.

The models are custom cards of the reduced test architectures with a (made-up) Hugging Face source;
their checkpoint files are filled by the deterministic rule and laid out in a temporary cache the
way huggingface_hub lays them out. ``HF_HUB_OFFLINE=1`` throughout: nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from worker_fixtures import CATALOGUE, run_worker, write_job

from terramind_qgis.models.build import load_generation, load_tokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import CancelledError, ConfigError, DownloadError, UnsupportedModalityError
from terramind_qgis.models.core.job import Job, ModelRequest
from terramind_qgis.models.terramind import TerraMindGeneration
from terramind_qgis.models.weights.loading import checkpoint_layout
from terramind_qgis.models.weights.matching import GENERATION
from terramind_qgis.models.weights.untrained import deterministic_state_dict
from testlib.hub import COMMIT, make_hub_cache
from testlib.progress import RecordingProgress
from testlib.tasks import run_task, validate

TM, DEM, LULC = "dl_terramind", "dl_tokenizer_dem", "dl_tokenizer_lulc"
FILES = {TM: ("test-org/DL-TerraMind", "DL_TerraMind.pt"), DEM: ("test-org/DL-Tokenizer-DEM", "DL_Tokenizer_DEM.pt"),
         LULC: ("test-org/DL-Tokenizer-LULC", "DL_Tokenizer_LULC.pt")}  # fmt: skip


def card(model_id: str, base: str, **changes) -> dict:
    """The test card ``base`` under another id, with a Hugging Face weights source."""
    data = json.loads((CATALOGUE / f"{base}.json").read_text())
    repo, filename = FILES[model_id]
    return {**data, "id": model_id, "weights": {"repo_id": repo, "filename": filename, "revision": "main"}, **changes}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """Model cards (a reduced TerraMind with DEM and LULC tokenizers) and their checkpoint files' bytes."""
    root = tmp_path_factory.mktemp("download")
    cards = root / "cards"
    cards.mkdir()
    tm_card = card(TM, "test_terramind_tiny", inputs=["S2L2A", "S1RTC"], outputs=["DEM", "LULC"],
                   tokenizers={"DEM": DEM, "LULC": LULC})  # fmt: skip
    for data in (tm_card, card(DEM, "test_tokenizer_dem"), card(LULC, "test_tokenizer_lulc")):
        (cards / f"{data['id']}.json").write_text(json.dumps(data))
    catalogue.load_cards(cards)
    with torch.device("meta"):
        model = TerraMindGeneration(catalogue.get(TM).config, ["S2L2A", "S1RTC"], ["DEM", "LULC"])
    states = {TM: deterministic_state_dict(checkpoint_layout(model, GENERATION)),
              DEM: load_tokenizer(ModelRequest(DEM, untrained=True)).state_dict(),
              LULC: load_tokenizer(ModelRequest(LULC, untrained=True)).state_dict()}  # fmt: skip
    content = {}
    for model_id, state in states.items():
        torch.save(state, root / "tmp.pt")
        content[model_id] = (root / "tmp.pt").read_bytes()
    return {"cards": cards, "content": content, "states": states}


@pytest.fixture
def cache(prepared, tmp_path, monkeypatch) -> Path:
    """An offline Hugging Face cache holding the three files."""
    cache = tmp_path / "hf-cache"
    for model_id, (repo, filename) in FILES.items():
        make_hub_cache(cache, repo, filename, prepared["content"][model_id])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def job(prepared, models, **params) -> Job:
    return Job.from_dict({"task": "download", "model": {"id": models[0], "catalogue_paths": [str(prepared["cards"])]},
                          "params": {"models": models, **params}, "device": "cpu"})  # fmt: skip




def run(request_job: Job, progress=None) -> dict:
    return run_task(request_job, progress)


def test_folder_holds_official_names_and_build_loads_it_without_the_cache(prepared, cache, tmp_path):
    folder = tmp_path / "offline"
    progress = RecordingProgress()
    result = run(job(prepared, [TM], folder=str(folder)), progress)
    files = result["metrics"]["files"]
    assert result["outputs"] == {"folder": str(folder)}
    assert sorted(p.name for p in folder.iterdir()) == sorted(name for _, name in FILES.values())
    assert [f["model"] for f in files] == [TM, DEM, LULC]  # the model, then its tokenizers
    for f in files:
        content = prepared["content"][f["model"]]
        repo, filename = FILES[f["model"]]
        assert (f["repo"], f["revision"], f["commit"], f["filename"]) == (repo, "main", COMMIT, filename)
        assert f["path"] == str(folder / filename) and Path(f["path"]).read_bytes() == content
        assert (f["bytes"], f["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
        assert f["placed"] == "hard link" and not Path(f["path"]).is_symlink()
        assert f["cache_path"].startswith(str(cache))
    assert result["metrics"]["total_bytes"] == sum(len(c) for c in prepared["content"].values())
    assert progress.percents == sorted(progress.percents) and progress.percents[-1] == 100.0
    assert sum("file " in m for m in progress.infos) == 3
    # the folder alone is enough: the cache goes, the model and its tokenizer load from the folder
    shutil.rmtree(cache)
    model = load_generation(ModelRequest(TM, weights=str(folder)), ["S2L2A"], ["DEM"])
    assert model.weights_source == {"model": str(folder / "DL_TerraMind.pt"),
                                    "tokenizer DEM": str(folder / "DL_Tokenizer_DEM.pt")}
    key = "encoder.0.attn.qkv.weight"
    assert torch.equal(model.state_dict()["sampler.model." + key], prepared["states"][TM][key])
    dem = prepared["states"][DEM]
    assert all(torch.equal(v, dem[k]) for k, v in model.tokenizer["tok_dem@224"].state_dict().items())


def test_without_a_folder_the_files_stay_in_the_cache(prepared, cache):
    result = run(job(prepared, [DEM]))
    (f,) = result["metrics"]["files"]
    assert result["outputs"] == {} and result["metrics"]["folder"] is None
    cached = cache / "models--test-org--DL-Tokenizer-DEM" / "snapshots" / COMMIT / "DL_Tokenizer_DEM.pt"
    assert f["path"] == f["cache_path"] == str(cached)
    assert f["placed"] is None and f["sha256"] == hashlib.sha256(prepared["content"][DEM]).hexdigest()


def test_tokenizer_choice(prepared, cache, tmp_path):
    def names(**params):
        request = validate(job(prepared, [TM], **params))
        return [f.source.filename for f in request.files]

    assert names(tokenizers=["dem"]) == ["DL_TerraMind.pt", "DL_Tokenizer_DEM.pt"]
    assert names(tokenizers=[]) == ["DL_TerraMind.pt"]
    request = validate(job(prepared, [DEM, TM]))  # a file listed twice is taken once
    assert [f.model_id for f in request.files] == [DEM, TM, LULC]
    with pytest.raises(ConfigError, match=f"model '{TM}' has no tokenizer for S2L2A .*its tokenizers are for DEM, LULC"):
        names(tokenizers=["S2L2A"])
    with pytest.raises(UnsupportedModalityError, match="unknown modality 'RGB'"):
        names(tokenizers=["RGB"])
    with pytest.raises(ConfigError, match="'models' lists none"):
        validate(job(prepared, [DEM], tokenizers=["DEM"]))


def test_an_official_terramind_id_brings_its_six_tokenizers(prepared):
    request = validate(job(prepared, ["terramind_v1_tiny"]))
    assert [f.source.filename for f in request.files] == ["TerraMind_v1_tiny.pt"] + [
        f"TerraMind_Tokenizer_{m}.pt" for m in ("S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC")]
    assert {f.source.repo_id for f in request.files} >= {"ibm-esa-geospatial/TerraMind-1.0-tiny",
                                                         "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-LULC"}


def test_models_without_weights_and_bad_folders_are_bad_jobs(prepared, tmp_path):
    catalogue.load_cards(CATALOGUE)  # the test cards have no weights source
    with pytest.raises(ConfigError, match="model 'test_tokenizer_dem' has no published weights"):
        validate(job(prepared, ["test_tokenizer_dem"]))
    catalogue.register(catalogue.ModelSpec.from_dict(card(TM, "test_terramind_tiny", id="dl_tm_test_tokenizers")))
    with pytest.raises(ConfigError, match=r"'test_tokenizer_s2l2a' \(a tokenizer of 'dl_tm_test_tokenizers'; leave it out"):
        validate(job(prepared, ["dl_tm_test_tokenizers"]))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="parameter 'folder': '.*a-file' is a file"):
        validate(job(prepared, [DEM], folder=str(tmp_path / "a-file")))
    with pytest.raises(ConfigError, match="'models' must be a non-empty list"):
        validate(Job.from_dict({"task": "download", "model": {"id": ""}, "params": {"models": []}}))


def test_cancelling_keeps_complete_files_and_leaves_no_partial_file(prepared, cache, tmp_path):
    folder = tmp_path / "offline"
    progress = RecordingProgress(lambda p: any(m.startswith("file 2/") for m in p.infos))
    with pytest.raises(CancelledError):
        run(job(prepared, [TM], folder=str(folder)), progress)
    assert sorted(p.name for p in folder.iterdir()) == ["DL_TerraMind.pt"]  # no tokenizer, no *.partial-*
    assert (folder / "DL_TerraMind.pt").read_bytes() == prepared["content"][TM]


def test_copy_where_hard_links_fail_and_pinned_checksums(prepared, cache, tmp_path, monkeypatch):
    def no_links(src, dst, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "copies"
    (f,) = run(job(prepared, [DEM], folder=str(folder)))["metrics"]["files"]
    assert f["placed"] == "copy" and (folder / "DL_Tokenizer_DEM.pt").read_bytes() == prepared["content"][DEM]
    assert os.stat(folder / "DL_Tokenizer_DEM.pt").st_ino != os.stat(f["cache_path"]).st_ino
    # a card that pins another checksum: refused before anything lands in the folder
    pinned = card(DEM, "test_tokenizer_dem", id="dl_pinned_dem")
    pinned["weights"]["sha256"] = "0" * 64
    (tmp_path / "pinned").mkdir()
    (tmp_path / "pinned" / "pinned.json").write_text(json.dumps(pinned))
    bad = Job.from_dict({"task": "download", "model": {"id": "dl_pinned_dem", "catalogue_paths": [str(tmp_path / "pinned")]},
                         "params": {"folder": str(tmp_path / "refused")}})  # fmt: skip
    with pytest.raises(DownloadError, match="but the catalogue pins 0000"):
        run(bad)
    assert list((tmp_path / "refused").iterdir()) == []


def test_worker_offline_cache_miss_is_one_download_error(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_job(tmp_path, {"protocol": 1, "task": "download", "inputs": {}, "outputs": {},
                                "model": {"id": DEM, "catalogue_paths": [str(prepared["cards"])]},
                                "params": {"folder": str(tmp_path / "offline")}, "device": "cpu"})  # fmt: skip
    code, events, stderr = run_worker(path)
    assert code == 1, stderr
    error = events[-1]
    assert error["event"] == "error" and error["type"] == "DownloadError"
    for part in ("DL_Tokenizer_DEM.pt", "test-org/DL-Tokenizer-DEM", "HF_HUB_OFFLINE=1", "give the file (or its folder)"):
        assert part in error["message"]
    assert "Traceback" not in stderr and not any((tmp_path / "offline").iterdir())


def test_worker_downloads_into_a_folder(prepared, cache, tmp_path):
    path = write_job(tmp_path, {"protocol": 1, "task": "download", "inputs": {}, "outputs": {},
                                "model": {"id": TM, "catalogue_paths": [str(prepared["cards"])]},
                                "params": {"models": [TM], "tokenizers": ["LULC"], "folder": str(tmp_path / "w")},
                                "device": "cpu"})  # fmt: skip
    code, events, stderr = run_worker(path)
    assert code == 0, stderr
    result = events[-1]
    assert result["event"] == "result" and result["outputs"] == {"folder": str(tmp_path / "w")}
    assert [f["filename"] for f in result["metrics"]["files"]] == ["DL_TerraMind.pt", "DL_Tokenizer_LULC.pt"]
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["DL_TerraMind.pt", "DL_Tokenizer_LULC.pt"]
