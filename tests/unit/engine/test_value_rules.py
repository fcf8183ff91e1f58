"""The value-domain rules of ``models/core/value_rules.py`` as the worker applies them when it opens an
input (``engine/reader.py``): data types, GDAL scale/offset, scale mistakes, nodata, band descriptions,
class ids. Each message names the layer; errors come before any model is loaded."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from engine_fixtures import EXAMPLES, open_stack, write_tif

from terramind_qgis.models.core import value_rules
from terramind_qgis.models.core.errors import InputRasterError
from terramind_qgis.models.core.modalities import get_modality

S2 = str(EXAMPLES / "S2L2A" / "282D_485L_3_3.tif")
RNG = np.random.default_rng(0)


def s2_data() -> np.ndarray:
    with rasterio.open(S2) as src:
        return src.read()  # (12, 224, 224) int16, reflectance x 10000


def with_metadata(path: str, *, scales=None, offsets=None, descriptions=None) -> str:
    with rasterio.open(path, "r+") as dst:
        if scales is not None:
            dst.scales, dst.offsets = scales, offsets
        for i, d in enumerate(descriptions or ()):
            dst.set_band_description(i + 1, d)
    return path


def test_an_8_bit_layer_for_16_bit_reflectance_is_an_error(tmp_path):
    data = (s2_data() // 40).clip(0, 255).astype(np.uint8)
    path = write_tif(tmp_path / "s2_8bit.tif", data)
    with pytest.raises(InputRasterError, match=r"layer 'layer S2L2A' is uint8 data, which holds values up to 255, but "
                                               r"S2L2A is reflectance x 10000 .*squeezed to 8 bits"):  # fmt: skip
        open_stack({"S2L2A": path})


def test_gdal_scale_and_offset_are_applied_and_said(tmp_path):
    """8 bits with a stated scale are accepted: value x scale + offset is reflectance, x 10000 for S2L2A."""
    data = (s2_data() // 40).clip(0, 255).astype(np.uint8)
    path = with_metadata(write_tif(tmp_path / "s2_scaled.tif", data), scales=[0.004] * 12, offsets=[-0.1] * 12)
    _, stack = open_stack({"S2L2A": path})
    got, valid = stack.inputs[0].read(0, 0, 224, 224)
    expected = data.astype(np.float32) * 40.0 - 1000.0
    assert valid.all() and np.allclose(got, expected, atol=1e-3)
    assert stack.inputs[0].infos == ["layer 'layer S2L2A': the file's scale/offset are applied: values are read as "
                                     "value x 40 + -1000 (reflectance x 10000)"]  # fmt: skip
    dem = with_metadata(write_tif(tmp_path / "dem_cm.tif", np.full((1, 64, 64), 12345, np.int32)), scales=[0.01], offsets=[0])
    _, stack = open_stack({"DEM": dem})
    assert np.allclose(stack.inputs[0].read(0, 0, 64, 64)[0], 123.45), "other modalities: the physical unit as it is"


@pytest.mark.parametrize("modality,data,pattern", [
    ("S2L2A", lambda: (s2_data() / 10000.0).astype(np.float32), r"like reflectance 0\.\.1, but S2L2A is reflectance x 10000"),
    ("NDVI", lambda: RNG.integers(-2000, 9000, (1, 64, 64)).astype(np.int16), r"NDVI is -1\.\.1; scaled NDVI"),
    ("S1RTC", lambda: RNG.uniform(0.001, 0.3, (2, 64, 64)).astype(np.float32), r"like linear power, .*10 x log10"),
    ("S1GRD", lambda: RNG.uniform(20, 400, (2, 64, 64)).astype(np.float32), r"all positive .*not amplitude or digital"),
    ("S2RGB", lambda: RNG.integers(0, 4000, (3, 64, 64)).astype(np.uint16), r"S2RGB is 8-bit colour"),
])  # fmt: skip
def test_common_scale_mistakes_give_one_warning(tmp_path, modality, data, pattern):
    import re

    _, stack = open_stack({modality: write_tif(tmp_path / "x.tif", data())})
    warnings = stack.inputs[0].warnings
    assert len(warnings) == 1 and re.search(pattern, warnings[0]), warnings
    assert warnings[0].startswith(f"layer 'layer {modality}': ")


@pytest.mark.parametrize("modality", ["S2L2A", "S1RTC", "DEM", "NDVI", "LULC", "S2RGB"])
def test_the_example_patches_pass_every_rule_silently(modality):
    _, stack = open_stack({modality: str(EXAMPLES / modality / "282D_485L_3_3.tif")})
    assert stack.inputs[0].warnings == [] and stack.inputs[0].infos == []


def test_nodata_covering_most_real_values_is_a_warning(tmp_path):
    dem = RNG.integers(-5, 40, (1, 64, 64)).astype(np.int16)
    dem[:, :, :50] = 0  # a coast: sea level, most of the layer
    _, stack = open_stack({"DEM": write_tif(tmp_path / "dem.tif", dem, nodata=0)})
    (warning,) = stack.inputs[0].warnings
    assert warning.startswith("layer 'layer DEM': its nodata value 0 marks") and "lies among its other values" in warning
    edges = RNG.integers(100, 4000, (1, 64, 64)).astype(np.int16)
    edges[:, :, :50] = -9999  # a sentinel outside the data: a large no-data area is normal
    _, stack = open_stack({"DEM": write_tif(tmp_path / "edges.tif", edges, nodata=-9999)})
    assert stack.inputs[0].warnings == []


def test_band_descriptions_in_another_order_are_reordered(tmp_path):
    data = s2_data()
    order = np.array([3, 2, 1, 0, 4, 5, 6, 7, 8, 9, 11, 10])  # file band i holds modality band order[i]
    labels = get_modality("S2L2A").band_labels
    path = with_metadata(write_tif(tmp_path / "shuffled.tif", data[order]), descriptions=[labels[i] for i in order])
    _, stack = open_stack({"S2L2A": path})
    _, plain = open_stack({"S2L2A": S2})
    assert np.array_equal(stack.inputs[0].read(0, 0, 224, 224)[0], plain.inputs[0].read(0, 0, 224, 224)[0])
    (info,) = stack.inputs[0].infos
    assert "band descriptions name the S2L2A bands in another order; they are read as B01 = band 4, B02 = band 3" in info


def test_band_descriptions_that_disagree_are_a_warning(tmp_path):
    data = s2_data()
    names = list(get_modality("S2L2A").band_labels)
    names[3], names[7] = "B08", "B04"  # red and NIR swapped, and the user maps bands 1..12 explicitly
    path = with_metadata(write_tif(tmp_path / "swapped.tif", data), descriptions=names)
    _, stack = open_stack({"S2L2A": path}, bands=tuple(range(1, 13)))
    (warning,) = stack.inputs[0].warnings
    assert "band descriptions disagree with the S2L2A band order: band 4 is read as B04 but is described as 'B08'" in warning
    assert stack.inputs[0].bands == tuple(range(1, 13)), "an explicit mapping is never reordered"
    generic = with_metadata(write_tif(tmp_path / "generic.tif", data), descriptions=[f"Band {i}" for i in range(1, 13)])
    assert open_stack({"S2L2A": generic})[1].inputs[0].warnings == [], "descriptions that name no band: nothing to say"


def test_class_rasters_must_hold_whole_class_ids(tmp_path):
    lulc = RNG.integers(0, 9, (1, 64, 64)).astype(np.float32)
    lulc[0, 10, 10] = 2.5
    with pytest.raises(InputRasterError, match=r"layer 'layer LULC': LULC holds class ids, but it has fractional values"):
        open_stack({"LULC": write_tif(tmp_path / "lulc.tif", lulc)})[1].inputs[0].read(0, 0, 64, 64)


def test_rules_are_plain_functions_of_the_modality_table():
    s2 = get_modality("S2L2A")
    assert s2.reflectance and s2.max_value == 10000.0
    assert value_rules.dtype_problem("x", s2, "uint8", scaled=False) and not value_rules.dtype_problem("x", s2, "uint8", True)
    assert value_rules.dtype_problem("x", s2, "uint16", scaled=False) is None
    assert value_rules.dtype_problem("x", get_modality("S2RGB"), "uint8", scaled=False) is None
    assert value_rules.scale_offset(s2, (1.0, 1.0), (0.0, 0.0)) is None
    f, a = value_rules.scale_offset(get_modality("DEM"), (0.5,), (2.0,))
    assert f.tolist() == [0.5] and a.tolist() == [2.0]
