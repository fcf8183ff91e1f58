"""Qt 6 / QGIS 4 readiness of the QGIS-side code, checked the way QGIS's own migration script does.

QGIS ships ``scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py`` (plugins.qgis.org runs it on uploads). Its
rules, applied here with ``ast`` to the files QGIS imports, without rewriting them:

- ``x.exec_()`` calls and ``def exec_`` (PyQt6 has only ``exec``);
- imports from ``PyQt5`` (use ``qgis.PyQt``), of ``QRegExp`` (removed in Qt 6), of ``resources_rc``
  (compiled resources are gone), of the module ``qgis.PyQt.Qt``; ``qApp``;
- short enum names: ``Class.Member`` where ``Member`` is a value of an enum nested in ``Class``
  (``Qt.AlignLeft``, ``QDialog.Accepted``, ``QgsProcessingParameterFile.Folder``). PyQt6 only knows
  the scoped form (``Qt.AlignmentFlag.AlignLeft``). The script finds them by introspecting the real
  PyQt6/QGIS classes; here the names a file imports from ``qgis.core``/``qgis.gui``/``qgis.analysis``/
  ``qgis.PyQt.*`` are resolved against this QGIS's classes, and an access is flagged when its value is
  an enum member (a sip enum or a Python ``enum.Enum``) reached through a class, not through its enum.
  The scoped replacement is named when it exists (QGIS 3.40's moved enums: ``QgsWkbTypes.PolygonGeometry``
  → ``Qgis.GeometryType.Polygon``);
- the enums Qt 6 renamed (``Qt.MidButton`` …), ``QVariant()``/``QVariant(QVariant.X)`` (use ``NULL``),
  ``QVariant.Type.X``, ``QDateTime`` from 8 numbers or a lone ``QDate``, ``addAction`` with 4+ arguments,
  ``desktop()``, ``fontMetrics().width``, ``activated[str]``;
- and one rule the script fixes through QGIS's ``qgis.PyQt`` shims: ``QAction``, ``QActionGroup``,
  ``QShortcut`` live in ``QtGui`` in Qt 6 (``qgis.PyQt.QtGui`` has them on Qt 5 too).

The tests run the scan on the tree (no finding: metadata.txt may declare ``supportsQt6=True``) and on
temporary files with a planted violation of each kind.
"""

from __future__ import annotations

import ast
import configparser
import enum
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The code QGIS imports, the desktop script, and models/ (the worker: no Qt, but in the ZIP, which
# plugins.qgis.org runs the migration script on).
SCANNED = ("__init__.py", "plugin", "processing_algorithms", "models", "tools/gui_shot.py")
# Modules whose classes are introspected for enums (the script's target modules, as QGIS exposes them).
INTROSPECTED_PREFIXES = ("qgis.core", "qgis.gui", "qgis.analysis", "qgis.PyQt.")
RENAMED_ENUMS = {("Qt", "MidButton"): "Qt.MouseButton.MiddleButton", ("Qt", "TextColorRole"): "Qt.ItemDataRole.ForegroundRole",
                 ("Qt", "BackgroundColorRole"): "Qt.ItemDataRole.BackgroundRole"}  # fmt: skip
MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col} - {self.message}"


def python_files(root: Path = REPO, scanned: tuple[str, ...] = SCANNED) -> list[Path]:
    files: list[Path] = []
    for entry in scanned:
        path = root / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [p for p in files if "__pycache__" not in p.parts]


def _is_enum_type(obj: object) -> bool:
    return isinstance(obj, enum.EnumMeta) or type(obj).__name__ == "enumtype"  # sip's enum metatype (PyQt5)


def _is_enum_member(obj: object) -> bool:
    return isinstance(obj, enum.Enum) or type(type(obj)).__name__ == "enumtype"


