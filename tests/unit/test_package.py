"""tools/package.py: the plugin ZIP holds the plugin and nothing else, and the plugins.qgis.org check catches
what the plugin repository rejects (each rule proven on a ZIP with one planted problem).

Installing the ZIP into a fresh QGIS profile and running an algorithm from it: tests/qgis/test_install_from_zip.py.
"""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("package_tool", REPO / "tools" / "package.py")
package = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(package)

PREFIX = "terramind_qgis/"
# Never in the ZIP: what only developers, tests and CI use, and caches.
NOT_SHIPPED = ("tests/", "tools/", ".venv", ".pluginpath", ".git", ".ci/", "bench-results/", "goldens", "gui-shots/",
               "demo-output/", "dist/", "resources/sample/", "Makefile", "pytest.ini", "requirements-dev.txt",
               "__pycache__", ".pyc", ".qgis-settings")  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return package.build(tmp_path_factory.mktemp("dist"))


def _names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def test_the_zip_is_named_after_the_version_and_passes_the_check(built):
    version = package.metadata((REPO / "metadata.txt").read_text(encoding="utf-8"))["version"]
    assert built.name == f"terramind_qgis-{version}.zip"
    assert package.check(built) == []
    assert built.stat().st_size < package.MAX_SIZE


def test_the_zip_holds_no_test_tool_or_cache_file(built):
    files = [n[len(PREFIX):] for n in _names(built) if not n.endswith("/")]
    assert all(n.startswith(PREFIX) for n in _names(built))
    leaked = [f for f in files if any(marker in f for marker in NOT_SHIPPED) or f.split("/")[-1].startswith(".")]
    assert leaked == []


def test_the_zip_holds_everything_qgis_and_the_worker_import(built):
    files = {n[len(PREFIX):] for n in _names(built) if not n.endswith("/")}
    assert {"__init__.py", "metadata.txt", "LICENSE", "README.md", "requirements.txt", "constraints.txt",
            "resources/terramind.svg", "resources/help/terramind.yaml"} <= files  # fmt: skip
    code = {p.relative_to(REPO).as_posix() for d in ("plugin", "processing_algorithms", "models")
            for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts}  # fmt: skip
    assert code and code <= files, sorted(code - files)
    assert "models/worker/__main__.py" in files  # python -m terramind_qgis.models.worker


def test_the_zip_entries_are_plain_files_and_folders_without_executable_bits(built):
    with zipfile.ZipFile(built) as archive:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in archive.infolist()}
        dates = {i.date_time for i in archive.infolist()}
    assert {m for n, m in modes.items() if not n.endswith("/")} == {0o644}
    assert {m for n, m in modes.items() if n.endswith("/")} == {0o755}
    assert dates == {package.ZIP_DATE}
    assert _names(built)[0] == PREFIX  # plugins.qgis.org takes the folder name from the first entry


def test_the_same_tree_gives_the_same_bytes(built, tmp_path):
    assert package.build(tmp_path).read_bytes() == built.read_bytes()


def test_caches_hidden_and_editor_files_in_the_tree_stay_out(tmp_path):
    tree = tmp_path / "tree"
    for entry in package.INCLUDED:
        source, target = REPO / entry, tree / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    planted = ["models/__pycache__/build.cpython-311.pyc", "models/engine/runner.pyc", "plugin/.DS_Store",
               "processing_algorithms/base.py~", "models/.hidden/x.py", "models/tests/test_x.py", "plugin/plugin.py.orig"]
    for name in planted:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x = 1\n")
    zip_path = package.build(tmp_path / "dist", root=tree)
    names = _names(zip_path)
    assert [n for n in names if any(n.endswith(p) for p in planted)] == []
    assert PREFIX + "models/build.py" in names
    assert package.check(zip_path) == []


# --- the check, one planted problem at a time ---------------------------------------------------------


def _good_files() -> dict[str, bytes]:
    return {
        "__init__.py": b"def classFactory(iface):\n    return None\n",
        "metadata.txt": (REPO / "metadata.txt").read_bytes(),
        "LICENSE": b"Apache License\n",
        "resources/terramind.svg": (REPO / "resources" / "terramind.svg").read_bytes(),
    }


def _zip(tmp_path: Path, files: dict[str, bytes], top: str = "terramind_qgis", modes: dict[str, int] | None = None) -> Path:
    path = tmp_path / "planted.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/", b"")
        for name, data in files.items():
            info = zipfile.ZipInfo(name if name.startswith(("../", "other/")) else f"{top}/{name}")
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            archive.writestr(info, data)
    return path


