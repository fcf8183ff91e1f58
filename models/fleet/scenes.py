"""The fleet's scenes: which rasters of which modality make up each scene.

Sources (``load_scenes``; several may be given, their scenes are added up):

- a **CSV** file (``.csv``) with a header row: one column per modality (``S2L2A``, ``S1GRD``, ...,
  case-insensitive) and optionally ``scene`` (or ``id``) with the scene id; one row per scene.
- a **text** file (any other name): one raster path per line (``#`` starts a comment), all of one
  modality (``modality``: by default the template's only modality).
- a **glob** (``data/s2/*.tif``, quoted), all of one modality; or ``MODALITY=GLOB``
  (``S1GRD=data/s1/*.tif``): files of several globs make one scene when their names (without
  extension) are equal.
- a raster file (``.tif``, ``.vrt``, ...): one scene of one modality.
- a local **STAC** Catalog, Collection or ItemCollection (``.json``/``.geojson``): one scene per
  Item (``stac.py``).

Relative paths in a list are relative to the list's folder. A scene's id is the ``scene`` column,
the Item id, or the file name without extension of its first raster, made safe for file names.
"""

from __future__ import annotations

import csv
import glob as _glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.errors import ConfigError, TerraMindError
from ..core.modalities import get_modality

GLOB_CHARS = re.compile(r"[*?\[]")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")  # a single raster given as a source is one scene
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Scene:
    id: str
    assets: dict[str, str] = field(default_factory=dict)  # canonical modality name -> path or URL
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)  # modality -> one raster per band (STAC)


def safe_id(text: str) -> str:
    """``text`` as a file-name-safe scene id (letters, digits, ``. _ -``)."""
    ident = UNSAFE.sub("_", text).strip("._")
    if not ident:
        raise ConfigError(f"cannot make a scene id of {text!r}")
    return ident


def modality_name(text: str) -> str:
    return get_modality(text.strip()).name


def _stem(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    return name.split("?")[0].rsplit(".", 1)[0] if "." in name else name


def _resolve(path: str, base: str) -> str:
    path = os.path.expanduser(path.strip())
    if "://" in path or path.startswith("/vsi") or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the scene list '{path}': {getattr(e, 'strerror', None) or e}") from None


def read_csv(path: str) -> list[Scene]:
    base = os.path.dirname(os.path.abspath(path))
    rows = list(csv.reader(_read_lines(path)))
    rows = [r for r in rows if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError(f"scene list '{path}' is empty")
    header = [h.strip() for h in rows[0]]
    id_col = next((i for i, h in enumerate(header) if h.lower() in ("scene", "id")), None)
    columns = {}
    for i, h in enumerate(header):
        if i == id_col:
            continue
        try:
            columns[i] = modality_name(h)
        except TerraMindError:
            raise ConfigError(f"scene list '{path}': column '{h}' is not a modality (S2L2A, S1GRD, ...) "
                              "nor 'scene'") from None  # fmt: skip
    scenes = []
    for n, row in enumerate(rows[1:], start=2):
        assets = {m: _resolve(row[i], base) for i, m in columns.items() if i < len(row) and row[i].strip()}
        if not assets:
            raise ConfigError(f"scene list '{path}', line {n}: no raster path")
        ident = row[id_col].strip() if id_col is not None and id_col < len(row) and row[id_col].strip() else None
        scenes.append(Scene(safe_id(ident or _stem(next(iter(assets.values())))), assets))
    return scenes


def read_text(path: str, modality: str) -> list[Scene]:
    base = os.path.dirname(os.path.abspath(path))
    lines = [line.split("#", 1)[0].strip() for line in _read_lines(path)]
    return [Scene(safe_id(_stem(p)), {modality: _resolve(p, base)}) for p in lines if p]


def expand_globs(patterns: dict[str, str]) -> list[Scene]:
    """Scenes of ``{modality: glob}``; files of different modalities pair up by name without extension."""
    by_stem: dict[str, dict[str, str]] = {}
    for modality, pattern in patterns.items():
        files = sorted(_glob.glob(os.path.expanduser(pattern)))
        if not files:
            raise ConfigError(f"no file matches {pattern!r} ({modality})")
        for f in files:
            by_stem.setdefault(_stem(f), {})[modality] = os.path.abspath(f)
    return [Scene(safe_id(stem), assets) for stem, assets in sorted(by_stem.items())]


def load_scenes(sources: Sequence[str], modality: str | None = None, assets: dict[str, str] | None = None) -> list[Scene]:
    """The scenes of every source (see the module's docstring), in order; ids must be unique.

    ``modality``: of single-modality lists and globs; ``assets``: STAC asset overrides
    (``{MODALITY: asset key}``)."""
    scenes: list[Scene] = []
    globs: dict[str, str] = {}
    for source in sources:
        key, sep, rest = source.partition("=")
        if sep and not os.path.exists(source) and _is_modality(key):
            globs[modality_name(key)] = rest
        elif os.path.isfile(source):
            lower = source.lower()
            if lower.endswith((".json", ".geojson")):
                from .stac import read_stac

                scenes += read_stac(source, assets or {})
            elif lower.endswith(".csv"):
                scenes += read_csv(source)
            elif lower.endswith(RASTER_SUFFIXES):
                scenes.append(Scene(safe_id(_stem(source)), {_need_modality(modality, source): os.path.abspath(source)}))
            else:
                scenes += read_text(source, _need_modality(modality, source))
        elif GLOB_CHARS.search(source):
            globs[_need_modality(modality, source)] = source
        else:
            raise ConfigError(f"scene source '{source}' is neither a file nor a glob pattern")
    if globs:
        scenes += expand_globs(globs)
    seen: dict[str, Scene] = {}
    for s in scenes:
        if s.id in seen:
            raise ConfigError(f"two scenes have the id '{s.id}' ({_first(seen[s.id])} and {_first(s)}); "
                              "give ids in a CSV 'scene' column")  # fmt: skip
        seen[s.id] = s
    if not scenes:
        raise ConfigError("no scenes: the scene sources list no raster")
    return scenes


def _first(scene: Scene) -> str:
    return next(iter(scene.assets.values()), None) or next(iter(scene.bands.values()), ("?",))[0]


def _is_modality(text: str) -> bool:
    try:
        modality_name(text)
        return True
    except TerraMindError:
        return False


def _need_modality(modality: str | None, source: str) -> str:
    if not modality:
        raise ConfigError(f"'{source}' lists rasters of one modality: say which with --modality "
                          "(or use MODALITY=GLOB, a CSV with a header or a template with one input)")  # fmt: skip
    return modality_name(modality)
