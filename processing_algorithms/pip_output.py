"""pip's output read as steps: a message per step worth showing and a progress fraction (no QGIS).

pip prints one line per distribution while it resolves and downloads (``Collecting x``, ``Processing
/path/x.whl``, ``Requirement already satisfied: x``), ``Downloading x.whl (35.9 MB)`` followed, with
``--progress-bar raw`` (pip 24.1+), by ``Progress <bytes> of <total>`` lines, then ``Installing
collected packages: a, b, c`` and at the end ``Successfully installed a-1 b-2``. Nothing is printed
while it installs, so that phase is measured by the ``.dist-info`` folders that appear in the
environment's site-packages (``count_installed``).

Progress of one pip run: resolving and downloading take the first ``RESOLVE_SHARE``; the number of
distributions is not known in advance, so each one brings the fraction a constant part closer to
that share (and a download moves it within its part by bytes); installing takes the rest, package by
package. The fraction never goes back.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

RESOLVE_SHARE = 0.6
STEP_RATIO = 0.92  # each resolved distribution closes 8 % of the gap to RESOLVE_SHARE
BIG_DOWNLOAD = 20_000_000  # downloads this large also report 25 %, 50 % and 75 %

_FROM = re.compile(r"\s+\(from .*\)$")
_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")


def normalise(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``typing_extensions`` and ``typing-extensions`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class PipProgress:
    """Feed pip's lines in order; ``fraction()`` is how far this pip run is (0 to 1)."""

    resolved: int = 0
    download: tuple[str, int, int] | None = None  # file, bytes done, total bytes
    to_install: list[str] = field(default_factory=list)
    installed: int = 0
    finished: bool = False
    _reported_quarters: int = 0
    _last: float = 0.0

    def feed(self, line: str) -> str | None:
        """Take one output line; returns a message for the user when the line is a step, else None."""
        text = line.strip()
        progress = _PROGRESS.match(text)
        if progress:
            return self._download_progress(int(progress.group(1)), int(progress.group(2)))
        self.download = None
        if text.startswith(("Collecting ", "Processing ", "Requirement already satisfied: ", "Obtaining ")):
            self.resolved += 1
            what = _FROM.sub("", text)
            if what.startswith("Processing "):
                return f"pip: using {os.path.basename(what[len('Processing '):])}"
            if what.startswith("Requirement already satisfied: "):
                return f"pip: already installed: {what.split(': ', 1)[1].split(' in ', 1)[0]}"
            return f"pip: collecting {what.split(' ', 1)[1]}"
        if text.startswith("Using cached "):
            return f"pip: using the cached {text[len('Using cached '):]}"
        if text.startswith("Downloading "):
            name = text[len("Downloading "):]
            size = re.search(r"\(([\d.]+ [kMG]?B)\)$", name)
            self.download = (name.split(" ")[0], 0, 0)
            self._reported_quarters = 0
            return f"pip: downloading {os.path.basename(name.split(' ')[0])}" + (f" ({size.group(1)})" if size else "")
        if text.startswith("Installing collected packages: "):
            self.to_install = [normalise(n.strip()) for n in text.split(": ", 1)[1].split(",") if n.strip()]
            return f"pip: installing {len(self.to_install)} packages: {', '.join(self.to_install)}"
        if text.startswith("Successfully installed "):
            self.finished = True
            count = len(text.split()) - 2
            return f"pip: installed {count} package{'s' if count != 1 else ''}"
        if text.startswith("ERROR:"):
            return f"pip: {text}"
        return None

    def _download_progress(self, done: int, total: int) -> str | None:
        if self.download is None:
            return None
        name = self.download[0]
        self.download = (name, done, total)
        if total < BIG_DOWNLOAD or total <= 0:
            return None
        quarters = min(3, done * 4 // total)
        if quarters > self._reported_quarters:
            self._reported_quarters = quarters
            return f"pip: {quarters * 25} % of {os.path.basename(name)} ({done / 1e6:.0f} of {total / 1e6:.0f} MB)"
        return None

    def fraction(self) -> float:
        if self.finished:
            value = 1.0
        elif self.to_install:
            value = RESOLVE_SHARE + (1 - RESOLVE_SHARE) * min(self.installed, len(self.to_install)) / len(self.to_install)
        else:
            value = RESOLVE_SHARE * (1 - STEP_RATIO ** self.resolved)
            if self.download and self.download[2] > 0:  # a download moves within the next part, by bytes
                value += RESOLVE_SHARE * STEP_RATIO ** self.resolved * (1 - STEP_RATIO) * self.download[1] / self.download[2]
        self._last = max(self._last, value)
        return self._last


def site_packages(venv: str) -> list[str]:
    """The site-packages folders of a virtual environment (POSIX and Windows layouts)."""
    posix = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
    return posix + glob.glob(os.path.join(venv, "Lib", "site-packages"))


def installed(folders: list[str]) -> dict[str, float]:
    """Normalised project name -> modification time of its ``.dist-info`` folder, for every installed project."""
    projects = {}
    for folder in folders:
        for path in glob.glob(os.path.join(folder, "*.dist-info")):
            try:
                projects[normalise(os.path.basename(path)[: -len(".dist-info")].rsplit("-", 1)[0])] = os.path.getmtime(path)
            except OSError:
                continue  # pip is replacing it right now
    return projects


def count_installed(folders: list[str], names: list[str], since: float) -> int:
    """How many of ``names`` have a ``.dist-info`` folder written at or after ``since`` (seconds)."""
    return sum(1 for name, written in installed(folders).items() if name in set(names) and written >= since)