def _imported_names(tree: ast.AST) -> dict[str, tuple[str, str]]:
    """local name -> (module, attribute) for ``from qgis.<introspected> import Name [as local]``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith(INTROSPECTED_PREFIXES) or node.module in ("qgis.core", "qgis.gui", "qgis.analysis"):
                for alias in node.names:
                    names[alias.asname or alias.name] = (node.module, alias.name)
    return names


def _resolve(module: str, name: str) -> object | None:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def scoped_form(class_name: str, owner: object, member_name: str, value: object) -> str:
    """The Qt 6 spelling of ``class_name.member_name`` (an enum member reached through its class)."""
    enum_type = type(value)
    for alias in sorted(dir(owner)):
        try:
            candidate = getattr(owner, alias)
        except AttributeError:
            continue
        same = candidate is enum_type or (_is_enum_type(candidate) and alias == enum_type.__name__)
        if same and hasattr(candidate, member_name):
            return f"{class_name}.{alias}.{member_name}"
    return f"{enum_type.__qualname__}.{getattr(value, 'name', member_name)}"


def _short_enum(node: ast.Attribute, imported: dict[str, tuple[str, str]]) -> str | None:
    if not (isinstance(node.value, ast.Name) and node.value.id in imported):
        return None
    owner = _resolve(*imported[node.value.id])
    if owner is None or _is_enum_type(owner) or not isinstance(owner, type) or owner.__name__ == "QVariant":
        return None  # an enum's own members are scoped; QVariant.X stays valid in QGIS 3 compatibility mode
    try:
        value = getattr(owner, node.attr)
    except AttributeError:
        return None
    if _is_enum_type(value) or not _is_enum_member(value):
        return None
    short = f"{node.value.id}.{node.attr}"
    better = RENAMED_ENUMS.get((node.value.id, node.attr)) or scoped_form(node.value.id, owner, node.attr, value)
    return f"short enum name {short}: Qt 6 needs the scoped form {better}"


def _import_findings(node: ast.ImportFrom | ast.Import) -> list[tuple[ast.AST, str]]:
    found = []
    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    for module in modules:
        if module == "PyQt5" or module.startswith("PyQt5."):
            found.append((node, f"import from {module}: use qgis.PyQt{module[5:]} (PyQt5 does not exist with Qt 6)"))
        if module == "qgis.PyQt.Qt":
            found.append((node, "the module qgis.PyQt.Qt is gone in Qt 6: import Qt from qgis.PyQt.QtCore"))
    names = {a.name for a in node.names}
    if "QRegExp" in names:
        found.append((node, "QRegExp is removed in Qt 6: use QRegularExpression"))
    if "resources_rc" in names:
        found.append((node, "compiled resources (resources_rc) are removed in Qt 6: load files by path"))
    if isinstance(node, ast.ImportFrom) and node.module == "qgis.PyQt.QtWidgets":
        for name in sorted(names & MOVED_TO_QTGUI):
            found.append((node, f"{name} moved to QtGui in Qt 6: import it from qgis.PyQt.QtGui"))
    return found


def _call_findings(node: ast.Call) -> list[tuple[ast.AST, str]]:
    found = []
    func = node.func
    if isinstance(func, ast.Attribute):
        if func.attr == "exec_":
            found.append((node, "exec_() does not exist in PyQt6: call exec()"))
        if func.attr == "addAction" and len(node.args) >= 4:
            found.append((node, "fragile addAction(...) with 4+ arguments: create the QAction, then addAction(action)"))
        if func.attr == "desktop" and not node.args:
            found.append((node, "QDesktopWidget (desktop()) is removed in Qt 6: use QScreen"))
    if isinstance(func, ast.Name) and func.id == "QVariant":
        plain = not node.args
        typed = (len(node.args) == 1 and isinstance(node.args[0], ast.Attribute)
                 and isinstance(node.args[0].value, ast.Name) and node.args[0].value.id == "QVariant")  # fmt: skip
        if plain or typed:
            found.append((node, "an invalid QVariant(...) as NULL: use qgis.core.NULL"))
    if isinstance(func, ast.Name) and func.id == "QDateTime":
        if len(node.args) == 8 or (len(node.args) == 1 and isinstance(node.args[0], ast.Call)
                                   and getattr(node.args[0].func, "id", "") == "QDate"):  # fmt: skip
            found.append((node, "this QDateTime constructor is gone in Qt 6: QDateTime(QDate(...), QTime(...))"))
    return found


def findings(path: Path, root: Path = REPO) -> list[Finding]:
    """Every Qt 6 incompatibility in one Python file."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    imported = _imported_names(tree)
    raw: list[tuple[ast.AST, str]] = []
    for parent in ast.walk(tree):
        for node in ast.iter_child_nodes(parent):
            if isinstance(node, ast.ImportFrom | ast.Import):
                raw += _import_findings(node)
            elif isinstance(node, ast.Call):
                raw += _call_findings(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "exec_":
                raw.append((node, "def exec_: PyQt6 calls exec(); rename the method"))
            elif isinstance(node, ast.Name) and node.id == "qApp":
                raw.append((node, "qApp is removed in Qt 6: use QApplication.instance()"))
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
                if node.value.attr == "activated" and isinstance(node.slice, ast.Name) and node.slice.id == "str":
                    raw.append((node, "activated[str] is removed in Qt 6: use textActivated"))
            if isinstance(node, ast.Attribute):
                if (isinstance(node.value, ast.Attribute) and node.value.attr == "Type"
                        and isinstance(node.value.value, ast.Name) and node.value.value.id == "QVariant"):  # fmt: skip
                    raw.append((node, f"QVariant.Type.{node.attr} does not exist in Qt 6: use QMetaType.Type"))
                if (node.attr == "width" and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
                        and node.value.func.attr == "fontMetrics"):  # fmt: skip
                    raw.append((node, "QFontMetrics.width() is removed in Qt 6: use horizontalAdvance()"))
                if not isinstance(parent, ast.Attribute):
                    message = _short_enum(node, imported)
                    if message:
                        raw.append((node, message))
    relative = path.relative_to(root) if path.is_relative_to(root) else path
    unique = {(n.lineno, n.col_offset, m) for n, m in raw}
    return [Finding(str(relative), line, col, message) for line, col, message in sorted(unique)]


def scan(root: Path = REPO, scanned: tuple[str, ...] = SCANNED) -> list[Finding]:
    return [f for path in python_files(root, scanned) for f in findings(path, root)]


def _metadata() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]


