"""QGIS desktop under Xvfb: the plugin loads, our dialogs open, results are styled; screenshots.

Runs tools/gui_shot.py inside a real QGIS (throwaway profile with the plugin enabled) and checks
what it reports and the PNGs it saves to gui-shots/ (kept for people to look at).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import pytest
from qgis.PyQt.QtGui import QImage

from tm_helpers import CATALOGUE, REPO

SHOTS = REPO / "gui-shots"
pytestmark = [
    pytest.mark.gui,
]


def _distinct_colours(path) -> int:
    image = QImage(str(path))
    step_x, step_y = max(1, image.width() // 80), max(1, image.height() // 80)
    return len({image.pixel(x, y) for x in range(0, image.width(), step_x) for y in range(0, image.height(), step_y)})


def test_desktop_dialogs_and_styled_layers(tmp_path, worker_python):
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    profile = tmp_path / "xdg" / "QGIS" / "QGIS3" / "profiles" / "default" / "QGIS"
    profile.mkdir(parents=True)
    (profile / "QGIS3.ini").write_text("[PythonPlugins]\nterramind_qgis=true\n")
    # pytest-qgis points QGIS_CUSTOM_CONFIG_PATH/QGIS_OPTIONS_PATH at its own profile: drop every QGIS_ variable
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM" and not k.startswith(("QGIS_", "TERRAMIND_"))}
    env.update(
        XDG_DATA_HOME=str(tmp_path / "xdg"), QGIS_PLUGINPATH=str(REPO / ".pluginpath"),
        PYTHONPATH=os.pathsep.join(glob.glob(str(REPO / ".venv" / "lib" / "python3*" / "site-packages"))),
        TERRAMIND_PYTHON=worker_python, TERRAMIND_CATALOGUE_PATH=str(CATALOGUE),
        TERRAMIND_GUI_SHOTS=str(SHOTS), TERRAMIND_GUI_REPO=str(REPO),
    )
    done = subprocess.run(
        ["timeout", "300", "xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
         "--code", str(REPO / "tools" / "gui_shot.py")],
        env=env, capture_output=True, text=True, timeout=330,
    )
    assert (SHOTS / "report.json").exists(), f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads((SHOTS / "report.json").read_text())
    assert report["errors"] == []
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terramind_qgis" in report["active_plugins"]
    assert {"terramind:generatemodalities", "terramind:reconstructwithtokenizer"} <= set(report["provider"])
    assert "Generate modalities" in report["dialogs"]["generate"]  # 3.40: "Generation - Generate modalities"
    assert "Reconstruct with tokenizer" in report["dialogs"]["reconstruct"]
    assert "Batch Processing" in report["dialogs"]["batch"] and "Reconstruct with tokenizer" in report["dialogs"]["batch"]
    assert report["layers"] == {"S2L2A reconstruction (S2L2A) UNTRAINED": "multibandcolor",
                                "LULC reconstruction (LULC) UNTRAINED": "paletted"}
    for name in ("main_window.png", "generate_dialog.png", "reconstruct_dialog.png", "batch_dialog.png", "screen.png"):
        path = SHOTS / name
        assert path.exists() and path.stat().st_size > 10_000, name
        image = QImage(str(path))
        assert image.width() >= 600 and image.height() >= 400, name
        assert _distinct_colours(path) > 20, f"{name} looks blank"
