"""Desktop check: QGIS with the plugin, our algorithm and batch dialogs, styled results; screenshots.

Run inside QGIS (the test tests/qgis/test_gui.py does this under Xvfb with a throwaway profile)::

    TERRAMIND_GUI_SHOTS=gui-shots TERRAMIND_GUI_REPO=$PWD \
        xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --noversioncheck --code tools/gui_shot.py

It writes PNGs and ``report.json`` (dialog window titles, active plugins, loaded layers and their
renderers, errors) to ``$TERRAMIND_GUI_SHOTS``, then quits QGIS the way that exits cleanly on 3.22:
clear the project, mark it clean, trigger File > Exit.

With ``TERRAMIND_GUI_MODE=first_run`` (a profile where no worker environment is configured, e.g. the
plugin installed from the ZIP) it records the message bar instead, saves ``first_run.png`` (as QGIS
starts) and ``first_run_prompt.png`` (QGIS's own messages closed), clicks the TerraMind prompt's button
and saves the dialog it opens (``first_run_setup_dialog.png``); the report is ``first_run.json``.
"""

import json
import os
import shutil
import tempfile
import traceback

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDialog, QDockWidget, QLineEdit, QPushButton
from qgis.utils import active_plugins, iface

REPO = os.environ.get("TERRAMIND_GUI_REPO", os.getcwd())
SHOTS = os.path.abspath(os.environ.get("TERRAMIND_GUI_SHOTS", os.path.join(REPO, "gui-shots")))
EXAMPLES = os.path.join(REPO, "tests", "data", "examples")
SCENE = "282D_485L_3_3"
MODE = os.environ.get("TERRAMIND_GUI_MODE", "algorithms")
REPORT = "first_run.json" if MODE == "first_run" else "report.json"
PROMPT = "TerraMindFirstRun"  # plugin/first_run.py's message-bar item
report = {"active_plugins": [], "dialogs": {}, "layers": {}, "shots": [], "errors": []}
keep = []  # dialogs must stay referenced while shown


def _save(widget, name):
    path = os.path.join(SHOTS, name)
    widget.grab().save(path)
    report["shots"].append(path)


def _screen(name):
    path = os.path.join(SHOTS, name)
    QgsApplication.primaryScreen().grabWindow(0).save(path)
    report["shots"].append(path)


def _guard(step):
    def run():
        try:
            step()
        except Exception:  # noqa: BLE001 - recorded in the report, the test fails on it
            report["errors"].append(traceback.format_exc())
            finish()

    return run


def start():
    os.makedirs(SHOTS, exist_ok=True)
    report["active_plugins"] = sorted(active_plugins)
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("terramind")
    report["provider"] = [a.id() for a in provider.algorithms()] if provider else []
    work = tempfile.mkdtemp(prefix="terramind-gui-")
    for modality in ("S2L2A", "LULC"):
        shutil.copy(os.path.join(EXAMPLES, modality, f"{SCENE}.tif"), os.path.join(work, f"{modality}.tif"))
    import processing

    common = {"UNTRAINED": True, "TIMESTEPS": 2}
    processing.runAndLoadResults("terramind:reconstructwithtokenizer", {
        "INPUT": os.path.join(work, "S2L2A.tif"), "MODALITY": "S2L2A", "MODEL": "test_tokenizer_s2l2a",
        "OUTPUT": "TEMPORARY_OUTPUT", **common})
    processing.runAndLoadResults("terramind:reconstructwithtokenizer", {
        "INPUT": os.path.join(work, "LULC.tif"), "MODALITY": "LULC", "MODEL": "test_tokenizer_lulc",
        "OUTPUT": "TEMPORARY_OUTPUT", **common})
    report["layers"] = {layer.name(): layer.renderer().type() for layer in QgsProject.instance().mapLayers().values()}
    iface.mainWindow().showMaximized()  # QGIS 3.40 starts with a small window under Xvfb
    iface.mainWindow().resize(1600, 1000)
    toolbox = iface.mainWindow().findChild(QDockWidget, "ProcessingToolbox")
    toolbox.show()
    toolbox.findChild(QLineEdit).setText("terramind")
    iface.mapCanvas().zoomToFullExtent()
    QTimer.singleShot(2500, _guard(main_window))


