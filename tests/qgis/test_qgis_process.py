"""Our algorithms from the shell: ``qgis_process`` with the plugin enabled in a throwaway profile."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import pytest
from tm_helpers import CATALOGUE, REPO, raster_facts

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"  # the wrapper breaks on Debian
@pytest.fixture
def cli_env(tmp_path, worker_python):
    site_packages = glob.glob(str(REPO / ".venv" / "lib" / "python3*" / "site-packages"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QGIS_", "TERRAMIND_"))}
    env.update(
        XDG_DATA_HOME=str(tmp_path / "xdg"),  # a fresh QGIS profile
        QGIS_PLUGINPATH=str(REPO / ".pluginpath"),
        PYTHONPATH=os.pathsep.join(site_packages),
        QT_QPA_PLATFORM="offscreen",
        TERRAMIND_PYTHON=worker_python,
        TERRAMIND_CATALOGUE_PATH=str(CATALOGUE),
    )
    enable = subprocess.run([QGIS_PROCESS, "plugins", "enable", "terramind_qgis"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    return env


def _qgis_process(env, *args, timeout=300):
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_algorithms_are_listed(cli_env):
    listing = _qgis_process(cli_env, "list")
    assert listing.returncode == 0, listing.stderr
    assert "terramind:reconstructwithtokenizer" in listing.stdout and "terramind:generatemodalities" in listing.stdout


def test_reconstruction_runs_from_the_shell(cli_env, example, tmp_path):
    source, out = example("DEM"), tmp_path / "cli_rec.tif"
    done = _qgis_process(cli_env, "--json", "run", "terramind:reconstructwithtokenizer", "--",
                         f"INPUT={source}", "MODALITY=DEM", "MODEL=test_tokenizer_dem", "UNTRAINED=true", "TIMESTEPS=2",
                         f"OUTPUT={out}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["algorithm_details"]["id"] == "terramind:reconstructwithtokenizer"
    assert report["results"]["OUTPUT"] == str(out)
    assert report["results"]["MAE"]["Elevation"] > 0
    facts = raster_facts(out)
    assert (facts["size"], facts["epsg"], facts["descriptions"]) == ((224, 224), "32722", ["Elevation"])
    assert (tmp_path / "cli_rec.qml").exists()


def test_missing_environment_fails_with_the_how_to(cli_env, example, tmp_path):
    env = dict(cli_env, TERRAMIND_PYTHON=str(tmp_path / "missing" / "python"))
    done = _qgis_process(env, "run", "terramind:reconstructwithtokenizer", "--", f"INPUT={example('DEM')}",
                         "MODALITY=DEM", "UNTRAINED=true", f"OUTPUT={tmp_path / 'never.tif'}")
    assert done.returncode != 0
    assert "does not exist or is not executable" in done.stdout + done.stderr
    assert "TERRAMIND_PYTHON" in done.stdout + done.stderr
    assert not (tmp_path / "never.tif").exists()


def test_worker_error_is_one_error_line_without_traceback(cli_env, tmp_path):
    """An offline cache miss inside the worker: non-zero exit, one ``ERROR:`` line naming the file, no traceback."""
    env = dict(cli_env, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    folder = tmp_path / "offline"
    done = _qgis_process(env, "run", "terramind:downloadmodels", "--", "MODELS=terramind_v1_tiny", "TOKENIZERS=DEM",
                         f"FOLDER={folder}")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, done.stderr
    assert "cannot get weights file 'TerraMind_v1_tiny.pt'" in errors[0] and "HF_HUB_OFFLINE=1" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not folder.exists() or not any(folder.iterdir())  # nothing half-downloaded left behind


def test_many_scenes_from_the_shell(cli_env, tmp_path):
    """The fleet from qgis_process: two scenes on local Dask workers, the manifest and the counts in the results."""
    from test_run_on_many_scenes import _scenes, _template

    done = _qgis_process(cli_env, "--json", "run", "terramind:runonmanyscenes", "--", f"TEMPLATE={_template(tmp_path)}",
                         f"SCENE_PATTERN={_scenes(tmp_path / 'scenes')}", f"OUTPUT_FOLDER={tmp_path / 'out'}", "WORKERS=1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert (results["SUCCEEDED"], results["FAILED"]) == (2, 0)
    assert os.path.isfile(results["MANIFEST"]) and len(list((tmp_path / "out").glob("*/rec.tif"))) == 2


def test_embeddings_then_few_shot_classification_from_the_shell(cli_env, example, tmp_path):
    """Extract embeddings, then classify them from labelled points in a GeoJSON file (UTM, named CRS)."""
    source = example("S2L2A")
    emb = tmp_path / "emb.tif"
    done = _qgis_process(cli_env, "run", "terramind:extractembeddings", "--", f"INPUT_S2L2A={source}",
                         "MODEL=test_terramind_tiny", "UNTRAINED=true", "DEVICE=cpu", "TILE_SIZE=128", f"OUTPUT={emb}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    x0, _, _, y0, _, _ = raster_facts(source)["geotransform"]
    points = [(20, 20, "a"), (200, 200, "b"), (30, 150, "a"), (180, 40, "b"), (120, 120, "a"), (150, 60, "b")]
    labels = tmp_path / "labels.geojson"
    labels.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32722"}},
        "features": [{"type": "Feature", "properties": {"kind": k},
                      "geometry": {"type": "Point", "coordinates": [x0 + 10 * px, y0 - 10 * py]}} for px, py, k in points]}))
    done = _qgis_process(cli_env, "--json", "run", "terramind:classifyfewshot", "--", f"EMBEDDINGS={emb}",
                         f"LABELS={labels}", "CLASS_FIELD=kind", "FOLDS=3", f"OUTPUT={tmp_path / 'classes.tif'}",
                         f"OUTPUT_CLASSIFIER={tmp_path / 'clf.json'}")  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert 0 <= results["CV_ACCURACY"] <= 1 and json.loads(results["CONFUSION_MATRIX"])["classes"] == ["a", "b"]
    assert raster_facts(tmp_path / "classes.tif")["size"] == (14, 14) and (tmp_path / "clf.json").exists()
    one = _qgis_process(cli_env, "run", "terramind:classifyfewshot", "--", f"EMBEDDINGS={emb}", f"LABELS={labels}",
                        "CLASS_FIELD=kind", "FOLDS=9", f"OUTPUT={tmp_path / 'never.tif'}")  # fmt: skip
    assert one.returncode != 0 and "FOLDS: is 9, but there are only 6 labelled features" in one.stdout + one.stderr
    assert "Traceback" not in one.stdout + one.stderr and not (tmp_path / "never.tif").exists()
