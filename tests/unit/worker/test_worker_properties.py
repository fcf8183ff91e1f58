"""Property-based test of the worker as the safety boundary (hypothesis).

Random small rasters — shapes from 1 x 1, data types, band counts, nodata values and placements,
NaN/inf, CRSs and pixel sizes, bottom-up storage — go through the worker's command line function
(``cli.run_job_file``, what ``python -m ... job.json`` runs, with library warnings captured as the
command line captures them) as reconstruction jobs of the reduced test tokenizers. Whatever the raster:

- exit 0: every output is a readable GeoTIFF on the working grid, and where the input is on its own
  10 m grid, nodata exactly where an input pixel was nodata, NaN or inf (in any band);
- or exit 1/2: exactly one line on stderr (no traceback) and an ``error`` event, and no file written;
- never another exit code, and the input files are byte-identical afterwards.

CI runs a bounded, derandomized set (``TERRAMIND_PROPERTY_EXAMPLES``, default 25); run it with a large
count locally: ``TERRAMIND_PROPERTY_EXAMPLES=500 pytest tests/unit/worker/test_worker_properties.py``.
The jobs run in this process (the worker's subprocess start, mostly importing torch, would be 20 times
the run itself); ``test_worker_safety.py`` proves the same rules through real subprocesses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine
from worker_fixtures import reconstruct_job, write_job

from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.worker.cli import run_job_file
from terramind_qgis.models.worker.events import EventStream, WorkerProgress, capture_library_warnings

EXAMPLES = int(os.environ.get("TERRAMIND_PROPERTY_EXAMPLES", "25"))
MODELS = {"DEM": "test_tokenizer_dem", "S1RTC": "test_tokenizer_s1rtc", "LULC": "test_tokenizer_lulc",
          "S2L2A": "test_tokenizer_s2l2a"}  # fmt: skip
RANGES = {"DEM": (-50.0, 3000.0), "S1RTC": (-30.0, 5.0), "LULC": (0.0, 9.0), "S2L2A": (0.0, 10000.0)}
DTYPES = ("uint8", "int16", "uint16", "int32", "float32", "float64")
GRIDS = {  # name -> (CRS, pixel size)
    "utm10": ("EPSG:32633", 10.0), "utm20": ("EPSG:32633", 20.0), "utm7": ("EPSG:32633", 7.0),
    "wgs84": ("EPSG:4326", 1e-4), "mercator": ("EPSG:3857", 10.0),
}  # fmt: skip


@st.composite
def rasters(draw):
    modality = draw(st.sampled_from(list(MODELS)))
    bands = max(1, get_modality(modality).num_bands + draw(st.sampled_from([0, 0, 0, 0, 1, -1])))
    return {
        "modality": modality, "bands": bands,
        "height": draw(st.integers(1, 72)), "width": draw(st.integers(1, 72)),
        "dtype": draw(st.sampled_from(DTYPES)), "grid": draw(st.sampled_from(list(GRIDS))),
        "bottom_up": draw(st.booleans()), "seed": draw(st.integers(0, 2**32 - 1)),
        "nodata": draw(st.sampled_from(["none", "none", "in_data", "sentinel", "nan"])),
        "holes": draw(st.sampled_from([0.0, 0.0, 0.05, 0.5, 1.0])),  # share of pixels set to nodata / NaN / inf
    }  # fmt: skip


def make_raster(spec: dict, path: Path) -> tuple[np.ndarray, float | None]:
    """Write the raster ``spec`` describes; returns its data as stored north-up and its nodata value."""
    rng = np.random.default_rng(spec["seed"])
    dtype, (h, w, c) = np.dtype(spec["dtype"]), (spec["height"], spec["width"], spec["bands"])
    low, high = RANGES[spec["modality"]]
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        low, high = max(low, info.min), min(high, info.max)
    data = rng.uniform(low, high, (c, h, w))
    if spec["modality"] == "LULC" or dtype.kind in "ui":
        data = np.round(data)
    data = data.astype(dtype)
    holes = rng.random((h, w)) < spec["holes"]
    band_of_hole = rng.integers(0, c, (h, w))
    nodata = None
    if spec["nodata"] == "in_data":
        nodata = float(data.flat[0])
    elif spec["nodata"] == "sentinel":
        nodata = -9999.0 if dtype.kind != "u" else float(np.iinfo(dtype).max)
    elif spec["nodata"] == "nan" and dtype.kind == "f":
        nodata = float("nan")
    for b in range(c):
        where = holes & (band_of_hole == b)
        if dtype.kind == "f":
            data[b][where] = rng.choice([np.nan, np.inf, -np.inf] + ([nodata] if nodata is not None else []), where.sum())
        elif nodata is not None and np.can_cast(np.min_scalar_type(nodata), dtype):
            data[b][where] = nodata
    crs, res = GRIDS[spec["grid"]]
    x0, y0 = (14.0, 45.0) if crs == "EPSG:4326" else ((1.6e6, 5.6e6) if crs == "EPSG:3857" else (500000.0, 5000000.0))
    transform = Affine(res, 0.0, x0, 0.0, -res, y0)
    stored = data
    if spec["bottom_up"]:
        transform = Affine(res, 0.0, x0, 0.0, res, y0 - res * h)
        stored = data[:, ::-1, :]
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata) as dst:  # fmt: skip
        dst.write(stored)
    return data, nodata


def expected_invalid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """(h, w) True where any band is not finite or equals a nodata value the data type can hold."""
    bad = ~np.isfinite(data.astype(np.float64)).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        kind = data.dtype
        holdable = kind.kind == "f" or (nodata == int(nodata) and np.iinfo(kind).min <= nodata <= np.iinfo(kind).max)
        if holdable:
            bad |= (data == np.asarray(nodata).astype(kind)).any(axis=0)
    return bad


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(job_path: str) -> tuple[int, list[dict]]:
    buf = io.StringIO()
    progress = WorkerProgress(EventStream(buf))
    restore = capture_library_warnings(progress)
    try:
        code = run_job_file(job_path, progress)
    finally:
        restore()
    return code, [json.loads(line) for line in buf.getvalue().splitlines()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(spec=rasters())
def test_any_small_raster_gives_valid_outputs_or_one_line_and_no_file(spec, capfd):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        path = tmp / "in" / "input.tif"
        data, nodata = make_raster(spec, path)
        before = digest(path)
        job = reconstruct_job(tmp, path=str(path), modality=spec["modality"], model=MODELS[spec["modality"]],
                              tile=32, overlap=0)  # fmt: skip
        capfd.readouterr()
        code, events = run_cli(write_job(tmp, job))
        stderr = capfd.readouterr().err
        event(f"exit {code}" + (f": {events[-1]['type']}" if code else ""))  # --hypothesis-show-statistics
        assert digest(path) == before, "the input is byte-identical"
        out = tmp / "out"
        if code == 0:
            assert events[-1]["event"] == "result" and stderr.strip() == "", stderr
            for key in ("reconstruction", "difference"):
                with rasterio.open(events[-1]["outputs"][key]) as src:
                    values, mask = src.read(), src.dataset_mask()
                    own_grid = spec["grid"] == "utm10"
                    if own_grid:
                        assert src.shape == data.shape[1:] and src.transform.e < 0
                        np.testing.assert_array_equal(mask == 0, expected_invalid(data, nodata), err_msg=key)
                    assert np.isfinite(values[:, mask > 0]).all(), "valid output pixels are numbers"
            stems = tuple(Path(job["outputs"][key]).stem + "." for key in ("reconstruction", "difference"))
            left = [n for n in os.listdir(out) if not n.startswith(stems) or "partial" in n]
            assert left == [], f"only the outputs and their sidecars: {left}"
        else:
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert code in (1, 2), (code, stderr)
            assert len(lines) == 1 and lines[0].startswith("terramind worker: ") and "Traceback" not in stderr, stderr
            assert events[-1]["event"] == "error" and events[-1]["type"] != "WorkerError", events[-1]
            assert os.listdir(out) == [], f"no file after exit {code}: {os.listdir(out)}"
