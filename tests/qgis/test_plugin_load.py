"""The plugin loads in QGIS (classFactory / initProcessing / initGui / unload), also without its
worker environment, and an algorithm then fails with the one how-to message.
"""

from __future__ import annotations

import subprocess
import sys
import time

import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingException
from qgis.PyQt.QtCore import QCoreApplication
from tm_helpers import REPO


@pytest.fixture
def without_session_provider(qgis_processing, terramind_env):
    """No ``terramind`` provider while the plugin registers its own (other tests' fixture re-adds one)."""
    registry = QgsApplication.processingRegistry()
    for _ in range(2):
        existing = registry.providerById("terramind")
        if existing is not None:
            registry.removeProvider(existing)
    yield
    leftover = registry.providerById("terramind")
    if leftover is not None:
        registry.removeProvider(leftover)


def test_plugin_registers_and_removes_the_provider(qgis_iface, without_session_provider):
    import terramind_qgis

    registry = QgsApplication.processingRegistry()
    plugin = terramind_qgis.classFactory(qgis_iface)
    plugin.initProcessing()  # what qgis_process calls
    plugin.initGui()  # what the desktop calls (after initProcessing): must not register twice
    provider = registry.providerById("terramind")
    assert provider is not None and provider is plugin.provider
    assert {"terramind:reconstructwithtokenizer", "terramind:generatemodalities"} <= {a.id() for a in provider.algorithms()}
    assert [a.text() for a in plugin.actions] == ["Generate modalities…", "Reconstruct with tokenizer…",
                                                "Segment with fine-tuned model…", "Map water (zero-shot)…",
                                                "Set up the Python environment…", "Settings…"]
    plugin.unload()
    assert registry.providerById("terramind") is None and plugin.actions == []


def test_plugin_without_worker_environment_loads_and_explains(qgis_iface, without_session_provider, example,
                                                              tmp_path, monkeypatch):
    monkeypatch.setenv("TERRAMIND_PYTHON", str(tmp_path / "no-such-env" / "bin" / "python"))
    import terramind_qgis

    plugin = terramind_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        logged = []
        QgsApplication.messageLog().messageReceived.connect(lambda msg, tag, level: logged.append((tag, msg)))
        with pytest.raises(QgsProcessingException) as info:
            processing.run("terramind:reconstructwithtokenizer", {
                "INPUT": example("DEM"), "MODALITY": "DEM", "OUTPUT": str(tmp_path / "rec.tif"), "UNTRAINED": True})
        message = str(info.value)
        assert message.startswith(f"The TerraMind worker interpreter '{tmp_path}/no-such-env/bin/python'")
        assert "README, section 'The worker environment'" in message
        assert "Plugins > TerraMind > Settings or set the environment variable TERRAMIND_PYTHON" in message
        assert message.count("\n") == 0  # one message, no traceback
        assert [msg for tag, msg in logged if tag == "TerraMind"] == [message]
    finally:
        plugin.unload()


def test_qgis_side_imports_without_torch(worker_python):
    """classFactory's imports and the whole QGIS side work in a Python where torch cannot be imported."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['rasterio'] = None; sys.modules['onnxruntime'] = None\n"
        f"sys.path.insert(0, {str(REPO / '.pluginpath')!r})\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "import os; sys.path.append(os.path.join(QgsApplication.pkgDataPath(), 'python', 'plugins'))\n"
        "import terramind_qgis\n"
        "from terramind_qgis.plugin import plugin, settings_dialog\n"
        "from terramind_qgis.processing_algorithms import provider\n"
        "print('ok', [m for m in ('torch', 'rasterio') if sys.modules.get(m) is not None])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok []")


def test_settings_dialog_saves_the_interpreter_and_checks_it(qgis_app, terramind_env, worker_python, tmp_path):
    from qgis.core import QgsSettings

    from terramind_qgis.plugin.settings_dialog import SettingsDialog, describe
    from terramind_qgis.processing_algorithms import environment

    report = describe(worker_python)  # runs the worker's describe task
    assert report.startswith(f"Interpreter: {worker_python}")
    assert '"torch": "2.' in report and '"auto_device": "cpu"' in report or '"auto_device": "cuda' in report
    missing = describe(str(tmp_path / "nope"))
    assert missing.startswith(f"'{tmp_path / 'nope'}' does not exist.") and "TERRAMIND_PYTHON" in missing
    saved = QgsSettings().value(environment.SETTINGS_KEY, "")
    try:
        dialog = SettingsDialog()
        dialog.path.setFilePath(worker_python)
        dialog.check()  # in a background task: the dialog stays responsive meanwhile
        assert not dialog.check_button.isEnabled() and dialog.report.toPlainText().startswith("Checking")
        deadline = time.monotonic() + 120
        while dialog.task is not None and time.monotonic() < deadline:
            QCoreApplication.processEvents()
            time.sleep(0.05)
        assert dialog.check_button.isEnabled()
        assert dialog.report.toPlainText().startswith(f"Interpreter: {worker_python}")
        dialog.accept()
        assert QgsSettings().value(environment.SETTINGS_KEY) == worker_python
    finally:
        QgsSettings().setValue(environment.SETTINGS_KEY, saved)


def test_interpreter_comes_from_env_then_setting_then_checkout(qgis_app, monkeypatch, tmp_path, worker_python):
    from qgis.core import QgsSettings

    from terramind_qgis.processing_algorithms import environment

    saved = QgsSettings().value(environment.SETTINGS_KEY, "")
    try:
        monkeypatch.delenv("TERRAMIND_PYTHON", raising=False)
        QgsSettings().setValue(environment.SETTINGS_KEY, worker_python)
        assert environment.find_interpreter() == environment.Interpreter(worker_python, "plugin setting terramind/python")
        monkeypatch.setenv("TERRAMIND_PYTHON", "/usr/bin/python3")
        assert environment.find_interpreter().path == "/usr/bin/python3"  # the variable wins
        monkeypatch.delenv("TERRAMIND_PYTHON")
        QgsSettings().setValue(environment.SETTINGS_KEY, "")
        found = environment.find_interpreter()  # a checkout: the plugin folder's .venv
        assert found.source == "the plugin folder's .venv" and found.path.endswith(".venv/bin/python")
    finally:
        QgsSettings().setValue(environment.SETTINGS_KEY, saved)
