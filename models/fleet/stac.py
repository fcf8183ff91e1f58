"""Scenes from a local STAC Catalog, Collection or ItemCollection (read with ``pystac``): one per Item.

Which asset holds which modality, first match wins:

1. ``--asset MODALITY=KEY`` (``overrides``): the asset KEY is that modality; ``MODALITY=K1,K2,...``:
   one single-band asset per band, in the modality's band order (stacked into a VRT).
2. an asset whose key or one of whose roles is a modality name (``s2l2a``, ``S1GRD``, ``dem``,
   ``lulc``, ``ndvi``, ...) or an alias: ``elevation`` → DEM, ``landcover``/``land_cover`` → LULC,
   ``visual``/``tci``/``rgb`` → S2RGB (case-insensitive).
3. single-band assets: ``B01`` … ``B12`` with ``B8A`` (all twelve) → S2L2A, the same with ``B10``
   (all thirteen) → S2L1C, ``vv`` + ``vh`` → S1GRD; they are stacked into one VRT per modality
   (``Scene.bands``; ``vrt.py``).

Relative hrefs are relative to the Item's file (or to the ItemCollection's file).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..core.errors import ConfigError, TerraMindError
from ..core.modalities import MODALITIES, get_modality
from .scenes import Scene, safe_id

ALIASES = {"elevation": "DEM", "landcover": "LULC", "land_cover": "LULC", "visual": "S2RGB", "tci": "S2RGB",
           "rgb": "S2RGB"}  # fmt: skip
S2L2A_KEYS = MODALITIES["S2L2A"].band_labels  # B01 ... B12 with B8A
S2L1C_KEYS = MODALITIES["S2L1C"].band_labels
BAND_STACKS = (("S2L1C", S2L1C_KEYS), ("S2L2A", S2L2A_KEYS), ("S1GRD", ("vv", "vh")))


def _modality_of(name: str) -> str | None:
    name = name.strip().lower()
    if name in ALIASES:
        return ALIASES[name]
    for m in MODALITIES:
        if m.lower() == name:
            return m
    return None


def parse_overrides(pairs: list[str]) -> dict[str, tuple[str, ...]]:
    """``["S2L2A=visual", "S1GRD=vv,vh"]`` -> ``{"S2L2A": ("visual",), "S1GRD": ("vv", "vh")}``."""
    out = {}
    for pair in pairs:
        modality, sep, keys = pair.partition("=")
        if not sep or not keys.strip():
            raise ConfigError(f"--asset takes MODALITY=KEY (or MODALITY=KEY1,KEY2,... per band), got '{pair}'")
        name = get_modality(modality).name
        out[name] = tuple(k.strip() for k in keys.split(",") if k.strip())
        if len(out[name]) not in (1, len(get_modality(name).bands)):
            raise ConfigError(f"--asset {pair}: {name} takes one asset or one per band "
                              f"({len(get_modality(name).bands)}: {', '.join(get_modality(name).band_labels)})")  # fmt: skip
    return out


def _href(asset: Any, base: str) -> str:
    href = asset.get_absolute_href() or asset.href
    if "://" in href or os.path.isabs(href) or href.startswith("/vsi"):
        return href
    return os.path.normpath(os.path.join(base, href))


def item_assets(item: Any, base: str, overrides: dict[str, tuple[str, ...]]) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(modality -> href, modality -> per-band hrefs) of one ``pystac.Item``."""
    assets = dict(item.assets)
    lower = {k.lower(): k for k in assets}
    single: dict[str, str] = {}
    bands: dict[str, tuple[str, ...]] = {}
    for modality, keys in overrides.items():
        found = [lower.get(k.lower()) for k in keys]
        if None in found:
            continue  # this item lacks it: the scene has no such modality
        hrefs = tuple(_href(assets[k], base) for k in found if k)
        if len(hrefs) == 1:
            single[modality] = hrefs[0]
        else:
            bands[modality] = hrefs
    for key, asset in assets.items():
        for name in (key, *(asset.roles or ())):
            modality = _modality_of(name)
            if modality and modality not in single and modality not in bands:
                single[modality] = _href(asset, base)
                break
    for modality, keys in BAND_STACKS:
        if modality in single or modality in bands or (modality == "S2L2A" and "S2L1C" in bands):
            continue
        if all(k.lower() in lower for k in keys):
            bands[modality] = tuple(_href(assets[lower[k.lower()]], base) for k in keys)
    return single, bands


def read_stac(path: str, overrides: dict[str, tuple[str, ...]]) -> list[Scene]:
    """One ``Scene`` per Item of the STAC file ``path`` (Catalog/Collection: all Items, recursively)."""
    try:
        import pystac
    except ImportError:
        raise ConfigError("reading STAC needs pystac in the fleet's Python (pip install pystac)") from None
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            kind = json.load(f).get("type")
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_file(path))
        elif kind == "Feature":
            items = [pystac.Item.from_file(path)]
        elif kind in ("Catalog", "Collection"):
            items = list(pystac.Catalog.from_file(path).get_items(recursive=True))
        else:
            raise ConfigError(f"'{path}' is not a STAC Catalog, Collection, Item or ItemCollection (type {kind!r})")
    except TerraMindError:
        raise
    except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as e:
        raise ConfigError(f"cannot read the STAC file '{path}': {e}") from None
    scenes = []
    for item in items:
        item_base = os.path.dirname(item.get_self_href()) if item.get_self_href() else base
        single, bands = item_assets(item, item_base, overrides)
        if not single and not bands:
            raise ConfigError(f"STAC item '{item.id}': no asset maps to a modality (keys: {', '.join(item.assets)}); "
                              "name one with --asset MODALITY=KEY")  # fmt: skip
        scenes.append(Scene(safe_id(item.id), single, bands))
    if not scenes:
        raise ConfigError(f"the STAC file '{path}' has no items")
    return scenes
