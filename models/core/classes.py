"""Class names and colours of a segmentation model's output (torch-free).

Precedence: a ``classes`` parameter given by the user, then the model card's classes, then the
config's ``class_names`` with the default palette, then "Class <i>" with the default palette.

The parameter is text, one class per entry separated by ``;`` or new lines:
``"<value>: <name> [#RRGGBB]"`` (e.g. ``"0: Others #D9D9D9; 1: Flood #1F78B4"``), or a JSON list of
``{"value": 0, "name": "Others", "color": "#D9D9D9"}``. Values must be 0 … K-1; classes not
listed keep their defaults.

Default palette: class 0 a light grey (it is usually the background: "Others", "Not burned"),
then the ten colours of ColorBrewer/Tableau "category10" in order, then repeated darker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .errors import ConfigError
from .modalities import ClassInfo

BACKGROUND = "#D9D9D9"
CATEGORY10 = ("#1F77B4", "#D62728", "#2CA02C", "#FF7F0E", "#9467BD",
              "#8C564B", "#E377C2", "#17BECF", "#BCBD22", "#7F7F7F")  # fmt: skip
_ENTRY = re.compile(r"^\s*(\d+)\s*[:=]\s*(.*?)\s*(#[0-9A-Fa-f]{6})?\s*$")


def default_color(value: int) -> str:
    """The default palette's colour of class ``value``."""
    if value == 0:
        return BACKGROUND
    base = CATEGORY10[(value - 1) % len(CATEGORY10)]
    darken = 0.7 ** ((value - 1) // len(CATEGORY10))
    r, g, b = (int(int(base[i : i + 2], 16) * darken) for i in (1, 3, 5))
    return f"#{r:02X}{g:02X}{b:02X}"


def default_classes(num_classes: int, names: Sequence[str] | None = None) -> tuple[ClassInfo, ...]:
    """``num_classes`` classes named ``names`` (or "Class <i>") with the default palette."""
    return tuple(
        ClassInfo(i, str(names[i]) if names else f"Class {i}", default_color(i)) for i in range(num_classes)
    )


def parse_classes(text: str, num_classes: int) -> dict[int, ClassInfo]:
    """The classes a user's ``classes`` parameter sets (see the module docstring)."""
    text = text.strip()
    if not text:
        return {}
    entries: list[tuple[int, str, str | None]] = []
    if text.startswith("["):
        try:
            items = json.loads(text)
            entries = [(int(d["value"]), str(d.get("name", "")), d.get("color")) for d in items]
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"classes: not a valid JSON list of {{value, name, color}} objects ({e})") from None
    else:
        for part in filter(str.strip, re.split(r"[;\n]", text)):
            m = _ENTRY.match(part)
            if not m:
                raise ConfigError(f"classes: cannot read '{part.strip()}'; write '<value>: <name> [#RRGGBB]'")
            entries.append((int(m.group(1)), m.group(2), m.group(3)))
    out: dict[int, ClassInfo] = {}
    for value, name, color in entries:
        if not 0 <= value < num_classes:
            raise ConfigError(f"classes: value {value} is outside 0..{num_classes - 1} (the model has {num_classes} classes)")
        if color is not None and not re.fullmatch(r"#[0-9A-Fa-f]{6}", str(color)):
            raise ConfigError(f"classes: colour '{color}' of class {value} is not #RRGGBB")
        out[value] = ClassInfo(value, name or f"Class {value}", (color or default_color(value)).upper())
    return out


def resolve_classes(
    num_classes: int,
    *,
    names: Sequence[str] | None = None,
    card_classes: Sequence[ClassInfo] | None = None,
    override: str | None = None,
) -> tuple[ClassInfo, ...]:
    """The final class list: override > card > config names > defaults (per class)."""
    classes = {c.value: c for c in default_classes(num_classes, names)}
    for c in card_classes or ():
        if not 0 <= c.value < num_classes:
            raise ConfigError(f"model card class value {c.value} is outside 0..{num_classes - 1}")
        classes[c.value] = c
    classes.update(parse_classes(override or "", num_classes))
    return tuple(classes[i] for i in range(num_classes))
