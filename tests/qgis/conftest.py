"""Fixtures of the QGIS-side tests (pytest-qgis: ``qgis_app``, ``qgis_processing``, ``qgis_iface``, ``qgis_new_project``).

The provider is registered the way ``initProcessing`` does it inside QGIS. The worker runs with the
project venv (``TERRAMIND_PYTHON``); the reduced test models come from the model cards in
``tests/data/catalogue`` (``TERRAMIND_CATALOGUE_PATH``) and run with ``UNTRAINED=True``.
Example rasters are copied to a temporary folder first, because QGIS writes ``.aux.xml``
statistics next to the rasters it opens.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tm_helpers import CATALOGUE, EXAMPLES, REPO, SCENE, VENV_PYTHON, RecordingFeedback

_PROVIDERS: list = []


@pytest.fixture(autouse=True)
def _release_qgis_objects():
    """Collect reference cycles after each test: an exception kept by ``pytest.raises`` holds the frames
    of ``processing.run`` and with them a QgsProcessingContext and its layers; freed after QGIS exits,
    they crash the interpreter (exit code 139)."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def worker_python() -> str:
    return str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))


@pytest.fixture(scope="session")
def terramind_env(worker_python):
    """The worker interpreter and the test catalogue, for the whole session (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in ("TERRAMIND_PYTHON", "TERRAMIND_CATALOGUE_PATH")}
    os.environ["TERRAMIND_PYTHON"] = worker_python
    paths = [p for p in (os.environ.get("TERRAMIND_CATALOGUE_PATH") or "").split(os.pathsep) if p]
    os.environ["TERRAMIND_CATALOGUE_PATH"] = os.pathsep.join(dict.fromkeys([str(CATALOGUE), *paths]))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def terramind_provider(qgis_app, qgis_processing, terramind_env):
    """The ``terramind`` provider, registered as the plugin's ``initProcessing`` does (once; re-added if a
    test removed it: the registry deletes the providers it removes)."""
    from terramind_qgis.processing_algorithms.provider import TerraMindProvider

    registry = qgis_app.processingRegistry()
    provider = registry.providerById("terramind")
    if provider is None:
        provider = TerraMindProvider()
        assert registry.addProvider(provider)
        _PROVIDERS.append(provider)  # the registry holds a raw pointer: keep the Python object alive
    return provider


@pytest.fixture
def example(tmp_path):
    """``example('S2L2A')`` -> a copy of the real example patch of that modality in tmp_path."""

    def copy(modality: str, scene: str = SCENE) -> str:
        target = tmp_path / "inputs" / modality / f"{scene}.tif"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / modality / f"{scene}.tif", target)
        target.chmod(0o644)
        return str(target)

    return copy


@pytest.fixture
def recording_feedback():
    return RecordingFeedback.create


@pytest.fixture(scope="session")
def flood_ckpt(tmp_path_factory, worker_python) -> str:
    """A Lightning checkpoint of the IBM Sen1Floods11 tiny model, deterministic weights (written once per session)."""
    path = tmp_path_factory.mktemp("ckpt") / "flood_tiny.ckpt"
    script = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2], sys.argv[4]];"
        "from test_segmentation_goldens import write_checkpoint;"
        "write_checkpoint(__import__('pathlib').Path(sys.argv[3]), 'tiny_sen1floods11')"
    )
    subprocess.run([worker_python, "-c", script, str(REPO / ".pluginpath"), str(REPO / "tests" / "unit" / "models"), str(path),
                    str(REPO / "tests")],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return str(path)
