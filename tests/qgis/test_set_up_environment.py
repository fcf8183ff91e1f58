"""Set up the Python environment: the plugin creates its own worker environment, end to end.

The real run creates a virtual environment in a temporary folder with the plugin's requirements
(from this machine's package index, as users get them from theirs), then runs a reconstruction with
it as the worker interpreter, found through the plugin setting the algorithm saved. A broken
requirements file must fail with pip's own complaint in one message and leave no setting behind.
"""

from __future__ import annotations

import os

import pytest
from qgis.core import QgsProcessingException, QgsSettings

import processing
from tm_helpers import raster_facts

ALG = "terramind:setupenvironment"
KEY = "terramind/python"


@pytest.fixture
def clean_setting(monkeypatch):
    """No TERRAMIND_PYTHON, and the plugin setting restored afterwards."""
    saved = QgsSettings().value(KEY, None)
    monkeypatch.delenv("TERRAMIND_PYTHON", raising=False)
    QgsSettings().remove(KEY)
    yield
    if saved is None:
        QgsSettings().remove(KEY)
    else:
        QgsSettings().setValue(KEY, saved)


def test_parameter_keys(terramind_provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "FOLDER", "BASE_PYTHON", "TORCH_INDEX_URL", "REQUIREMENTS", "SAVE_SETTING"]
    assert [o.name() for o in alg.outputDefinitions()] == ["PYTHON"]


def test_creates_a_working_environment_and_selects_it(terramind_provider, clean_setting, tmp_path, example,
                                                      recording_feedback):
    feedback = recording_feedback()
    folder = tmp_path / "env"
    result = processing.run(ALG, {"FOLDER": str(folder), "SAVE_SETTING": True}, feedback=feedback)
    python = result["PYTHON"]
    assert python == str(folder / "bin" / "python") and os.access(python, os.X_OK)
    assert QgsSettings().value(KEY) == python
    assert any("The environment works" in m for m in feedback.infos)
    # The new environment runs the models: the plugin finds it through the setting alone.
    out = processing.run("terramind:reconstructwithtokenizer", {
        "INPUT": example("DEM"), "MODALITY": "DEM", "MODEL": "test_tokenizer_dem", "UNTRAINED": True,
        "TIMESTEPS": 1, "OUTPUT": str(tmp_path / "dem.tif"), "DEVICE": "cpu"}, feedback=feedback)  # fmt: skip
    assert any(python in m for m in feedback.infos)  # "Worker interpreter: <python> ..."
    assert raster_facts(out["OUTPUT"])["size"] == raster_facts(example("DEM"))["size"]


def test_a_failing_install_is_one_message_and_saves_nothing(terramind_provider, clean_setting, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this-package-does-not-exist-anywhere==0.0.1\n")
    with pytest.raises(QgsProcessingException, match="failed .*this-package-does-not-exist-anywhere"):
        processing.run(ALG, {"FOLDER": str(tmp_path / "env"), "REQUIREMENTS": str(requirements), "SAVE_SETTING": True})
    assert QgsSettings().value(KEY, None) is None
