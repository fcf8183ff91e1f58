"""Modality names → internal keys, as terratorch 1.2.11 resolves them (terratorch 1.2.11
``models/backbones/terramind/model/terramind_register.py`` name aliases).

An exact v1 internal key (``untok_sen2l2a@224``, ``tok_lulc@224``, ...) is taken as it is, like
terratorch does for any ``MODALITY_INFO`` key; anything else goes through the substring rules of
``models.modalities``. Coordinates and captions are out of scope and rejected with a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..core.errors import ConfigError, UnsupportedModalityError
from ..core.modalities import resolve_input_key, resolve_output_key
from .embeddings import EMBEDDING_SPECS

_SEQUENCE_WORDS = ("coord", "caption", "text", "location")


def _reject_sequences(name: str) -> None:
    lowered = name.lower()
    if any(word in lowered for word in _SEQUENCE_WORDS):
        raise UnsupportedModalityError(
            f"'{name}' is a sequence modality (coordinates or captions); this plugin supports image modalities only"
        )


def input_key(name: str) -> str:
    """Encoder key of an input name (``S2L2A``, ``S1``, ``LULC``, ``untok_dem@224``, ...)."""
    if name in EMBEDDING_SPECS:
        return name
    try:
        return resolve_input_key(name)
    except UnsupportedModalityError:
        _reject_sequences(name)
        raise


def output_key(name: str) -> str:
    """Decoder key of an output (or TiM) name; only tokenized image keys can be generated."""
    if name in EMBEDDING_SPECS:
        if not EMBEDDING_SPECS[name].tokenized:
            raise UnsupportedModalityError(f"'{name}' is a raw-pixel input key and cannot be generated")
        return name
    try:
        return resolve_output_key(name)
    except UnsupportedModalityError:
        _reject_sequences(name)
        raise


def name_mapping(names: Iterable[str], resolve) -> dict[str, str]:  # noqa: ANN001 - a resolver function
    """``{user name: internal key}`` in the given order; two names for one key are an error."""
    mapping: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"modality names must be strings, got {name!r}")
        key = resolve(name)
        clash = [other for other, k in mapping.items() if k == key]
        if clash:
            raise ConfigError(f"modalities '{clash[0]}' and '{name}' both resolve to '{key}'; give each only once")
        mapping[name] = key
    return mapping
