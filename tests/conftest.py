"""Shared test set-up: expose the repository under its plugin package name.

The repository root is the plugin folder, and the plugin uses relative imports, so tests import it
as ``terramind_qgis`` through ``.pluginpath/terramind_qgis -> ..`` (made by ``make setup``, or here).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "terramind_qgis"
PLUGIN_PATH = REPO / ".pluginpath"
EXAMPLES = REPO / "tests" / "data" / "examples"
GOLDENS = REPO / "tests" / "goldens"

_link = PLUGIN_PATH / PLUGIN_NAME
if not _link.exists():
    PLUGIN_PATH.mkdir(exist_ok=True)
    os.symlink("..", _link)
if str(PLUGIN_PATH) not in sys.path:
    sys.path.insert(0, str(PLUGIN_PATH))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def goldens_dir() -> Path:
    return GOLDENS
