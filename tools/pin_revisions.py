"""Pin the official catalogue entries to the Hugging Face Hub's current commit hashes.

Run with network access (the project venv)::

    .venv/bin/python tools/pin_revisions.py            # rewrite models/core/catalogue.py
    .venv/bin/python tools/pin_revisions.py --dry-run  # only print what it would write

For every distinct repo of the official entries it asks ``HfApi().model_info(repo, revision=<current>,
files_metadata=True)`` for the commit hash (``sha``) and the weights file's LFS sha256, and rewrites
the block between ``# BEGIN PINNED_REVISIONS`` and ``# END PINNED_REVISIONS`` in
models/core/catalogue.py. Offline (``HF_HUB_OFFLINE=1`` or no connection) it says so on stderr and exits
with status 1 without touching the file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / ".pluginpath"))

from terramind_qgis.models.core import catalogue  # noqa: E402
from terramind_qgis.models.weights.hub import hub_offline  # noqa: E402

CATALOGUE_FILE = REPO_ROOT / "models" / "catalogue.py"
BLOCK = re.compile(r"(# BEGIN PINNED_REVISIONS\n)(.*?)(# END PINNED_REVISIONS)", re.S)


def fetch_pins() -> dict[str, tuple[str, str | None]]:
    """repo id -> (commit hash, sha256 of the catalogue's weights file) from the Hub."""
    from huggingface_hub import HfApi

    api = HfApi()
    pins: dict[str, tuple[str, str | None]] = {}
    for spec in catalogue.OFFICIAL:
        src = spec.weights
        if src is None or src.repo_id in pins:
            continue
        info = api.model_info(src.repo_id, revision=src.revision, files_metadata=True)
        sibling = next((s for s in info.siblings or [] if s.rfilename == src.filename), None)
        if sibling is None:
            raise SystemExit(f"{src.repo_id}@{info.sha} has no file {src.filename}; fix the catalogue first")
        lfs = getattr(sibling, "lfs", None)
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        pins[src.repo_id] = (str(info.sha), sha256)
    return pins


def render(pins: dict[str, tuple[str, str | None]]) -> str:
    lines = ["PINNED_REVISIONS: dict[str, tuple[str, str | None]] = {"]
    for repo, (commit, sha256) in sorted(pins.items()):
        lines.append(f'    "{repo}": ("{commit}", {repr(sha256)}),'.replace("'", '"'))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the pinned block, do not write")
    args = parser.parse_args(argv)
    if hub_offline():
        sys.stderr.write("pin_revisions: HF_HUB_OFFLINE is set; this tool needs the Hugging Face Hub\n")
        return 1
    try:
        pins = fetch_pins()
    except Exception as e:  # no connection, DNS, HTTP errors: one line, non-zero exit
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        sys.stderr.write(f"pin_revisions: cannot reach the Hugging Face Hub ({reason}); nothing changed\n")
        return 1
    block = render(pins)
    if args.dry_run:
        sys.stdout.write(block)
        return 0
    text = CATALOGUE_FILE.read_text(encoding="utf-8")
    new, count = BLOCK.subn(lambda m: m.group(1) + block + m.group(3), text)
    if count != 1:
        sys.stderr.write(f"pin_revisions: no PINNED_REVISIONS block found in {CATALOGUE_FILE}\n")
        return 1
    CATALOGUE_FILE.write_text(new, encoding="utf-8")
    sys.stdout.write(f"pinned {len(pins)} repositories in {CATALOGUE_FILE}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
