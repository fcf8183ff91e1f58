"""Import rules between the plugin's layers (architecture.md §2), checked on the source with ``ast``.

Every import counts, including those inside functions. Relative imports are resolved to module
names inside the plugin package (``models.catalogue``, ``processing_algorithms.base``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "processing_algorithms", "plugin")
TORCH_FREE_MODELS = {"models", "models.errors", "models.progress", "models.modalities", "models.catalogue",
                     "models.job", "models.styles"}
HEAVY = {"torch", "onnxruntime", "rasterio", "safetensors", "huggingface_hub", "pyproj", "shapely", "onnx"}
RAW_QT = {"PyQt5", "PyQt6", "PySide2", "PySide6", "sip"}
GUI = {"qgis.gui", "qgis.utils", "qgis.PyQt.QtWidgets"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) of every import; plugin modules without the package name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path)
    parts = [part for part in name.split(".") if part]
    package = parts if path.name == "__init__.py" else parts[:-1]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets = [module] if node.module else [f"{module}.{a.name}".lstrip(".") for a in node.names]
            else:
                targets = [node.module or ""]
                if node.module in ("qgis", "qgis.PyQt"):
                    targets += [f"{node.module}.{a.name}" for a in node.names]
            found += [(t, node.lineno, id(node) in top_level) for t in targets]
    return found


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _top(module: str) -> str:
    return module.split(".")[0]


def _within(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_sources_found():
    names = {_module_name(p) for p in _sources(*PACKAGES)}
    assert {"models.job", "processing_algorithms.base", "plugin.plugin"} <= names


@pytest.mark.parametrize("path", _sources("models"), ids=lambda p: _module_name(p))
def test_models_never_import_qgis_or_the_qgis_side(path):
    bad = [(m, line) for m, line, _ in _imports(path)
           if _top(m) in {"qgis", *RAW_QT} or _within(m, {"plugin", "processing_algorithms"})]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize("name", sorted(TORCH_FREE_MODELS - {"models"}))
def test_torch_free_models_import_only_stdlib_and_each_other(name):
    path = REPO / (name.replace(".", "/") + ".py")
    bad = [(m, line) for m, line, _ in _imports(path)
           if _top(m) in HEAVY | {"numpy", "qgis", "osgeo"} or (_top(m) == "models" and m not in TORCH_FREE_MODELS)]
    assert not bad, f"{name} must stay torch-free but imports {bad}"


@pytest.mark.parametrize("path", _sources("processing_algorithms"), ids=lambda p: _module_name(p))
def test_processing_algorithms_stay_light_and_gui_free(path):
    bad = []
    for module, line, _ in _imports(path):
        if _top(module) in HEAVY | RAW_QT or _within(module, GUI | {"plugin"}):
            bad.append((module, line))
        elif _top(module) == "models" and module not in TORCH_FREE_MODELS:
            bad.append((module, line))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad += [("iface", n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "iface"]
    assert not bad, f"{path.relative_to(REPO)} imports or uses {bad}"


@pytest.mark.parametrize("path", _sources("plugin"), ids=lambda p: _module_name(p))
def test_plugin_uses_only_torch_free_models_and_qgis_pyqt(path):
    bad = [(m, line) for m, line, _ in _imports(path)
           if _top(m) in HEAVY | RAW_QT or (_top(m) == "models" and m not in TORCH_FREE_MODELS)]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_root_init_imports_nothing_at_module_level():
    path = REPO / "__init__.py"
    module_level = [(m, line) for m, line, top in _imports(path) if top and m != "__future__"]
    assert not module_level, f"__init__.py must import lazily (inside classFactory), found {module_level}"
    lazy = [m for m, _, top in _imports(path) if not top]
    assert lazy == ["plugin.plugin"], lazy


def test_rule_checker_catches_a_violation(tmp_path, monkeypatch):
    """The resolver really maps relative imports: a planted bad import is reported."""
    pkg = tmp_path / "processing_algorithms"
    pkg.mkdir()
    bad = pkg / "bad.py"
    bad.write_text("from ..models.engine import run\nfrom ..plugin import x\nimport torch\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["REPO"]), "REPO", tmp_path)
    assert [m for m, _, _ in _imports(bad)] == ["models.engine", "plugin", "torch"]