# --- the tree ------------------------------------------------------------------------------------


def test_the_qgis_side_code_is_qt6_ready():
    assert python_files(), "nothing scanned"
    problems = scan()
    assert problems == [], "Qt 6 incompatibilities:\n" + "\n".join(map(str, problems))


def test_metadata_declares_qt6_support_that_the_scan_backs():
    general = _metadata()
    assert general.get("supportsQt6", "").strip().lower() == "true"
    assert scan() == []


def test_the_scan_covers_every_qgis_side_package():
    scanned = {p.relative_to(REPO).parts[0] for p in python_files()}
    assert {"__init__.py", "plugin", "processing_algorithms", "models", "tools"} <= scanned
    assert REPO / "plugin" / "plugin.py" in python_files() and REPO / "models" / "core" / "job.py" in python_files()


# --- planted violations --------------------------------------------------------------------------


def _scan_source(tmp_path: Path, source: str) -> list[Finding]:
    path = tmp_path / "planted.py"
    path.write_text(source, encoding="utf-8")
    return findings(path, tmp_path)


def test_a_planted_exec_underscore_is_found(tmp_path):
    found = _scan_source(tmp_path, "def run(dialog):\n    return dialog.exec_()\n")
    assert [(f.line, f.message) for f in found] == [(2, "exec_() does not exist in PyQt6: call exec()")]
    assert _scan_source(tmp_path, "def run(dialog):\n    return dialog.exec()\n") == []


def test_a_planted_def_exec_underscore_is_found(tmp_path):
    found = _scan_source(tmp_path, "class D:\n    def exec_(self):\n        return 1\n")
    assert [f.line for f in found] == [2] and "def exec_" in found[0].message


@pytest.mark.parametrize(
    ("source", "short", "scoped"),
    [
        ("from qgis.PyQt.QtCore import Qt\nx = Qt.AlignLeft\n", "Qt.AlignLeft", "Qt.AlignmentFlag.AlignLeft"),
        ("from qgis.PyQt.QtWidgets import QDialog\nok = QDialog.Accepted\n", "QDialog.Accepted", "QDialog.DialogCode.Accepted"),
        ("from qgis.PyQt.QtWidgets import QDialogButtonBox as B\nb = B.Save | B.Cancel\n", "B.Save", "B.StandardButton.Save"),
        ("from qgis.core import QgsProcessingParameterFile\nf = QgsProcessingParameterFile.Folder\n",
         "QgsProcessingParameterFile.Folder", "QgsProcessingParameterFile.Behavior.Folder"),
        ("from qgis.core import QgsWkbTypes\ng = QgsWkbTypes.PolygonGeometry\n", "QgsWkbTypes.PolygonGeometry",
         "QgsWkbTypes.GeometryType.PolygonGeometry"),
        ("from qgis.gui import QgsFileWidget\nm = QgsFileWidget.GetFile\n", "QgsFileWidget.GetFile",
         "QgsFileWidget.StorageMode.GetFile"),
        ("from qgis.PyQt.QtCore import Qt\nb = Qt.MidButton\n", "Qt.MidButton", "Qt.MouseButton.MiddleButton"),
    ],
)
def test_a_planted_short_enum_is_found_with_its_scoped_form(tmp_path, source, short, scoped):
    found = _scan_source(tmp_path, source)
    assert found, f"{short} not found"
    assert found[0].line == 2
    assert f"short enum name {short}: Qt 6 needs the scoped form {scoped}" == found[0].message


