"""Resolving weights: Hugging Face cache (offline), local files and folders, and their errors."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.catalogue import ModelSpec
from terramind_qgis.models.core.configs import TokenizerConfig
from terramind_qgis.models.core.errors import CancelledError, ConfigError, DownloadError
from terramind_qgis.models.core.job import ModelRequest
from terramind_qgis.models.weights import hub
from terramind_qgis.models.weights.hub import resolve_weights
from testlib.hub import COMMIT, make_hub_cache
from testlib.progress import RecordingProgress


@pytest.fixture
def spec() -> ModelSpec:
    return catalogue.get("terramind_v1_tokenizer_dem")


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_cached_file_resolves_offline(spec: ModelSpec, offline_cache: Path) -> None:
    snapshot = make_hub_cache(offline_cache, spec.weights.repo_id, spec.weights.filename, b"weights")
    resolved = resolve_weights(spec)
    assert resolved.path == snapshot and resolved.path.read_bytes() == b"weights"
    assert resolved.origin == "hub"
    assert resolved.description == (
        "hf://ibm-esa-geospatial/TerraMind-1.0-Tokenizer-DEM@main/TerraMind_Tokenizer_DEM.pt"
    )


def test_hf_home_is_honoured_at_call_time(spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = make_hub_cache(tmp_path / "home" / "hub", spec.weights.repo_id, spec.weights.filename, b"x")
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    assert resolve_weights(spec).path == snapshot


def test_pinned_commit_resolves_without_refs(spec: ModelSpec, offline_cache: Path) -> None:
    make_hub_cache(offline_cache, spec.weights.repo_id, spec.weights.filename, b"pinned")
    shutil.rmtree(offline_cache / ("models--" + spec.weights.repo_id.replace("/", "--")) / "refs")
    pinned = replace(spec, weights=replace(spec.weights, revision=COMMIT))
    assert resolve_weights(pinned).path.read_bytes() == b"pinned"
    with pytest.raises(DownloadError):  # the branch name can no longer be resolved offline
        resolve_weights(spec)


def test_offline_cache_miss_is_one_clear_download_error(spec: ModelSpec, offline_cache: Path) -> None:
    with pytest.raises(DownloadError) as err:
        resolve_weights(spec)
    message = str(err.value)
    for part in ("TerraMind_Tokenizer_DEM.pt", "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-DEM", "revision 'main'",
                 "HF_HUB_OFFLINE=1", "give the file (or its folder) as the model weights", str(offline_cache)):
        assert part in message
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


def test_network_failure_is_one_download_error(spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub ...")

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(DownloadError, match=r"could not be reached \(no network connection\?\)") as err:
        resolve_weights(spec)
    assert "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-DEM" in str(err.value)


def test_checksum_mismatch_after_download(spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    fetched = tmp_path / "fetched.pt"
    fetched.write_bytes(b"not the published file")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(fetched))
    good = replace(spec, weights=replace(spec.weights, sha256=hashlib.sha256(fetched.read_bytes()).hexdigest()))
    assert resolve_weights(good).path == fetched
    bad = replace(spec, weights=replace(spec.weights, sha256="0" * 64))
    with pytest.raises(DownloadError, match="expected 0000"):
        resolve_weights(bad)


def test_local_file_and_folders(spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "unused-cache"))
    direct = tmp_path / "anywhere" / "my-dem.pt"
    direct.parent.mkdir()
    direct.write_bytes(b"a")
    assert resolve_weights(spec, direct) == hub.ResolvedWeights(direct, "local")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / spec.weights.filename).write_bytes(b"b")
    assert resolve_weights(spec, str(folder)).path == folder / spec.weights.filename
    st_folder = tmp_path / "st"
    st_folder.mkdir()
    (st_folder / "TerraMind_Tokenizer_DEM.safetensors").write_bytes(b"c")
    assert resolve_weights(spec, st_folder).path.name == "TerraMind_Tokenizer_DEM.safetensors"
    # Hugging Face cache layouts: a cache root, an HF_HOME, a models--org--name folder
    snapshot = make_hub_cache(tmp_path / "home" / "hub", spec.weights.repo_id, spec.weights.filename, b"d")
    for given in (tmp_path / "home", tmp_path / "home" / "hub", snapshot.parents[2]):
        assert resolve_weights(spec, given).path == snapshot, given


def test_missing_local_paths_name_the_path(spec: ModelSpec, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"'{tmp_path / 'nope.pt'}'.*does not exist"):
        resolve_weights(spec, tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match="contains neither 'TerraMind_Tokenizer_DEM.pt' nor a Hugging Face cache"):
        resolve_weights(spec, tmp_path)


def test_custom_entry_without_source(tmp_path: Path) -> None:
    custom = ModelSpec("my_dem_tokenizer", "tokenizer", "mine", TokenizerConfig("divae", 1), None, modality="DEM")
    with pytest.raises(ConfigError, match="has no weights source.*untrained=True"):
        resolve_weights(custom)
    (tmp_path / "a.pt").write_bytes(b"1")
    assert resolve_weights(custom, tmp_path).path == tmp_path / "a.pt"  # the only checkpoint in the folder
    (tmp_path / "b.safetensors").write_bytes(b"2")
    with pytest.raises(ConfigError, match="exactly one checkpoint file.*a.pt, b.safetensors"):
        resolve_weights(custom, tmp_path)


def test_download_progress_bar_forwards_percent_and_cancel() -> None:
    progress = RecordingProgress()
    bar = hub._progress_bar_class(progress)(total=200, initial=50, unit="B", desc="x")
    bar.update(50)
    assert progress.percents == [50.0]
    progress.cancel()
    with pytest.raises(CancelledError):
        bar.update(10)


def test_a_download_inside_a_run_leaves_the_progress_bar_to_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model that must be downloaded first: the download's percentages become messages (every
    10 %), the run's progress bar is untouched, and cancelling still stops the download."""
    import torch

    from terramind_qgis.models import build

    catalogue.load_cards(Path(__file__).resolve().parents[2] / "data" / "catalogue")
    made = tmp_path / "dem.pt"
    torch.save(build.load_tokenizer(ModelRequest("test_tokenizer_dem", untrained=True)).state_dict(), made)

    def fake_resolve(spec, weights, *, progress):  # a Hub download of 4 chunks
        for percent in (5.0, 25.0, 50.0, 100.0):
            progress.set_progress(percent)
            if progress.is_canceled():
                raise CancelledError("cancelled by the user")
        return hub.ResolvedWeights(path=made, origin="hub", repo_id="org/repo", filename="dem.pt", revision="main")

    monkeypatch.setattr(build, "resolve_weights", fake_resolve)
    progress = RecordingProgress()
    build.load_tokenizer("test_tokenizer_dem", progress=progress)
    assert progress.percents == []
    steps = [m for m in progress.infos if m.startswith("downloading the weights of 'test_tokenizer_dem'")]
    assert steps == [f"downloading the weights of 'test_tokenizer_dem': {p} %" for p in (20, 50, 100)]
    progress.cancel()
    with pytest.raises(CancelledError):
        build.load_tokenizer("test_tokenizer_dem", progress=progress)
