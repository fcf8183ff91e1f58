"""IBM and ESA's fine-tuned models in the catalogue: cards, shipped configs, the checkpoint file name
resolved from the Hub's repo listing (a local fake Hub: the real one is unreachable here), downloads,
and ``segment`` by catalogue id.

The resolution is tested against ``testlib.hub.FakeHub``, an HTTP server answering the requests
huggingface_hub's ``list_repo_files`` and ``hf_hub_download`` make (``HF_ENDPOINT`` points at it);
offline behaviour against a Hugging Face cache laid out on disk (``make_hub_cache``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from temporal_fixtures import tiled_inputs, write_date_rasters
from test_temporal_goldens import CASES, GOLD, write_checkpoint

from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.catalogue import ModelSpec, WeightsSource
from terramind_qgis.models.core.errors import DownloadError
from terramind_qgis.models.core.job import InputSpec, Job, ModelRequest, TilingSpec
from terramind_qgis.models.segmentation.catalogued import config_path
from terramind_qgis.models.segmentation.config import config_from_yaml_dict, load_yaml_config
from terramind_qgis.models.weights import hub
from testlib.errors import refused
from testlib.hub import COMMIT, FakeHub, make_hub_cache
from testlib.tasks import run_task

FLOOD, FIRE = "terramind_v1_base_flood", "terramind_v1_base_fire"
SHARED_CONFIGS = Path("/work/shared/data/terramind-configs/impactmesh")
TESTS_CONFIGS = Path(__file__).resolve().parents[2] / "data" / "terramind_configs" / "impactmesh"


@pytest.fixture(autouse=True)
def private_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache of the test's own, online unless a test says otherwise."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # explicit: huggingface_hub may have read "1" at its import,
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # and its HTTP layer checks that
    monkeypatch.setattr(catalogue, "_REGISTRY", dict(catalogue._REGISTRY))
    monkeypatch.setattr(catalogue, "_LOADED_PATHS", set())
    return tmp_path / "hf-cache"


@pytest.mark.parametrize("model_id, hazard, names, colour", [
    (FLOOD, "Flood", ("No flood", "Flood"), "#1F77B4"), (FIRE, "Fire", ("Not burned", "Burn scar"), "#D62728")])  # fmt: skip
def test_official_fine_tuned_cards(model_id: str, hazard: str, names: tuple, colour: str) -> None:
    spec = catalogue.get(model_id)
    assert spec.kind == "finetuned" and spec.official and spec in catalogue.all_specs("finetuned")
    assert spec.weights.repo_id == f"ibm-esa-geospatial/TerraMind-base-{hazard}"
    assert spec.weights.filename == "" and spec.weights.filename_match == hazard.lower()  # not known offline: said so
    assert "not known offline" in spec.description and "resolved from the repo listing" in spec.weights.display_name
    assert tuple(c.name for c in spec.classes) == names and spec.classes[1].color == colour
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # the card says what its shipped YAML says (the QGIS side checks requests with the card alone)
    path = config_path(spec)
    assert path.read_bytes() == (TESTS_CONFIGS / path.name).read_bytes()
    cfg = config_from_yaml_dict(load_yaml_config(str(path)))
    assert cfg.backbone == spec.config.backbone and cfg.num_classes == spec.config.num_classes == len(spec.classes)
    assert tuple(i.modality for i in cfg.inputs) == spec.inputs == ("S2L2A", "S1RTC", "DEM")
    assert cfg.temporal is not None and cfg.temporal.dates == spec.config.dates == 4 and spec.config.multi_temporal
    tiled = cfg.tiled_inference
    assert (tiled.tile, tiled.strides, tiled.effective_delta) == ((256, 256), (208, 208), 8)
    assert any(f"ImpactMesh data module's {hazard.lower()} dataset statistics" in n for n in cfg.notes)


def test_file_name_is_resolved_from_the_repo_listing(monkeypatch, private_hub) -> None:
    source = catalogue.get(FLOOD).weights
    files = {"README.md": b"# card", "config.yaml": b"model: {}", "TerraMind_v1_base_ImpactMesh_flood.pt": b"weights-1"}
    with FakeHub({source.repo_id: files}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        resolved = hub.resolve_filename(source)
        assert resolved.filename == "TerraMind_v1_base_ImpactMesh_flood.pt" and resolved.repo_id == source.repo_id
        path = hub.download(source)
        assert path.read_bytes() == b"weights-1" and path.parent.name == COMMIT
        assert any("/tree/main" in r for r in fake.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # later, offline: found in the cache by the same rule
    assert hub.download(source) == path


@pytest.mark.parametrize("names, picked", [
    (["model_flood.pt", "model_flood.safetensors"], "model_flood.safetensors"),  # the safe format of the same file
    (["flood/TerraMind_Flood.ckpt", "fire.pt"], "flood/TerraMind_Flood.ckpt"),
    (["a_flood.pt", "b_flood.pt"], "several"), (["notes_flood.txt", "fire.pt"], None)])  # fmt: skip
def test_which_file_of_a_listing(names: list[str], picked: str | None) -> None:
    source = WeightsSource("org/repo", "", filename_match="flood")
    if picked == "several":
        with pytest.raises(DownloadError, match=r"several checkpoint files named \*flood\*: a_flood.pt, b_flood.pt"):
            hub.pick_checkpoint(names, source)
    else:
        assert hub.pick_checkpoint(names, source) == picked


def test_resolution_failures_are_one_download_error(monkeypatch) -> None:
    source = catalogue.get(FIRE).weights
    with FakeHub({source.repo_id: {"README.md": b"x"}}) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with refused(r"has no checkpoint file named \*fire\* \(its files: README.md\)", DownloadError):
            hub.resolve_filename(source)
        with refused(r"cannot get the checkpoint named \*fire\* from Hugging Face repo 'ibm-esa-geospatial/TerraMind-base-Nope' "
                     r"\(revision 'main'\): the repository does not exist", DownloadError):
            hub.resolve_filename(WeightsSource("ibm-esa-geospatial/TerraMind-base-Nope", "", filename_match="fire"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with refused(r"its file name is not known offline, it is not in the local cache and HF_HUB_OFFLINE=1", DownloadError):
        hub.resolve_filename(source)


def test_a_folder_or_cache_copy_is_found_by_the_rule(tmp_path: Path) -> None:
    spec = catalogue.get(FLOOD)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "TerraMind_v1_base_ImpactMesh_flood.pt").write_bytes(b"w")
    (folder / "TerraMind_v1_base_ImpactMesh_fire.pt").write_bytes(b"w")
    assert hub.resolve_weights(spec, folder).path.name == "TerraMind_v1_base_ImpactMesh_flood.pt"
    cache = tmp_path / "copied-cache"
    make_hub_cache(cache, spec.weights.repo_id, "flood_model.safetensors", b"w")
    assert hub.resolve_weights(spec, cache).path.name == "flood_model.safetensors"


def test_download_task_resolves_and_places_the_files(monkeypatch, tmp_path: Path) -> None:
    flood, fire = catalogue.get(FLOOD).weights, catalogue.get(FIRE).weights
    repos = {flood.repo_id: {"TerraMind_v1_base_ImpactMesh_flood.pt": b"flood weights", "README.md": b"r"},
             fire.repo_id: {"TerraMind_v1_base_ImpactMesh_fire.pt": b"fire weights"}}  # fmt: skip
    with FakeHub(repos) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        job = Job("download", {}, {}, ModelRequest(FLOOD), params={"models": [FLOOD, FIRE], "folder": str(tmp_path / "w")})
        result = run_task(job)
    files = {f["model"]: f for f in result["metrics"]["files"]}
    assert files[FLOOD]["filename"] == "TerraMind_v1_base_ImpactMesh_flood.pt" and files[FLOOD]["resolved"]
    assert (tmp_path / "w" / "TerraMind_v1_base_ImpactMesh_fire.pt").read_bytes() == b"fire weights"
    assert files[FIRE]["repo"] == fire.repo_id and files[FIRE]["commit"] == COMMIT
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(f["filename"] for f in files.values())


def test_segment_by_catalogue_id(monkeypatch, tmp_path: Path) -> None:
    """A fine-tuned card (here a custom one over the tiny ImpactMesh config: the official base model is
    1.2 GB) runs by id: its YAML, its classes, its weights from the Hugging Face cache, no weights path."""
    cards = tmp_path / "cards"
    cards.mkdir()
    shutil.copy(GOLD / CASES["tiny_impactmesh_flood"]["config"], cards / "tiny_flood.yaml")
    card = {**catalogue.get(FLOOD).to_dict(), "id": "test_tiny_flood", "official": False, "title": "tiny flood"}
    card["config"] = {**card["config"], "config_file": "tiny_flood.yaml", "backbone": "terramind_v1_tiny"}
    card["weights"] = {**card["weights"], "repo_id": "test-org/TerraMind-tiny-Flood"}
    (cards / "test_tiny_flood.json").write_text(json.dumps(card))
    ckpt = write_checkpoint(tmp_path / "TerraMind_tiny_flood.ckpt", "tiny_impactmesh_flood")
    make_hub_cache(Path(hub.hub_cache_dir()), "test-org/TerraMind-tiny-Flood", "TerraMind_tiny_flood.ckpt", ckpt)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = write_date_rasters(tmp_path / "in", tiled_inputs(), crop=(100, 100, 96, 128))
    inputs = {m: InputSpec(str(f[0]), dates=tuple(InputSpec(str(x)) for x in f) if len(f) > 1 else ()) for m, f in files.items()}
    (tmp_path / "out").mkdir()
    job = Job("segment", inputs, {"classes": str(tmp_path / "out" / "c.tif")},
              ModelRequest("test_tiny_flood", catalogue_paths=(str(cards),)), tiling=TilingSpec(224, 32, 2))  # fmt: skip
    result = run_task(job)
    assert [c["name"] for c in result["metrics"]["classes"]] == ["No flood", "Flood"]
    with rasterio.open(result["outputs"]["classes"]) as src:
        tags, classes = src.tags(), src.read(1)
        assert src.colormap(1)[1][:3] == (0x1F, 0x77, 0xB4)
    assert tags["TERRAMIND_MODEL_ID"] == "test_tiny_flood" and tags["TERRAMIND_FINETUNED_CONFIG"].endswith("tiny_flood.yaml")
    assert "hf://test-org/TerraMind-tiny-Flood@main/TerraMind_tiny_flood.ckpt" in tags["TERRAMIND_WEIGHTS_SOURCE"]
    assert classes.shape == (96, 128) and set(np.unique(classes)) <= {0, 1}
