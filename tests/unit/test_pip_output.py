"""processing_algorithms/pip_output.py on pip's real output (pip 26.3, ``--progress-bar raw``), without QGIS.

The set-up algorithm feeds it pip's lines (tests/qgis/test_set_up_environment.py runs a real install).
"""

from __future__ import annotations

import os
import time

from terramind_qgis.processing_algorithms.pip_output import (
    RESOLVE_SHARE,
    PipProgress,
    count_installed,
    installed,
    normalise,
    site_packages,
)

# Lines as pip 26.3 printed them installing the plugin's requirements (shortened to a few packages).
PIP_LINES = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple
Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (from -r requirements.txt (line 3))
Collecting rasterio>=1.4 (from -r requirements.txt (line 5))
  Downloading rasterio-1.4.4-cp311-cp311-manylinux_2_28_x86_64.whl (35.9 MB)
Progress 0 of 35881871
Progress 262144 of 35881871
Progress 10000000 of 35881871
Progress 29097984 of 35881871
Progress 35881871 of 35881871
Requirement already satisfied: numpy<2 in ./lib/python3.11/site-packages (1.26.4)
Collecting PyYAML>=6 (from -r requirements.txt (line 15))
  Using cached pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.whl (828 kB)
INFO: pip is looking at multiple versions of ml-dtypes to determine which version is compatible.
Installing collected packages: PyYAML, rasterio, torch
Successfully installed PyYAML-6.0.4 rasterio-1.4.4 torch-2.13.0+cpu
""".splitlines()


def _run(lines):
    pip = PipProgress()
    steps = [(pip.feed(line), pip.fraction()) for line in lines]
    return pip, steps


def test_each_step_of_pip_is_one_message():
    _, steps = _run(PIP_LINES)
    messages = [m for m, _ in steps if m]
    assert messages == [
        "pip: using torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "pip: collecting rasterio>=1.4",
        "pip: downloading rasterio-1.4.4-cp311-cp311-manylinux_2_28_x86_64.whl (35.9 MB)",
        "pip: 25 % of rasterio-1.4.4-cp311-cp311-manylinux_2_28_x86_64.whl (10 of 36 MB)",
        "pip: 75 % of rasterio-1.4.4-cp311-cp311-manylinux_2_28_x86_64.whl (29 of 36 MB)",
        "pip: already installed: numpy<2",
        "pip: collecting PyYAML>=6",
        "pip: using the cached pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.whl (828 kB)",
        "pip: installing 3 packages: pyyaml, rasterio, torch",
        "pip: installed 3 packages",
    ]


def test_the_fraction_moves_with_every_distribution_and_download_and_never_goes_back():
    pip, steps = _run(PIP_LINES)
    fractions = [f for _, f in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1.0
    during_download = [f for line, (_, f) in zip(PIP_LINES, steps) if line.startswith("Progress")]
    assert len(set(during_download)) == 5  # each Progress line moves the bar within the download's part
    before_install = fractions[PIP_LINES.index("Installing collected packages: PyYAML, rasterio, torch") - 1]
    assert 0 < before_install < RESOLVE_SHARE
    assert fractions[PIP_LINES.index("Installing collected packages: PyYAML, rasterio, torch")] == RESOLVE_SHARE


def test_the_install_phase_moves_package_by_package():
    pip = PipProgress()
    pip.feed("Installing collected packages: a, b, c, d")
    seen = []
    for count in range(5):
        pip.installed = count
        seen.append(pip.fraction())
    assert seen == [RESOLVE_SHARE + (1 - RESOLVE_SHARE) * k / 4 for k in range(5)]
    pip.installed = 2  # a count that drops (a folder being replaced) does not move the bar back
    assert pip.fraction() == 1.0


def test_errors_are_passed_on_and_other_lines_are_not_steps():
    pip = PipProgress()
    error = "ERROR: No matching distribution found for nothing==0"
    assert pip.feed(error) == f"pip: {error}"
    assert pip.feed("WARNING: Location 'file:///opt/pypi/simple/x/' is ignored") is None
    assert pip.feed("Progress 10 of 20") is None  # no download announced
    assert pip.fraction() == 0


def test_installed_projects_are_read_from_dist_info_folders(tmp_path):
    venv = tmp_path / "env"
    folder = venv / "lib" / "python3.11" / "site-packages"
    for name in ("PyYAML-6.0.4.dist-info", "typing_extensions-4.16.0.dist-info", "torch-2.13.0+cpu.dist-info"):
        (folder / name).mkdir(parents=True)
    old = folder / "typing_extensions-4.16.0.dist-info"
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert site_packages(str(venv)) == [str(folder)]
    assert set(installed([str(folder)])) == {"pyyaml", "typing-extensions", "torch"}
    names = [normalise(n) for n in ("PyYAML", "typing_extensions", "torch", "rasterio")]
    assert count_installed([str(folder)], names, since=time.time() - 60) == 2  # typing-extensions is older
    assert count_installed([str(folder)], names, since=0) == 3