def _metadata_with(**changes: str | None) -> bytes:
    lines = []
    for line in (REPO / "metadata.txt").read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0]
        if key in changes:
            if changes[key] is not None:
                lines.append(f"{key}={changes[key]}")
            continue
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def test_a_minimal_good_plugin_passes(tmp_path):
    assert package.check(_zip(tmp_path, _good_files())) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda f: f.pop("LICENSE"), "terramind_qgis/LICENSE is missing"),
        (lambda f: f.pop("__init__.py"), "terramind_qgis/__init__.py is missing"),
        (lambda f: f.update({"plugin/x.pyc": b"x"}), ".pyc files are not allowed"),
        (lambda f: f.update({"plugin/__pycache__/x.py": b"x = 1\n"}), "a '__pycache__' folder is not allowed"),
        (lambda f: f.update({"../evil.py": b"x = 1\n"}), "path information is not allowed"),
        (lambda f: f.update({"other/readme.txt": b"x"}), "exactly one plugin folder"),
        (lambda f: f.update({"metadata.txt": _metadata_with(tracker=None)}), "the required field 'tracker' is missing"),
        (lambda f: f.update({"metadata.txt": _metadata_with(email="")}), "the required field 'email' is missing"),
        (lambda f: f.update({"metadata.txt": _metadata_with(tracker="http://bugs")}), "tracker='http://bugs' is not a full"),
        (lambda f: f.update({"metadata.txt": _metadata_with(homepage="github.com/x")}), "homepage='github.com/x' is not a full"),
        (lambda f: f.update({"metadata.txt": _metadata_with(supportsQt6="maybe")}), "supportsQt6=maybe is not a boolean"),
        (lambda f: f.update({"metadata.txt": _metadata_with(author="A/B")}), "the author must not contain a slash"),
        (lambda f: f.pop("resources/terramind.svg"), "the icon 'resources/terramind.svg' is not in the ZIP"),
        (lambda f: f.update({"metadata.txt": b"name=x\n"}), "metadata.txt cannot be read"),
        (lambda f: f.update({"lib/native.so": b"\x7fELF"}), "executable or native code is not allowed"),
        (lambda f: f.update({"setup.sh": b"echo hi\n"}), "executable or native code is not allowed"),
        (lambda f: f.update({"plugin/.secret": b"x"}), "hidden file"),
        (lambda f: f.update({"resources/icon.png": b"\x89PNG\r\n\x1a\n\x00\x00"}), "a binary file"),
        (lambda f: f.update({"plugin/a.py": b"x = eval(input())\n"}), "eval() (bandit B307/B102)"),
        (lambda f: f.update({"plugin/a.py": b"import subprocess\nsubprocess.run('ls', shell=True)\n"}), "shell=True"),
        (lambda f: f.update({"plugin/a.py": b"import os\nos.system('ls')\n"}), "os.system starts a shell"),
        (lambda f: f.update({"plugin/a.py": b"import yaml\nyaml.load(open('c'))\n"}), "yaml.load without a safe loader"),
        (lambda f: f.update({"plugin/a.py": b"import torch\ntorch.load('m.pt')\n"}), "torch.load without weights_only"),
        (lambda f: f.update({"plugin/a.py": b"import pickle\npickle.loads(b'')\n"}), "pickle.loads (bandit B301)"),
        (lambda f: f.update({"plugin/a.py": b"import xml.etree.ElementTree as ET\nET.parse('a.xml')\n"}),
         "xml.etree.ElementTree.parse parses XML"),
        (lambda f: f.update({"plugin/a.py": b"import requests\nrequests.get('https://x')\n"}), "without a timeout"),
        (lambda f: f.update({"plugin/a.py": b"def broken(:\n"}), "does not parse as Python"),
    ],
)
def test_each_planted_problem_is_reported(tmp_path, change, expected):
    files = _good_files()
    change(files)
    problems = package.check(_zip(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_a_folder_name_that_is_no_python_identifier_is_reported(tmp_path):
    problems = package.check(_zip(tmp_path, _good_files(), top="terramind-qgis"))
    assert any("is not a Python identifier" in p for p in problems), problems


def test_an_executable_python_file_is_reported(tmp_path):
    files = dict(_good_files(), **{"plugin/run.py": b"x = 1\n"})
    problems = package.check(_zip(tmp_path, files, modes={"plugin/run.py": 0o100755}))
    assert problems == ["terramind_qgis/plugin/run.py: a Python file with the executable bit"]


def test_a_zip_over_the_size_limit_is_reported(tmp_path):
    path = _zip(tmp_path, _good_files())
    assert package.check(path) == []
    problems = package.check(path, max_size=path.stat().st_size - 1)
    assert problems == [f"the ZIP is {path.stat().st_size} bytes; plugins.qgis.org accepts at most {path.stat().st_size - 1}"]


def test_nosec_marks_a_reviewed_line_as_bandit_does(tmp_path):
    source = b"import xml.etree.ElementTree as ET\nET.parse('own.aux.xml')  # nosec B314 # our own sidecar\n"
    assert package.check(_zip(tmp_path, dict(_good_files(), **{"plugin/a.py": source}))) == []


def test_the_command_line_fails_on_a_bad_zip_and_passes_on_the_built_one(built, tmp_path, capsys):
    assert package.main(["--check", str(built)]) == 0
    assert "passes the plugins.qgis.org checks" in capsys.readouterr().out
    files = _good_files()
    files.pop("LICENSE")
    assert package.main(["--check", str(_zip(tmp_path, files))]) == 1
    assert "package: terramind_qgis/LICENSE is missing" in capsys.readouterr().err
