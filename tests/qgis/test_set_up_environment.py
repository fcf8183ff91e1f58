"""Set up the Python environment: the plugin creates its own worker environment, end to end.

The real run creates a virtual environment in a temporary folder with the plugin's requirements
(from this machine's package index, as users get them from theirs), reports pip's steps and a moving
progress bar, states the execution providers ONNX Runtime offers in the new environment, then runs a
reconstruction with it as the worker interpreter, found through the plugin setting the algorithm
saved. A broken requirements file must fail with pip's own complaint in one message and leave no
setting behind. The CUDA choice (onnxruntime-gpu with a CUDA wheel index) is checked on the
requirement list the algorithm computes: installing the CUDA build needs that index.
"""

from __future__ import annotations

import json
import os
import subprocess

import processing
import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsSettings
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
    assert [o.name() for o in alg.outputDefinitions()] == ["PYTHON", "ONNX_PROVIDERS"]


def test_a_base_python_without_extension_passes_the_parameter_check(terramind_provider, tmp_path):
    """qgis_process and the dialog check every value they pass (the default too); python3 has no extension."""
    from qgis.core import QgsApplication, QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("")
    ok, message = alg.checkParameterValues({"FOLDER": str(tmp_path / "env"), "BASE_PYTHON": str(python)},
                                           QgsProcessingContext())  # fmt: skip
    assert (ok, message) == (True, "")
    assert alg.parameterDefinition("BASE_PYTHON").checkValueIsAcceptable(alg.parameterDefinition("BASE_PYTHON").defaultValue())


class EventFeedback(QgsProcessingFeedback):
    """Records messages and progress in the order they come."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, object]] = []

    def pushInfo(self, info):  # noqa: N802
        self.events.append(("info", info))
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802
        self.events.append(("warning", warning))
        super().pushWarning(warning)

    def setProgress(self, progress):  # noqa: N802
        self.events.append(("progress", progress))
        super().setProgress(progress)

    def infos(self) -> list[str]:
        return [v for k, v in self.events if k == "info"]

    def progress(self) -> list[float]:
        return [v for k, v in self.events if k == "progress"]


def _between(events, first: str, last: str) -> list[tuple[str, object]]:
    """The events after the last info starting with ``first`` and before the next one starting with ``last``."""
    start = max(i for i, (k, v) in enumerate(events) if k == "info" and v.startswith(first))
    end = next(i for i, (k, v) in enumerate(events) if i > start and k == "info" and v.startswith(last))
    return events[start:end]


@pytest.mark.slow  # a real venv with pip
def test_creates_a_working_environment_and_selects_it(terramind_provider, clean_setting, tmp_path, example,
                                                      recording_feedback):
    feedback = EventFeedback()
    folder = tmp_path / "env"
    result = processing.run(ALG, {"FOLDER": str(folder), "SAVE_SETTING": True}, feedback=feedback)
    python = result["PYTHON"]
    assert python == str(folder / "bin" / "python") and os.access(python, os.X_OK)
    assert QgsSettings().value(KEY) == python
    infos = feedback.infos()
    assert any("The environment works" in m for m in infos)
    # pip's steps, one message each, and a bar that moves through every phase
    assert [m.split(":")[0] for m in infos if m.startswith("Step ")] == [f"Step {i}/4" for i in range(1, 5)]
    assert sum(m.startswith("pip: collecting ") or m.startswith("pip: using ") for m in infos) >= 20
    assert any(m.startswith("pip: downloading ") or m.startswith("pip: using ") for m in infos)
    progress = feedback.progress()
    assert progress == sorted(progress) and progress[-1] == 100
    assert len(set(progress)) >= 30, "the progress bar hardly moved"
    install = _between(feedback.events, "pip: installing ", "pip: installed ")
    assert len({v for k, v in install if k == "progress"}) >= 3, "no progress while pip installs"
    # the providers ONNX Runtime offers, as the new environment itself reports them
    probe = "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"
    actual = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert "CPUExecutionProvider" in actual
    assert result["ONNX_PROVIDERS"] == ",".join(actual)
    (line,) = [m for m in infos if "execution providers" in m]
    assert line.startswith("ONNX Runtime ") and line.endswith("execution providers: " + ", ".join(actual))
    assert any(m.startswith("PyTorch 2.13.0") and "CPU build" in m for m in infos)
    # The new environment runs the models: the plugin finds it through the setting alone.
    feedback = recording_feedback()
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


@pytest.mark.parametrize(
    ("index", "build", "onnxruntime"),
    [
        ("https://download.pytorch.org/whl/cu124", "cuda", "onnxruntime-gpu>=1.18"),
        ("https://download.pytorch.org/whl/nightly/cu128/", "cuda", "onnxruntime-gpu>=1.18"),
        ("https://download.pytorch.org/whl/cpu", "cpu", "onnxruntime>=1.18"),
        ("https://download.pytorch.org/whl/rocm6.2", "rocm", "onnxruntime>=1.18"),
        ("", "default", "onnxruntime>=1.18"),
    ],
)
def test_a_cuda_torch_index_installs_onnxruntime_gpu(terramind_provider, index, build, onnxruntime):
    from terramind_qgis.processing_algorithms.environment import plugin_dir
    from terramind_qgis.processing_algorithms.set_up_environment import requirement_lines, torch_build

    requirements = os.path.join(plugin_dir(), "requirements.txt")
    lines = requirement_lines(requirements, index)
    assert torch_build(index) == build
    assert [line for line in lines if line.startswith("onnxruntime")] == [onnxruntime]
    # every other requirement is the plugin's, unchanged
    assert "torch==2.13.0" in lines and "rasterio>=1.4" in lines and "numpy<2" in lines
    assert not any(line.startswith("#") for line in lines)


def test_nested_requirement_files_keep_working_from_the_environment_folder(terramind_provider, tmp_path):
    from terramind_qgis.processing_algorithms.set_up_environment import requirement_lines

    (tmp_path / "base.txt").write_text("onnxruntime==1.20  # pinned\n")
    (tmp_path / "requirements.txt").write_text("-r base.txt\n-c pins.txt\nPyYAML>=6\n")
    assert requirement_lines(str(tmp_path / "requirements.txt"), "https://example.org/whl/cu121") == [
        f"-r {tmp_path / 'base.txt'}", f"-c {tmp_path / 'pins.txt'}", "PyYAML>=6"]
    assert requirement_lines(str(tmp_path / "base.txt"), "https://example.org/whl/cu121") == ["onnxruntime-gpu==1.20"]


def test_a_torch_index_that_is_no_url_names_the_parameter(terramind_provider, clean_setting, tmp_path):
    with pytest.raises(QgsProcessingException, match="TORCH_INDEX_URL: 'cu124' is not a URL"):
        processing.run(ALG, {"FOLDER": str(tmp_path / "env"), "TORCH_INDEX_URL": "cu124"})
    assert not (tmp_path / "env").exists()
