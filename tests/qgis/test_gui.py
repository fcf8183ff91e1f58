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
from zip_install import build_zip, clean_environment, fresh_profile, install_from_zip

SHOTS = REPO / "gui-shots"
QGIS_DESKTOP = ["timeout", "300", "xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
                "--code", str(REPO / "tools" / "gui_shot.py")]  # fmt: skip
pytestmark = [
    pytest.mark.gui,
    pytest.mark.slow,  # QGIS desktop under Xvfb
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
    done = subprocess.run(QGIS_DESKTOP, env=env, capture_output=True, text=True, timeout=330)
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
    _check_shots("main_window.png", "generate_dialog.png", "reconstruct_dialog.png", "batch_dialog.png", "screen.png")


def _check_shots(*names: str) -> None:
    for name in names:
        path = SHOTS / name
        assert path.exists() and path.stat().st_size > 10_000, name
        image = QImage(str(path))
        assert image.width() >= 600 and image.height() >= 400, name
        assert _distinct_colours(path) > 20, f"{name} looks blank"


def test_first_start_without_an_environment_offers_the_set_up(tmp_path):
    profile = fresh_profile(tmp_path)
    install_from_zip(build_zip(tmp_path / "dist"), profile)  # no .venv in this plugin folder, no setting
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / "first_run.json").unlink(missing_ok=True)
    env = clean_environment(XDG_DATA_HOME=str(profile.xdg_data_home), TERRAMIND_GUI_SHOTS=str(SHOTS),
                            TERRAMIND_GUI_REPO=str(REPO), TERRAMIND_GUI_MODE="first_run")  # fmt: skip
    env.pop("QT_QPA_PLATFORM", None)
    done = subprocess.run(QGIS_DESKTOP, env=env, capture_output=True, text=True, timeout=330)
    assert (SHOTS / "first_run.json").exists(), f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads((SHOTS / "first_run.json").read_text())
    assert report["errors"] == []
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terramind_qgis" in report["active_plugins"]
    prompts = [item for item in report["message_bar"] if item["object"] == "TerraMindFirstRun"]
    assert len(prompts) == 1, report["message_bar"]
    assert prompts[0]["title"] == "TerraMind" and "Python environment" in prompts[0]["text"]
    assert prompts[0]["buttons"] == ["Set up the Python environment…"]
    assert "Set up the Python environment" in report["dialogs"]["setup"]  # 3.40: "Environment - Set up ..."
    assert not [item for item in report["message_bar_after_click"] if item["object"] == "TerraMindFirstRun"]
    _check_shots("first_run.png", "first_run_prompt.png", "first_run_setup_dialog.png")
