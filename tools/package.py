"""Build the plugin ZIP and check it the way plugins.qgis.org does (``make package``).

    python3 tools/package.py [--out dist]       # writes and checks dist/terramind_qgis-<version>.zip
    python3 tools/package.py --check FILE.zip   # checks a ZIP only

The ZIP holds one folder, ``terramind_qgis/``, with what a user's QGIS and the worker need: the
plugin code (``__init__.py``, ``plugin/``, ``processing_algorithms/``, ``models/``), ``metadata.txt``,
``LICENSE``, the icon, ``README.md`` and the worker's ``requirements.txt``/``constraints.txt`` (the
set-up algorithm installs them). Tests, tools, goldens, benchmark results, example data, build files,
hidden files and caches stay out. Entries are sorted, dated 1980-01-01 and mode 0644 (0755 for folders),
so the same tree gives the same bytes.

The check applies the plugin repository's validator (QGIS-Plugins-Website, ``plugins/validator.py``)
and the file checks of its security scanner (``plugins/security_scanner.py``), offline:

- size at most 25 MB; a readable ZIP (CRC); no absolute or ``..`` paths; no ``.pyc``, ``__pycache__``,
  ``.git`` or ``__MACOSX``;
- one top-level folder whose name is a Python identifier (PEP 8, required for new plugins), with
  ``__init__.py``, ``metadata.txt`` (section ``[general]``) and ``LICENSE``;
- the required metadata (name, description, version, qgisMinimumVersion, author, email, about,
  tracker, repository), booleans spelled true/false, tracker/repository/homepage full http(s) URLs
  (the site also fetches them; that needs the network and is not done here), no slash in author, the
  icon inside the ZIP;
- no hidden files, no executables or native code (``.exe .dll .so .dylib .bat .sh .ps1 .cmd``), no
  executable ``.py``, and no binary file at all (every file must be UTF-8 text: the icon is an SVG);
- bandit's medium/high rules that apply to plain code (the site runs ``bandit -ll``): ``eval``/``exec``,
  ``shell=True``, ``os.system``/``os.popen``, ``pickle``/``marshal`` loads, ``yaml.load`` without a safe
  loader, ``torch.load`` without ``weights_only=True``, ``requests`` without a timeout or with
  ``verify=False``.

Exit status 1 and one line per problem when the check fails.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import re
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "terramind_qgis"
# What the package holds, relative to the repository root (folders are taken whole, minus EXCLUDED).
INCLUDED = ("__init__.py", "metadata.txt", "LICENSE", "README.md", "requirements.txt", "constraints.txt",
            "plugin", "processing_algorithms", "models", "resources/terramind.svg", "resources/help")  # fmt: skip
EXCLUDED_PARTS = {"__pycache__", "__MACOSX", ".git", ".venv", "tests", "tools"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".tmp", ".orig", ".rej", ".swp", "~")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

MAX_SIZE = 25_000_000  # plugins.qgis.org's PLUGIN_MAX_UPLOAD_SIZE
REQUIRED_METADATA = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker",
                     "repository")  # fmt: skip
BOOLEAN_METADATA = ("experimental", "deprecated", "server", "supportsQt6")
URL_METADATA = ("tracker", "repository", "homepage")
PLACEHOLDER_URLS = {"http://bugs", "http://repo", "http://homepage"}
FORBIDDEN_DIRS = {"__MACOSX", ".git", "__pycache__"}
SUSPICIOUS_SUFFIXES = (".exe", ".dll", ".so", ".dylib", ".bat", ".sh", ".ps1", ".cmd")
ALLOWED_HIDDEN = {".gitignore", ".gitattributes"}
XML_PARSERS = ("xml.etree", "xml.dom", "xml.sax", "lxml")
XML_PARSE_CALLS = ("parse", "iterparse", "fromstring", "XML", "XMLID", "XMLParser", "parseString", "make_parser")


def metadata(text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive (qgisMinimumVersion)
    parser.read_string(text)
    return parser["general"]


def plugin_files(root: Path = REPO) -> list[Path]:
    """The files the package holds, relative to ``root``, sorted."""
    files = []
    for entry in INCLUDED:
        path = root / entry
        if not path.exists():
            raise SystemExit(f"package: {entry} is missing in {root}")
        for candidate in sorted(path.rglob("*")) if path.is_dir() else [path]:
            relative = candidate.relative_to(root)
            if (candidate.is_dir() or candidate.is_symlink() or EXCLUDED_PARTS & set(relative.parts)
                    or any(part.startswith(".") for part in relative.parts)
                    or candidate.name.endswith(EXCLUDED_SUFFIXES)):  # fmt: skip
                continue
            files.append(relative)
    return sorted(set(files))


def _entry(name: str, is_dir: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.create_system = 3  # Unix, so that the mode below is read
    info.external_attr = ((0o40755 if is_dir else 0o100644) << 16) | (0x10 if is_dir else 0)
    info.compress_type = zipfile.ZIP_STORED if is_dir else zipfile.ZIP_DEFLATED
    return info


def build(out_dir: Path, root: Path = REPO) -> Path:
    """Write ``<out_dir>/terramind_qgis-<version>.zip`` from ``root``; returns its path."""
    version = metadata((root / "metadata.txt").read_text(encoding="utf-8"))["version"].strip()
    files = plugin_files(root)
    folders = sorted({parent for f in files for parent in f.parents if parent != Path(".")})
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_NAME}-{version}.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr(_entry(f"{PLUGIN_NAME}/", True), b"")
        for folder in folders:
            archive.writestr(_entry(f"{PLUGIN_NAME}/{folder.as_posix()}/", True), b"")
        for relative in files:
            archive.writestr(_entry(f"{PLUGIN_NAME}/{relative.as_posix()}", False), (root / relative).read_bytes(),
                             compresslevel=9)  # fmt: skip
    return target


# --- the check -------------------------------------------------------------------------------------


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """local name -> module for ``import a.b as x`` and ``from a import b`` (b may be a module)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _bandit_findings(name: str, source: str) -> list[str]:
    """bandit -ll rules that apply to this kind of code (B102, B307, B301, B313-B320, B506, B602, B605, B614,
    B113, B501); a line marked ``# nosec`` is skipped, as bandit does."""
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as e:
        return [f"{name}:{e.lineno}: does not parse as Python ({e.msg})"]
    lines = source.splitlines()
    aliases = _module_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or "# nosec" in lines[node.lineno - 1]:
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        module = aliases.get(owner, owner)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}

        def is_true(key: str, keywords: dict = keywords) -> bool:
            value = keywords.get(key)
            return isinstance(value, ast.Constant) and value.value is True

        def is_false(key: str, keywords: dict = keywords) -> bool:
            value = keywords.get(key)
            return isinstance(value, ast.Constant) and value.value is False

        where = f"{name}:{node.lineno}"
        if isinstance(func, ast.Name) and called in ("eval", "exec"):
            found.append(f"{where}: {called}() (bandit B307/B102)")
        if is_true("shell"):
            found.append(f"{where}: subprocess with shell=True (bandit B602)")
        if owner == "os" and called in ("system", "popen"):
            found.append(f"{where}: os.{called} starts a shell (bandit B605)")
        if owner in ("pickle", "marshal", "cPickle", "dill") and called in ("load", "loads"):
            found.append(f"{where}: {owner}.{called} (bandit B301)")
        if owner == "yaml" and called == "load":
            loader = keywords.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = getattr(loader, "attr", getattr(loader, "id", ""))
            if loader_name not in ("SafeLoader", "CSafeLoader", "BaseLoader"):
                found.append(f"{where}: yaml.load without a safe loader (bandit B506)")
        if module.startswith(XML_PARSERS) and called in XML_PARSE_CALLS:
            found.append(f"{where}: {module}.{called} parses XML with the standard library (bandit B313-B320)")
        if owner == "torch" and called == "load" and not is_true("weights_only"):
            found.append(f"{where}: torch.load without weights_only=True (bandit B614)")
        if owner in ("requests", "httpx") and called in ("get", "post", "put", "delete", "head", "patch", "request"):
            if "timeout" not in keywords:
                found.append(f"{where}: {owner}.{called} without a timeout (bandit B113)")
            if is_false("verify"):
                found.append(f"{where}: {owner}.{called} with verify=False (bandit B501)")
    return found


