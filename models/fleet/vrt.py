"""Single-band rasters of one modality (STAC band assets: B01 … B12, vv/vh) stacked into one GDAL VRT.

The VRT is on the finest grid of its sources (Sentinel-2's 20 m and 60 m bands are resampled to
10 m, bilinear, by GDAL when the worker reads it); every source must cover the same bounds in the
same CRS. Written atomically (temporary name, then renamed).
"""

from __future__ import annotations

import os
from xml.sax.saxutils import escape

from ..core.errors import InputRasterError

_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}  # fmt: skip


def _source_path(href: str) -> str:
    return f"/vsicurl/{href}" if href.startswith(("http://", "https://")) else href


def stack_vrt(hrefs: tuple[str, ...], path: str) -> str:
    """Write the VRT of ``hrefs`` (band i+1 = ``hrefs[i]``'s first band) to ``path``; returns ``path``."""
    import rasterio

    metas = []
    for href in hrefs:
        try:
            with rasterio.open(_source_path(href)) as src:
                metas.append((src.width, src.height, src.transform, src.crs, src.dtypes[0], src.nodata, src.bounds))
        except rasterio.errors.RasterioError as e:
            raise InputRasterError(f"cannot open band raster '{href}': {e}") from None
    finest = min(range(len(metas)), key=lambda i: abs(metas[i][2].a))
    width, height, transform, crs, _, _, bounds = metas[finest]
    for href, m in zip(hrefs, metas, strict=True):
        if m[3] != crs or any(abs(a - b) > abs(transform.a) for a, b in zip(m[6], bounds, strict=True)):
            raise InputRasterError(f"band raster '{href}' does not cover the same area in the same CRS as "
                                   f"'{hrefs[finest]}'; cannot stack them")  # fmt: skip
    dtype = max((m[4] for m in metas), key=lambda d: list(_GDAL_TYPES).index(d) if d in _GDAL_TYPES else 99)
    gt = ", ".join(repr(v) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(crs.to_wkt())}</SRS>", f"  <GeoTransform>{gt}</GeoTransform>"]  # fmt: skip
    for i, (href, m) in enumerate(zip(hrefs, metas, strict=True), start=1):
        lines.append(f'  <VRTRasterBand dataType="{_GDAL_TYPES.get(dtype, "Float32")}" band="{i}">')
        if m[5] is not None:
            lines.append(f"    <NoDataValue>{m[5]!r}</NoDataValue>")
        lines += [
            '    <SimpleSource resampling="bilinear">',
            f'      <SourceFilename relativeToVRT="0">{escape(_source_path(href))}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SrcRect xOff="0" yOff="0" xSize="{m[0]}" ySize="{m[1]}"/>',
            f'      <DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>',
            "    </SimpleSource>",
            "  </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
