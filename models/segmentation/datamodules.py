"""What the data modules of known fine-tunes did to raw pixels when the YAML leaves it to them (torch-free).

A TerraTorch config's ``data:`` section often omits ``means``/``stds``: the data module then uses
its own defaults, and those, not the TerraMind pre-training statistics, are what the model was
trained on. ``resolve_data_module(class_path, init_args)`` fills them in for the modules below,
exactly as their ``__init__`` picks them, and says what the module does with dates:

- ``impactmesh.impactmesh_datamodule.ImpactMeshDataModule`` (IBM/ImpactMesh, commit 6c76a0a,
  Apache-2.0): per-modality statistics of the flood or the wildfire dataset, chosen by the
  ``disaster_type`` argument, else by the first of 'fire', 'flood' found in ``data_root`` (lower
  case); given ``means`` and ``stds`` win only when both are set. ``no_data_replace`` defaults to
  0; file values equal to ``no_data_value`` (-9999) and NaN are replaced by it. A file holding one
  date (the DEM) is repeated over every date (``ImpactMeshDataset.__getitem__``).
- ``terratorch.datamodules.MultiTemporalCropClassificationDataModule`` (terratorch 1.2.11,
  ``datamodules/multi_temporal_crop_classification.py``): its ``MEANS``/``STDS`` per HLS band, for
  the ``bands`` argument (default: all six); ``no_data_replace`` defaults to 0. The data module
  accepts no statistics of its own.

Every other data module is taken at its word (``means``/``stds`` from the YAML, else the
configuration reader falls back to the TerraMind statistics with a note).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# IBM/ImpactMesh impactmesh/impactmesh_datamodule.py (6c76a0a1f979469fca8f7bdfa6b86847bf4e3ae3): datasets_stats
IMPACTMESH_STATS: dict[str, dict[str, dict[str, list[float]]]] = {
    "fire": {
        "means": {
            "S2L2A": [801.325, 861.655, 991.636, 1019.702, 1366.43, 2000.191, 2255.338, 2354.884, 2481.838,
                      2747.908, 2185.777, 1495.209],
            "S1RTC": [-9.838, -15.465],
            "DEM": [412.745],
        },
        "stds": {
            "S2L2A": [1960.514, 1732.936, 1494.812, 1384.473, 1385.129, 1309.367, 1322.601, 1352.448, 1336.39,
                      2379.374, 1145.593, 991.566],
            "S1RTC": [3.505, 3.422],
            "DEM": [354.58],
        },
    },
    "flood": {
        "means": {
            "S2L2A": [1223.128, 1251.355, 1423.443, 1408.984, 1786.818, 2448.316, 2685.642, 2745.795, 2817.936,
                      3194.081, 1964.659, 1399.317],
            "S1RTC": [-9.98, -15.968],
            "DEM": [141.786],
        },
        "stds": {
            "S2L2A": [2358.709, 2227.598, 2082.363, 2068.519, 2086.682, 2003.085, 2019.494, 2060.309, 2014.732,
                      2992.644, 1414.951, 1218.357],
            "S1RTC": [4.24, 4.105],
            "DEM": [189.363],
        },
    },
}  # fmt: skip
IMPACTMESH_MODALITIES = ("S2L2A", "S1RTC", "DEM")

# terratorch 1.2.11 datamodules/multi_temporal_crop_classification.py: MEANS, STDS (HLS bands, DN)
CROP_MEANS = {"BLUE": 494.905781, "GREEN": 815.239594, "RED": 924.335066, "NIR_NARROW": 2968.881459,
              "SWIR_1": 2634.621962, "SWIR_2": 1739.579917}  # fmt: skip
CROP_STDS = {"BLUE": 284.925432, "GREEN": 357.84876, "RED": 575.566823, "NIR_NARROW": 896.601013,
             "SWIR_1": 951.900334, "SWIR_2": 921.407808}  # fmt: skip


@dataclass(frozen=True)
class DataModuleDefaults:
    """The data arguments as the data module used them, and what it does with dates."""

    data: dict[str, Any]  # init_args with the module's defaults for means/stds/no_data_replace filled in
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    repeat_single_date: bool = False  # a one-date input is repeated over every date
    file_nodata: float | None = None  # file value the module treats as nodata besides NaN
    module: str = ""  # short class name, '' when unknown


def _short(class_path: str | None) -> str:
    return str(class_path or "").rsplit(".", 1)[-1]


def _impactmesh(args: dict[str, Any]) -> DataModuleDefaults:
    disaster = args.get("disaster_type")
    if disaster not in IMPACTMESH_STATS:
        root = str(args.get("data_root", "")).lower()
        disaster = next((k for k in IMPACTMESH_STATS if k in root), None)
    data = dict(args)
    notes, problems = [], []
    if not (args.get("means") and args.get("stds")):
        if disaster is None:
            problems.append(
                "the ImpactMesh data module's statistics: set data.init_args.disaster_type ('fire' or 'flood') or "
                f"means/stds (data_root '{args.get('data_root')}' names neither)"
            )
        else:
            modalities = args.get("modalities") or list(IMPACTMESH_MODALITIES)
            stats = IMPACTMESH_STATS[disaster]
            data["means"] = {m: stats["means"][m] for m in modalities if m in stats["means"]}
            data["stds"] = {m: stats["stds"][m] for m in modalities if m in stats["stds"]}
            notes.append(f"means/stds: the ImpactMesh data module's {disaster} dataset statistics (not in the YAML)")
    if data.get("no_data_replace") is None:
        data["no_data_replace"] = 0.0
    nodata = args.get("no_data_value", -9999.0)
    return DataModuleDefaults(data, tuple(notes), tuple(problems), repeat_single_date=True,
                              file_nodata=float(nodata) if nodata is not None else None,
                              module="ImpactMeshDataModule")  # fmt: skip


def _crop(args: dict[str, Any]) -> DataModuleDefaults:
    bands = list(args.get("bands") or CROP_MEANS)
    unknown = [b for b in bands if b not in CROP_MEANS]
    if unknown:
        problem = f"data.init_args.bands {unknown} (the crop data module knows {', '.join(CROP_MEANS)})"
        return DataModuleDefaults(dict(args), problems=(problem,), module="MultiTemporalCropClassificationDataModule")
    data = {**args, "means": [CROP_MEANS[b] for b in bands], "stds": [CROP_STDS[b] for b in bands]}
    if data.get("no_data_replace") is None:
        data["no_data_replace"] = 0.0
    note = "means/stds: the MultiTemporalCropClassification data module's HLS band statistics (it takes none from the YAML)"
    return DataModuleDefaults(data, (note,), module="MultiTemporalCropClassificationDataModule")


_KNOWN = {"ImpactMeshDataModule": _impactmesh, "MultiTemporalCropClassificationDataModule": _crop}


def resolve_data_module(class_path: str | None, init_args: dict[str, Any] | None) -> DataModuleDefaults:
    """``init_args`` as the data module ``class_path`` used them (unchanged for modules not listed above)."""
    args = dict(init_args or {})
    resolve = _KNOWN.get(_short(class_path))
    return resolve(args) if resolve else DataModuleDefaults(args, module=_short(class_path))
