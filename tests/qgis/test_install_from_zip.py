"""The ZIP of ``make package`` works as users install it: unpacked into a fresh QGIS profile as *Install from
ZIP* does, enabled, and an algorithm run through ``qgis_process`` from that profile alone.

Nothing else can provide the plugin here: no QGIS_PLUGINPATH, no PYTHONPATH (QGIS's side needs nothing
from the worker's environment), and the worker process imports ``terramind_qgis`` from the profile's
plugin folder (its PYTHONPATH is that folder's parent), so the run proves the ZIP holds the worker too.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from tm_helpers import CATALOGUE, raster_facts
from zip_install import build_zip, clean_environment, fresh_profile, install_from_zip

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"  # the wrapper breaks on Debian
pytestmark = [
    pytest.mark.slow,  # builds the ZIP and starts qgis_process from a fresh profile
]


def test_the_zip_installed_into_a_fresh_profile_runs_an_algorithm(tmp_path, worker_python, example):
    zip_path = build_zip(tmp_path / "dist")
    profile = fresh_profile(tmp_path)
    plugin = install_from_zip(zip_path, profile)
    assert (plugin / "metadata.txt").is_file() and (plugin / "models" / "worker" / "__main__.py").is_file()
    assert not (plugin / "tests").exists() and not (plugin / "tools").exists() and not (plugin / ".venv").exists()
    assert "terramind_qgis=true" in profile.ini.read_text()
    env = clean_environment(XDG_DATA_HOME=str(profile.xdg_data_home), QT_QPA_PLATFORM="offscreen",
                            TERRAMIND_PYTHON=worker_python, TERRAMIND_CATALOGUE_PATH=str(CATALOGUE))  # fmt: skip

    listed = subprocess.run([QGIS_PROCESS, "--json", "plugins"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert json.loads(listed.stdout[listed.stdout.index("{"):])["plugins"]["terramind_qgis"]["loaded"] is True

    source, out = example("DEM"), tmp_path / "from_zip.tif"
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "terramind:reconstructwithtokenizer", "--", f"INPUT={source}",
                           "MODALITY=DEM", "MODEL=test_tokenizer_dem", "UNTRAINED=true", "TIMESTEPS=2", f"OUTPUT={out}"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["algorithm_details"]["id"] == "terramind:reconstructwithtokenizer"
    assert report["results"]["OUTPUT"] == str(out)
    facts = raster_facts(out)
    assert facts["size"] == raster_facts(source)["size"] and facts["descriptions"] == ["Elevation"]
    assert (tmp_path / "from_zip.qml").exists()  # the style next to the output
