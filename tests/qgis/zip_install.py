"""The plugin ZIP installed into a fresh QGIS profile the way *Plugins ▸ Manage and Install Plugins ▸
Install from ZIP* does it (QGIS's ``pyplugin_installer``: the plugin name from the shortest
``metadata.txt`` path, QGIS's own ``unzip`` into ``<profile>/python/plugins``, ``[PythonPlugins]
<name>=true`` in the profile's QGIS3.ini). Used by test_install_from_zip.py and test_gui.py.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tm_helpers import REPO


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_zip(out_dir: Path) -> Path:
    """``make package`` into ``out_dir`` (tools/package.py), checked."""
    package = _load(REPO / "tools" / "package.py", "package_tool")
    target = package.build(out_dir)
    assert package.check(target) == [], package.check(target)
    return target


@dataclass(frozen=True)
class Profile:
    xdg_data_home: Path  # XDG_DATA_HOME: QGIS puts QGIS/QGIS3/profiles/default under it
    folder: Path  # the profile folder (QgsApplication.qgisSettingsDirPath())
    plugins: Path  # <profile>/python/plugins

    @property
    def ini(self) -> Path:
        return self.folder / "QGIS" / "QGIS3.ini"


def fresh_profile(root: Path) -> Profile:
    folder = root / "xdg" / "QGIS" / "QGIS3" / "profiles" / "default"
    (folder / "QGIS").mkdir(parents=True)
    return Profile(root / "xdg", folder, folder / "python" / "plugins")


def install_from_zip(zip_path: Path, profile: Profile, enable: bool = True) -> Path:
    """Unpack the ZIP as the plugin manager does; returns the installed plugin folder."""
    from qgis.core import QgsApplication

    installer = Path(QgsApplication.pkgDataPath()) / "python" / "pyplugin_installer" / "unzip.py"
    unzip = _load(installer, "qgis_plugin_installer_unzip").unzip
    with zipfile.ZipFile(zip_path) as archive:
        metadata_files = sorted(f for f in archive.namelist() if f.endswith("metadata.txt"))
    name = os.path.split(metadata_files[0])[0]
    unzip(str(zip_path), str(profile.plugins))
    if enable:
        with profile.ini.open("a", encoding="utf-8") as f:
            f.write(f"[PythonPlugins]\n{name}=true\n")
    return profile.plugins / name


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without QGIS_*/TERRAMIND_* (pytest-qgis points QGIS at its own profile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QGIS_", "TERRAMIND_")) and k != "PYTHONPATH"}
    env.update(extra)
    return env