def check(zip_path: Path, max_size: int = MAX_SIZE) -> list[str]:
    """Problems plugins.qgis.org would reject (or its security scan would flag); [] when the ZIP is fine."""
    problems: list[str] = []
    size = zip_path.stat().st_size
    if size > max_size:
        problems.append(f"the ZIP is {size} bytes; plugins.qgis.org accepts at most {max_size}")
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        return [*problems, f"{zip_path} is not a ZIP file"]
    with archive:
        names = archive.namelist()
        bad = archive.testzip()
        if bad:
            problems.append(f"bad ZIP entry (CRC) {bad}")
        for name in names:
            parts = name.rstrip("/").split("/")
            if ".." in parts or name.startswith("/") or "\\" in name:
                problems.append(f"{name}: path information is not allowed")
            if ".pyc" in name:
                problems.append(f"{name}: .pyc files are not allowed")
            for forbidden in sorted(FORBIDDEN_DIRS & set(parts)):
                problems.append(f"{name}: a '{forbidden}' folder is not allowed")
        tops = sorted({n.split("/")[0] for n in names})
        if len(tops) != 1 or not names or "/" not in names[0]:
            return [*problems, f"the ZIP must hold exactly one plugin folder; it holds {tops}"]
        package = tops[0]
        if not (package.isidentifier() and re.match(r"^[A-Za-z][A-Za-z0-9_-]+$", package)):
            problems.append(f"the folder name '{package}' is not a Python identifier starting with a letter")
        for required in ("__init__.py", "metadata.txt", "LICENSE"):
            if f"{package}/{required}" not in names:
                problems.append(f"{package}/{required} is missing")
        problems += _check_metadata(archive, package, names)
        for info in archive.infolist():
            if info.is_dir():
                continue
            problems += _check_file(archive, info)
    return problems


