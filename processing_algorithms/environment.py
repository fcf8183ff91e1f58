"""Which Python runs the worker, and the clean environment it runs in.

The models run in a separate process (docs/architecture.md, "The worker process") started with an interpreter that has the
plugin's dependencies (torch, rasterio, ...). It is chosen, first match wins, by:

1. the environment variable ``TERRAMIND_PYTHON`` (headless use, CI, ``qgis_process``);
2. the plugin setting ``terramind/python`` (Plugins ▸ TerraMind ▸ Settings in QGIS);
3. a ``.venv`` inside the plugin folder (a developer checkout after ``make setup``).

Without one, loading the plugin still works; running an algorithm fails with ``HOW_TO`` (one
message, also written to the QGIS message log by the algorithm boundary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from qgis.core import QgsSettings

from ..models.core.errors import BackendUnavailableError

ENV_VAR = "TERRAMIND_PYTHON"
SETTINGS_KEY = "terramind/python"
REQUIRED_MODULES = ("torch", "numpy", "rasterio", "safetensors", "huggingface_hub")
HOW_TO = (
    "Run the algorithm 'TerraMind > Environment > Set up the Python environment' (qgis_process: "
    "terramind:setupenvironment), or create one yourself (README, section 'The worker environment': "
    "python3 -m venv ~/terramind-env && ~/terramind-env/bin/pip install -r requirements.txt in the plugin folder) "
    f"and choose its interpreter in Plugins > TerraMind > Settings or set the environment variable {ENV_VAR}."
)
# Variables QGIS sets for its own GDAL/PROJ/Python that break the worker's (pip wheels bring their own).
DROPPED_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")

_PROBE = (
    "import importlib.util, json, sys; "
    "print(json.dumps({'python': sys.version.split()[0], "
    "'missing': [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}))"
)


@dataclass(frozen=True)
class Interpreter:
    """The worker interpreter and where its path came from (for messages)."""

    path: str
    source: str


def plugin_dir() -> str:
    """The plugin folder (not resolving symlinks: its parent is what goes on PYTHONPATH)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_name() -> str:
    """The plugin's import name, i.e. its folder name (``terramind_qgis`` in a checkout)."""
    return __name__.split(".")[0]


def venv_python(folder: str) -> str:
    return os.path.join(folder, "Scripts", "python.exe") if sys.platform == "win32" else os.path.join(folder, "bin", "python")


def find_interpreter() -> Interpreter:
    """The configured worker interpreter; ``BackendUnavailableError`` (with ``HOW_TO``) if there is none."""
    candidates = (
        (os.environ.get(ENV_VAR, ""), f"environment variable {ENV_VAR}"),
        (str(QgsSettings().value(SETTINGS_KEY, "") or ""), f"plugin setting {SETTINGS_KEY}"),
    )
    for path, source in candidates:
        if path:
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise BackendUnavailableError(
                    f"The TerraMind worker interpreter '{path}' (from the {source}) does not exist or is not "
                    f"executable. {HOW_TO}"
                )
            return Interpreter(path, source)
    checkout = venv_python(os.path.join(plugin_dir(), ".venv"))
    if os.path.isfile(checkout):
        return Interpreter(checkout, "the plugin folder's .venv")
    raise BackendUnavailableError(f"TerraMind has no Python environment to run its models in. {HOW_TO}")


def worker_environment() -> dict[str, str]:
    """A clean environment for the worker: the plugin's parent folder on PYTHONPATH, QGIS' own paths dropped."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARIABLES}
    env["PYTHONPATH"] = os.path.dirname(plugin_dir())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def describe_backends(interpreter: Interpreter) -> dict:
    """What the interpreter's PyTorch and ONNX Runtime offer, asked in that interpreter by the worker
    package's probe (``models/worker/backends_probe.py`` lists the keys)."""
    try:
        probe = [interpreter.path, "-m", f"{package_name()}.models.worker.backends_probe"]
        done = subprocess.run(probe, env=worker_environment(), capture_output=True, text=True, timeout=300,
                              check=False)  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        raise BackendUnavailableError(
            f"The TerraMind worker interpreter '{interpreter.path}' (from the {interpreter.source}) could not "
            f"report its PyTorch and ONNX Runtime. {HOW_TO}"
        ) from None


_checked: dict[tuple[str, float], str] = {}


def check_interpreter(interpreter: Interpreter) -> str:
    """Check (once per interpreter file) that it runs and has the worker's modules; returns its version."""
    key = (interpreter.path, os.path.getmtime(interpreter.path))
    if key in _checked:
        return _checked[key]
    try:
        done = subprocess.run(
            [interpreter.path, "-c", _PROBE, *REQUIRED_MODULES], env=worker_environment(),
            capture_output=True, text=True, timeout=60, check=False,
        )
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        raise BackendUnavailableError(
            f"The TerraMind worker interpreter '{interpreter.path}' (from the {interpreter.source}) does not run "
            f"as a Python interpreter. {HOW_TO}"
        ) from None
    if facts["missing"]:
        raise BackendUnavailableError(
            f"The TerraMind worker interpreter '{interpreter.path}' (from the {interpreter.source}) lacks "
            f"{', '.join(facts['missing'])}. {HOW_TO}"
        )
    _checked[key] = facts["python"]
    return facts["python"]
