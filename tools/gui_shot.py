"""Desktop check: QGIS with the plugin, our algorithm and batch dialogs, styled results; screenshots.

Run inside QGIS (the test tests/qgis/test_gui.py does this under Xvfb with a throwaway profile)::

    TERRAMIND_GUI_SHOTS=gui-shots TERRAMIND_GUI_REPO=$PWD \
        xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --noversioncheck --code tools/gui_shot.py

It writes PNGs and ``report.json`` (dialog window titles, active plugins, loaded layers and their
renderers, errors) to ``$TERRAMIND_GUI_SHOTS``, then quits QGIS the way that exits cleanly on 3.22:
clear the project, mark it clean, trigger File > Exit.
"""

import json
import os
import shutil
import tempfile
import traceback

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QDockWidget, QLineEdit
from qgis.utils import active_plugins, iface

REPO = os.environ.get("TERRAMIND_GUI_REPO", os.getcwd())
SHOTS = os.path.abspath(os.environ.get("TERRAMIND_GUI_SHOTS", os.path.join(REPO, "gui-shots")))
EXAMPLES = os.path.join(REPO, "tests", "data", "examples")
SCENE = "282D_485L_3_3"
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
    report["layers"] = {l.name(): l.renderer().type() for l in QgsProject.instance().mapLayers().values()}
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


def finish():
    with open(os.path.join(SHOTS, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)
    iface.actionExit().trigger()


QTimer.singleShot(2000, _guard(start))