def _check_metadata(archive: zipfile.ZipFile, package: str, names: list[str]) -> list[str]:
    if f"{package}/metadata.txt" not in names:
        return []
    try:
        general = metadata(archive.read(f"{package}/metadata.txt").decode("utf-8"))
    except (configparser.Error, KeyError, UnicodeDecodeError) as e:
        return [f"metadata.txt cannot be read: {e}"]
    problems = [f"metadata.txt: the required field '{key}' is missing or empty"
                for key in REQUIRED_METADATA if not general.get(key, "").strip()]  # fmt: skip
    for key in BOOLEAN_METADATA:
        if key in general and general[key].strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"metadata.txt: {key}={general[key]} is not a boolean (True or False)")
    for key in URL_METADATA:
        url = general.get(key, "").strip()
        parsed = urlparse(url)
        if key in general and (url in PLACEHOLDER_URLS or parsed.scheme not in ("http", "https") or not parsed.netloc):
            problems.append(f"metadata.txt: {key}='{url}' is not a full http(s) URL")
    if "/" in general.get("author", ""):
        problems.append("metadata.txt: the author must not contain a slash")
    icon = general.get("icon", "").strip().removeprefix("./")
    if not icon or f"{package}/{icon}" not in names:
        problems.append(f"metadata.txt: the icon '{icon}' is not in the ZIP")
    if not re.match(r"^\d+\.\d+(\.\d+)?$", general.get("qgisMinimumVersion", "").strip()):
        problems.append("metadata.txt: qgisMinimumVersion must look like 3.40")
    return problems


def _check_file(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> list[str]:
    name = info.filename
    base = name.rsplit("/", 1)[-1]
    problems = []
    if any(part.startswith(".") and part not in ALLOWED_HIDDEN for part in name.split("/")):
        problems.append(f"{name}: hidden file")
    if name.lower().endswith(SUSPICIOUS_SUFFIXES):
        problems.append(f"{name}: executable or native code is not allowed")
    mode = info.external_attr >> 16
    if base.endswith(".py") and mode & 0o111:
        problems.append(f"{name}: a Python file with the executable bit")
    data = archive.read(info)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [*problems, f"{name}: a binary file (not UTF-8 text)"]
    if "\x00" in text:
        return [*problems, f"{name}: a binary file (NUL bytes)"]
    if base.endswith(".py"):
        problems += _bandit_findings(name, text)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="folder for the ZIP (default: dist)")
    parser.add_argument("--check", type=Path, metavar="ZIP", help="only check this ZIP")
    args = parser.parse_args(argv)
    target = args.check or build(args.out)
    problems = check(target)
    for problem in problems:
        sys.stderr.write(f"package: {problem}\n")
    if problems:
        return 1
    with zipfile.ZipFile(target) as archive:
        count = sum(1 for i in archive.infolist() if not i.is_dir())
    sys.stdout.write(f"{target} ({target.stat().st_size} bytes, {count} files): passes the plugins.qgis.org checks\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