def _show(dialog, name, size, next_step):
    """Show ``dialog`` (kept referenced), record its title as ``name``, then run ``next_step``."""
    dialog.resize(*size)
    dialog.show()
    keep.append(dialog)
    report["dialogs"][name] = dialog.windowTitle()
    QTimer.singleShot(1500, _guard(next_step))


def main_window():
    _save(iface.mainWindow(), "main_window.png")
    import processing

    _show(processing.createAlgorithmDialog("terramind:generatemodalities", {}), "generate", (900, 900), generate_dialog)


def generate_dialog():
    _save(keep[-1], "generate_dialog.png")
    keep[-1].close()
    import processing

    dialog = processing.createAlgorithmDialog("terramind:reconstructwithtokenizer", {})
    _show(dialog, "reconstruct", (900, 900), reconstruct_dialog)


def reconstruct_dialog():
    _save(keep[-1], "reconstruct_dialog.png")
    keep[-1].close()
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("terramind:reconstructwithtokenizer")
    _show(BatchAlgorithmDialog(algorithm, parent=iface.mainWindow()), "batch", (1400, 600), batch_dialog)


def batch_dialog():
    _save(keep[-1], "batch_dialog.png")
    _screen("screen.png")
    keep[-1].close()
    finish()


def first_run():
    """The desktop as a new user sees it: the plugin's prompt in the message bar (QGIS's own messages too)."""
    os.makedirs(SHOTS, exist_ok=True)
    report["active_plugins"] = sorted(active_plugins)
    iface.mainWindow().showMaximized()
    iface.mainWindow().resize(1600, 1000)
    QTimer.singleShot(2500, _guard(first_run_prompt))


def _bar_items():
    return [{"object": item.objectName(), "title": item.title(), "text": item.text(),
             "buttons": [b.text() for b in item.findChildren(QPushButton) if b.text()]}
            for item in iface.messageBar().items()]  # fmt: skip


def first_run_prompt():
    """first_run.png as QGIS starts; QGIS's own messages (offline: 'Open Sans font installation failed',
    pushed after ours, so on top) are then closed, and first_run_prompt.png shows the TerraMind prompt."""
    report["message_bar"] = _bar_items()
    _save(iface.mainWindow(), "first_run.png")
    bar = iface.messageBar()
    report["closed_before_the_prompt_shot"] = []
    for item in bar.items():
        if item.objectName() != PROMPT:
            report["closed_before_the_prompt_shot"].append(item.text())
            bar.popWidget(item)
    QTimer.singleShot(1500, _guard(first_run_button))


def first_run_button():
    _save(iface.mainWindow(), "first_run_prompt.png")
    (item,) = [i for i in iface.messageBar().items() if i.objectName() == PROMPT]
    (button,) = [b for b in item.findChildren(QPushButton) if b.text().startswith("Set up")]
    QTimer.singleShot(2500, _guard(setup_dialog))
    button.click()  # opens the algorithm dialog, modal: click() returns when the dialog closes


def _setup_dialog():
    """The dialog the prompt's button opened: the modal one, or a shown top-level dialog of the algorithm."""
    modal = QApplication.activeModalWidget()
    if modal is not None:
        return modal
    shown = [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]
    return next((w for w in shown if "Set up the Python environment" in w.windowTitle()), None)


def setup_dialog(tries=20):
    dialog = _setup_dialog()
    if dialog is None and tries > 0:  # the dialog may still be being built
        QTimer.singleShot(500, _guard(lambda: setup_dialog(tries - 1)))
        return
    report["dialogs"]["setup"] = dialog.windowTitle() if dialog is not None else None
    report["message_bar_after_click"] = _bar_items()
    _save(dialog, "first_run_setup_dialog.png")
    QTimer.singleShot(500, _guard(finish))
    dialog.reject()


def finish():
    with open(os.path.join(SHOTS, REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)
    iface.actionExit().trigger()


QTimer.singleShot(2000, _guard(first_run if MODE == "first_run" else start))
