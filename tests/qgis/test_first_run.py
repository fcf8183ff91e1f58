"""The first-run prompt (plugin/first_run.py) in QGIS's message bar (pytest-qgis's iface has a real
QgsMessageBar): shown once when the worker interpreter cannot be found, not at all when it can, gone
after unload; at start-up (main window not shown yet) only once QGIS reports its initialisation
completed. The tests show the main window first, as when the plugin is enabled in a running QGIS.
The desktop test (test_gui.py) shows it in a real profile with the plugin installed from the ZIP and
clicks its button, which opens the set-up dialog.
"""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtWidgets import QPushButton

KEY = "terramind/python"


@pytest.fixture
def plugin_factory(qgis_iface, qgis_processing, terramind_env):
    """Plugins made like QGIS makes them; each one unloaded afterwards, the message bar cleared."""
    import terramind_qgis

    registry = QgsApplication.processingRegistry()
    session = registry.providerById("terramind")
    if session is not None:  # the session fixture's provider: the plugin registers its own
        registry.removeProvider(session)
    made = []

    def make():
        plugin = terramind_qgis.classFactory(qgis_iface)
        made.append(plugin)
        return plugin

    qgis_iface.mainWindow().show()  # QGIS is up: the plugin is enabled in a running QGIS
    yield make
    for plugin in made:
        plugin.unload()
    qgis_iface.messageBar().clearWidgets()
    qgis_iface.mainWindow().hide()


@pytest.fixture
def no_setting():
    saved = QgsSettings().value(KEY, None)
    QgsSettings().remove(KEY)
    yield
    if saved is not None:
        QgsSettings().setValue(KEY, saved)


def _prompts(iface):
    from terramind_qgis.plugin.first_run import OBJECT_NAME

    return [item for item in iface.messageBar().items() if item.objectName() == OBJECT_NAME]


def test_one_prompt_with_a_set_up_button_when_no_interpreter_is_found(plugin_factory, qgis_iface, no_setting,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("TERRAMIND_PYTHON", str(tmp_path / "no-env" / "bin" / "python"))
    plugin = plugin_factory()
    plugin.initGui()
    (item,) = _prompts(qgis_iface)
    assert item.title() == "TerraMind" and "Python environment" in item.text()
    assert [b.text() for b in item.findChildren(QPushButton) if b.text()] == ["Set up the Python environment…"]
    assert plugin.first_run.show() is False  # once per session
    assert len(_prompts(qgis_iface)) == 1


def test_the_button_opens_the_set_up_algorithm_and_the_prompt_goes(plugin_factory, qgis_iface, no_setting,
                                                                   monkeypatch, tmp_path):
    import processing

    opened = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg_id, params: opened.append((alg_id, params)))
    monkeypatch.setenv("TERRAMIND_PYTHON", str(tmp_path / "no-env" / "bin" / "python"))
    plugin = plugin_factory()
    plugin.initGui()
    (item,) = _prompts(qgis_iface)
    (button,) = [b for b in item.findChildren(QPushButton) if b.text() == "Set up the Python environment…"]
    button.click()
    assert opened == [("terramind:setupenvironment", {})]
    assert QgsApplication.processingRegistry().algorithmById("terramind:setupenvironment") is not None
    assert _prompts(qgis_iface) == []


def test_no_prompt_when_an_interpreter_is_configured(plugin_factory, qgis_iface, worker_python, monkeypatch):
    monkeypatch.setenv("TERRAMIND_PYTHON", worker_python)
    plugin = plugin_factory()
    plugin.initGui()
    assert _prompts(qgis_iface) == []


def test_unload_removes_the_prompt(plugin_factory, qgis_iface, no_setting, monkeypatch, tmp_path):
    monkeypatch.setenv("TERRAMIND_PYTHON", str(tmp_path / "no-env" / "bin" / "python"))
    plugin = plugin_factory()
    plugin.initGui()
    assert len(_prompts(qgis_iface)) == 1
    plugin.unload()
    assert _prompts(qgis_iface) == []


def test_at_start_up_the_prompt_waits_for_qgis_to_complete_its_initialisation(plugin_factory, qgis_iface, no_setting,
                                                                              monkeypatch, tmp_path):
    monkeypatch.setenv("TERRAMIND_PYTHON", str(tmp_path / "no-env" / "bin" / "python"))
    qgis_iface.mainWindow().hide()  # QGIS is still starting
    completed = qgis_iface.initializationCompleted  # pytest-qgis's iface: a recording stand-in for the signal
    completed.connect.reset_mock()
    plugin = plugin_factory()
    plugin.initGui()
    assert _prompts(qgis_iface) == []
    (call,) = completed.connect.call_args_list
    call.args[0]()  # QGIS emits initializationCompleted
    assert len(_prompts(qgis_iface)) == 1
