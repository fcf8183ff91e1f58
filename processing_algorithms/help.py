"""Algorithm help, loaded once from ``resources/help/terramind.yaml`` (as QGIS's processing/algs/help).

The file holds, per algorithm id, a one-sentence ``description`` and the ``help`` text: paragraphs
separated by blank lines, ``**bold**`` and ``*italic*``; ``short_help`` renders it as the small
HTML subset the Processing dialog's help panel shows.
"""

from __future__ import annotations

import functools
import html
import os
import re

import yaml

HELP_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "help", "terramind.yaml")


@functools.lru_cache(maxsize=1)
def _entries() -> dict[str, dict[str, str]]:
    with open(HELP_FILE, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def _inline(text: str) -> str:
    text = html.escape(" ".join(text.split()), quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)


def short_help(algorithm_id: str) -> str:
    """The dialog help of ``algorithm_id`` as HTML paragraphs."""
    paragraphs = [p for p in _entries()[algorithm_id]["help"].split("\n\n") if p.strip()]
    return "".join(f"<p>{_inline(p)}</p>" for p in paragraphs)


def description(algorithm_id: str) -> str:
    """The one-sentence description of ``algorithm_id`` (toolbox tooltip)."""
    return _entries()[algorithm_id]["description"]


def algorithm_ids() -> list[str]:
    return list(_entries())
