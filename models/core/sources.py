"""What a raster file is made of, checked without GDAL: the local source files a VRT names.

``missing_vrt_sources(path)`` lists the local files a VRT (and any VRT it names, recursively) refers to
that do not exist. GDAL opens such a VRT without complaint and fails, or fills, only when the missing
part is read; the worker and the QGIS side refuse it up front with the missing files named. Remote
(``/vsicurl/``, ``http://``) and driver-prefixed (``NETCDF:"f.nc":var``) sources are not checked here:
a read of them that fails is an error at that read (``engine/reader.py``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

MAX_DEPTH = 8  # VRTs naming VRTs


def is_vrt(path: str) -> bool:
    return isinstance(path, str) and path.lower().endswith(".vrt") and os.path.isfile(path)


def _local(name: str) -> bool:
    return not (name.startswith("/vsi") or "://" in name or (":" in name and not os.path.splitdrive(name)[0]
                                                            and name.split(":", 1)[0].isupper()))  # fmt: skip


def missing_vrt_sources(path: str, _depth: int = 0) -> list[str]:
    """The local source files of the VRT ``path`` that do not exist (empty: none missing, or not a VRT)."""
    if not is_vrt(path) or _depth > MAX_DEPTH:
        return []
    try:
        # The user's own local VRT. expat 2.4.1+ bounds entity expansion (Debian 12 ships 2.5.0) and ElementTree
        # resolves no external entities, so the XML attacks bandit B314 warns of do not apply here.
        root = ET.parse(path).getroot()  # nosec B314
    except (ET.ParseError, OSError):
        return []  # not for us to judge: GDAL reports a malformed file when it opens it
    missing: list[str] = []
    folder = os.path.dirname(os.path.abspath(path))
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or not _local(name):
            continue
        full = os.path.join(folder, name) if element.get("relativeToVRT") == "1" else name
        if not os.path.exists(full):
            if full not in missing:
                missing.append(full)
        elif full.lower().endswith(".vrt"):
            missing += [m for m in missing_vrt_sources(full, _depth + 1) if m not in missing]
    return missing


def missing_sources_message(what: str, path: str, missing: list[str]) -> str:
    """The one message for a VRT with missing sources (``what``: the layer as the caller names it)."""
    shown = ", ".join(f"'{m}'" for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"{what}: the VRT '{path}' refers to {len(missing)} source file(s) that do not exist ({shown}); "
            "those parts cannot be read: restore the files or rebuild the VRT")