def test_scoped_enums_and_plain_attributes_are_not_findings(tmp_path):
    source = (
        "from qgis.PyQt.QtCore import Qt\n"
        "from qgis.core import Qgis, QgsProcessingParameterFile, QgsWkbTypes\n"
        "from qgis.PyQt.QtWidgets import QDialogButtonBox\n"
        "a = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop\n"
        "b = QgsProcessingParameterFile.Behavior.Folder\n"
        "c = Qgis.MessageLevel.Warning, Qgis.GeometryType.Polygon, QgsWkbTypes.GeometryType\n"
        "d = QDialogButtonBox.StandardButton.Save\n"
        "e = QgsProcessingParameterFile.fromScriptCode, Qt.AlignmentFlag\n"
        "class Qt2:\n    AlignLeft = 1\nf = Qt2.AlignLeft\n"  # not a Qt class
    )
    assert _scan_source(tmp_path, source) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from PyQt5.QtCore import pyqtSignal\n", "import from PyQt5.QtCore: use qgis.PyQt.QtCore"),
        ("import PyQt5\n", "import from PyQt5: use qgis.PyQt"),
        ("from qgis.PyQt.QtCore import QRegExp\n", "QRegExp is removed in Qt 6"),
        ("from qgis.PyQt.QtWidgets import QAction, QMenu\n", "QAction moved to QtGui in Qt 6"),
        ("from qgis.PyQt.Qt import Qt\n", "the module qgis.PyQt.Qt is gone in Qt 6"),
        ("from . import resources_rc\n", "compiled resources (resources_rc) are removed"),
        ("x = qApp.processEvents()\n", "qApp is removed in Qt 6"),
        ("from qgis.PyQt.QtCore import QVariant\nv = QVariant()\n", "an invalid QVariant(...) as NULL"),
        ("from qgis.PyQt.QtCore import QVariant\nt = QVariant.Type.Int\n", "QVariant.Type.Int does not exist in Qt 6"),
        ("w = widget.fontMetrics().width('x')\n", "QFontMetrics.width() is removed in Qt 6"),
        ("combo.activated[str].connect(f)\n", "activated[str] is removed in Qt 6"),
        ("menu.addAction(icon, 'Text', obj, slot)\n", "fragile addAction"),
        ("s = app.desktop()\n", "QDesktopWidget (desktop()) is removed"),
        ("d = QDateTime(2020, 1, 1, 0, 0, 0, 0, 0)\n", "this QDateTime constructor is gone in Qt 6"),
    ],
)
def test_each_other_planted_pyqt5_idiom_is_found(tmp_path, source, expected):
    messages = [f.message for f in _scan_source(tmp_path, source)]
    assert any(m.startswith(expected) for m in messages), messages


def test_qt6_spellings_of_the_same_code_are_clean(tmp_path):
    source = (
        "from qgis.PyQt.QtCore import QRegularExpression, pyqtSignal\n"
        "from qgis.PyQt.QtGui import QAction\n"
        "from qgis.PyQt.QtWidgets import QApplication, QMenu\n"
        "from qgis.core import NULL\n"
        "v = NULL\n"
        "QApplication.instance().processEvents()\n"
        "menu.addAction(QAction('Text'))\n"
        "w = widget.fontMetrics().horizontalAdvance('x')\n"
    )
    assert _scan_source(tmp_path, source) == []


def test_findings_name_file_line_and_column(tmp_path):
    (finding,) = _scan_source(tmp_path, "\n\nok = dialog.exec_()\n")
    assert str(finding) == "planted.py:3:5 - exec_() does not exist in PyQt6: call exec()"
