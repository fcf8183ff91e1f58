"""Import rules between the plugin's layers (docs/architecture.md, "Layers"), checked on the source with ``ast``.

Every import counts, including those inside functions. Relative imports are resolved to module
names inside the plugin package (``models.core.catalogue``, ``processing_algorithms.base``, ...).
The rules are data (``RULES``); ``violations(tree)`` applies them to a source tree, so the tests
run them on the repository and on small trees with a planted violation of each rule.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "processing_algorithms", "plugin")
TORCH_FREE = "models.core"  # the package QGIS may import: stdlib and numpy
HEAVY = {"torch", "onnxruntime", "rasterio", "safetensors", "huggingface_hub", "pyproj", "shapely", "onnx", "dask",
         "distributed", "pystac"}  # fmt: skip
RAW_QT = {"PyQt5", "PyQt6", "PySide2", "PySide6", "sip"}
GUI = {"qgis.gui", "qgis.utils", "qgis.PyQt.QtWidgets"}
WORKER = "models.worker"
# who may import the worker package: itself, and the fleet that fans it out
WORKER_CLIENTS = {"models.worker", "models.fleet"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) of every import; plugin modules without the package name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = [part for part in module_name(path, root).split(".") if part]
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
                # ``from ..models import build`` imports the module models.build
                targets = ([module] if node.module else []) + [f"{module}.{a.name}".lstrip(".") for a in node.names]
            else:
                targets = [node.module or ""]
                if node.module in ("qgis", "qgis.PyQt"):
                    targets += [f"{node.module}.{a.name}" for a in node.names]
            found += [(t, node.lineno, id(node) in top_level) for t in targets]
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _uses_iface(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "iface"]


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[str], bool]  # to a module name
    forbidden: Callable[[str], bool]  # an imported module name
    why: str


def _not_core_models(m: str) -> bool:
    return _top(m) == "models" and not within(m, TORCH_FREE) and m != "models"


RULES = (
    Rule("models-no-qgis", lambda n: within(n, "models"),
         lambda m: _top(m) in {"qgis", *RAW_QT} or within(m, "plugin", "processing_algorithms"),
         "models/ runs without QGIS"),
    Rule("core-light", lambda n: within(n, TORCH_FREE),
         lambda m: _top(m) in HEAVY | {"qgis", "osgeo", "yaml"} or (_top(m) == "models" and not within(m, TORCH_FREE)),
         "models/core is what QGIS's Python imports: stdlib and numpy"),
    Rule("worker-only-for-its-clients", lambda n: within(n, "models") and not within(n, *WORKER_CLIENTS),
         lambda m: within(m, WORKER),
         "backends, the engine and the model packages are used by the worker, never the other way round"),
    Rule("processing-light", lambda n: within(n, "processing_algorithms"),
         lambda m: _top(m) in HEAVY | RAW_QT or within(m, *GUI, "plugin") or _not_core_models(m),
         "the QGIS side imports no torch and only models/core"),
    Rule("plugin-light", lambda n: within(n, "plugin"),
         lambda m: _top(m) in HEAVY | RAW_QT or _not_core_models(m),
         "the desktop side imports no torch and only models/core"),
)  # fmt: skip


def sources(root: Path) -> list[Path]:
    return sorted(p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")
                  if "__pycache__" not in p.parts)  # fmt: skip


def violations(root: Path) -> list[str]:
    """Every broken rule in the tree at ``root``: 'rule: file:line imports module'."""
    found = []
    for path in sources(root):
        name, rel = module_name(path, root), path.relative_to(root)
        for rule in RULES:
            if rule.applies(name):
                bad = {}  # line -> first forbidden module of that import statement
                for m, line, _ in imports(path, root):
                    if rule.forbidden(m):
                        bad.setdefault(line, m)
                found += [f"{rule.name}: {rel}:{line} imports {m}" for line, m in bad.items()]
        if within(name, "processing_algorithms"):
            found += [f"processing-light: {rel}:{line} uses iface" for line in _uses_iface(path)]
    init = root / "__init__.py"
    if init.exists():
        module_level = {}
        for m, line, top in imports(init, root):
            if top and m != "__future__":
                module_level.setdefault(line, m)
        found += [f"root-lazy: __init__.py:{line} imports {m} at module level" for line, m in module_level.items()]
    return found


def test_sources_found():
    names = {module_name(p, REPO) for p in sources(REPO)}
    assert {"models.core.job", "processing_algorithms.base", "plugin.plugin", "models.worker.cli"} <= names


def test_the_tree_keeps_every_rule():
    assert violations(REPO) == []


def test_root_init_imports_the_plugin_lazily():
    lazy = {m for m, _, top in imports(REPO / "__init__.py", REPO) if not top}
    assert lazy and all(within(m, "plugin.plugin") for m in lazy), lazy


PLANTED = {  # file -> (source, the rule it breaks)
    "models/engine/bad_qgis.py": ("from qgis.core import QgsRasterLayer\n", "models-no-qgis"),
    "models/core/bad_torch.py": ("def f():\n    import torch\n", "core-light"),
    "models/core/bad_models.py": ("from ..engine import run_tiled\n", "core-light"),
    "models/backends/bad_worker.py": ("from ..worker.device import select_device\n", "worker-only-for-its-clients"),
    "models/terramind/bad_worker.py": ("from ..worker.tasks import common\n", "worker-only-for-its-clients"),
    "models/segmentation/bad_worker.py": ("def f():\n    from ..worker import cli\n", "worker-only-for-its-clients"),
    "processing_algorithms/bad_torch.py": ("import torch\n", "processing-light"),
    "processing_algorithms/bad_models.py": ("from ..models.engine import run_tiled\n", "processing-light"),
    "processing_algorithms/bad_gui.py": ("from qgis.PyQt.QtWidgets import QDialog\n", "processing-light"),
    "processing_algorithms/bad_iface.py": ("def f():\n    return iface\n", "processing-light"),
    "plugin/bad_build.py": ("from ..models import build\n", "plugin-light"),
    "__init__.py": ("from .plugin.plugin import X\n", "root-lazy"),
}


def test_each_rule_bites_on_a_planted_violation(tmp_path):
    for rel, (text, _) in PLANTED.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    allowed = {"models/worker/ok.py": "from ..core import job\nfrom .tasks import x\n",
               "models/core/ok.py": "import json\nfrom .errors import ConfigError\n",
               "processing_algorithms/ok.py": "from ..models.core import catalogue\nfrom qgis.core import Qgis\n"}
    for rel, text in allowed.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = violations(tmp_path)
    for rel, (_, rule) in PLANTED.items():
        assert any(v.startswith(f"{rule}: {rel}:") for v in found), (rel, rule, found)
    assert not any("/ok.py" in v for v in found), found
    assert len(found) == len(PLANTED), found
