"""Whole-slide images (pyramidal TIFF/SVS) as pools of tiles, read on demand.

A slide is opened with ``tiffslide`` (pure Python on tifffile + zarr; openslide-python is tried
when it is installed and tiffslide cannot open the file). Nothing is written per tile: a pool item
is the address (slide, x, y, level) of a ``tile`` x ``tile`` px square of pyramid level ``level``
whose top-left corner is (x, y) in *level-0* pixels (the convention of OpenSlide's
``read_region`` and of QuPath's coordinates), and :func:`read_tile` reads just that region, so the
memory needed is that of a tile and of the slide's (small) lowest-resolution level, never of the
slide.

Tissue detection (which tiles are worth an annotator's time): on the lowest-resolution level
(subsampled to at most ``MASK_MAX`` px a side), grey value ``g = 0.299 R + 0.587 G + 0.114 B``;
tissue is ``g <= t`` with ``t`` Otsu's threshold (Otsu 1979: the grey level that maximises the
between-class variance of the histogram), because stained tissue is darker than the bright glass
around it. A level with less than ``MIN_CONTRAST`` grey levels between its darkest and brightest
pixel is blank: no tissue. A tile's tissue fraction is the share of mask pixels whose centres lie
in its level-0 box (one summed-area table for all tiles); it is kept when the fraction is
``>= threshold``. Only whole tiles are made: the right and bottom margins narrower than a tile are
left out (their width is reported).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglearn.data.errors import DataError, display_path, files_ending

SLIDE_EXTS = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".svslide")
MASK_MAX = 2048      # longest side of the tissue mask (the low level is subsampled to it)
MIN_CONTRAST = 16    # grey levels: less between darkest and brightest = a blank slide
STRIP_ROWS = 512     # the low level is read this many rows at a time


@dataclass(frozen=True)
class Tile:
    """One tile: top-left (x, y) in level-0 px, pyramid ``level`` (its ``downsample`` from level
    0), ``size`` px a side at that level, and the tissue fraction it was kept with."""

    x: int
    y: int
    level: int
    downsample: float
    size: int
    tissue: float


@dataclass(frozen=True)
class SlideTiles:
    """The tiles of one slide: all of the grid (``total``) and those kept for their tissue."""

    path: Path
    dimensions: tuple[int, int]   # level-0 (width, height)
    level: int
    tile: int
    total: int
    kept: list[Tile]
    margin: tuple[int, int]       # (right, bottom) px of the level not covered by whole tiles


class _Slide:
    """A slide opened by tiffslide (or openslide): level geometry and RGB region reads."""

    def __init__(self, path: Path):
        self.path = path
        where = display_path(path)
        if not path.is_file():
            raise DataError(f"slide {where} {'is not a file' if path.exists() else 'does not exist'}")
        errors = []
        try:
            # lazy: tiffslide, an optional dependency, only when a slide is opened
            import tiffslide
        except ImportError:  # an optional dependency (pip install seglearn[slides])
            tiffslide = None
            errors.append("tiffslide is not installed (pip install tiffslide)")
        self._array = False
        self._s = None
        if tiffslide is not None:
            try:
                self._open(tiffslide.TiffSlide(os.fspath(path)), True)
            except Exception as e:  # noqa: BLE001 - tifffile/zarr raise many types for bad files
                errors.append(f"{type(e).__name__}: {e}")
        if self._s is None:
            try:
                # lazy: openslide, an optional dependency, only when tiffslide cannot open the slide
                import openslide

                self._open(openslide.OpenSlide(os.fspath(path)), False)
            except ImportError:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(f"openslide: {e}")
        if self._s is None:
            raise DataError(f"slide {where} cannot be opened as a pyramidal TIFF/SVS slide "
                            f"({'; '.join(errors)})")

    def _open(self, s, array: bool) -> None:
        """Take ``s`` once its level geometry reads (a damaged file may open, then fail here)."""
        dims = [tuple(int(v) for v in d) for d in s.level_dimensions]
        downs = [float(d) for d in s.level_downsamples]
        if not dims or len(dims) != len(downs) or min(min(d) for d in dims) <= 0:
            raise ValueError(f"no readable image levels ({dims})")
        self.level_dimensions, self.level_downsamples = dims, downs
        self._s, self._array = s, array

    def check_level(self, level: int) -> None:
        n = len(self.level_dimensions)
        if not 0 <= level < n:
            dims = ", ".join(f"{i}: {w}x{h}" for i, (w, h) in enumerate(self.level_dimensions))
            raise DataError(f"slide {display_path(self.path)} has no level {level}: it has "
                            f"{n} level(s) ({dims})")

    def read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) of the region at level-0 (x, y), ``w`` x ``h`` px of ``level``."""
        try:
            if self._array:
                arr = self._s.read_region((int(x), int(y)), level, (int(w), int(h)), as_array=True)
            else:
                arr = np.asarray(self._s.read_region((int(x), int(y)), level, (int(w), int(h))))
        except Exception as e:  # noqa: BLE001 - a damaged tile: name the slide and the region
            raise DataError(f"slide {display_path(self.path)}: the region at ({x}, {y}) of level "
                            f"{level}, {w}x{h} px, cannot be read ({type(e).__name__}: {e})") from None
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.shape[2] == 4:  # RGBA (openslide): transparent = outside the scanned area = white
            rgb = arr[..., :3].astype(np.uint16)
            a = arr[..., 3:4].astype(np.uint16)
            arr = (rgb * a + 255 * (255 - a)) // 255
        return np.ascontiguousarray(arr[..., :3]).astype(np.uint8, copy=False)


@functools.lru_cache(maxsize=8)
def _cached(path: str, size: int, mtime_ns: int) -> _Slide:
    return _Slide(Path(path))


def open_slide(path: str | os.PathLike) -> _Slide:
    """The slide at ``path`` (kept open for the next reads until the file changes); DataError
    naming the file when it cannot be opened."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        return _Slide(p)  # raises the "does not exist" error
    return _cached(os.fspath(p.absolute()), st.st_size, st.st_mtime_ns)


def read_tile(path: str | os.PathLike, tile, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (h, w, 3) of ``tile`` (anything with x, y, level; ``size`` (h, w) or its
    ``size`` a side) read from the slide at ``path``."""
    h, w = size if size is not None else (tile.size, tile.size)
    return open_slide(path).read(tile.x, tile.y, tile.level, w, h)


def otsu_tissue(gray: np.ndarray) -> np.ndarray:
    """Tissue (bool) of a uint8 grey image: darker than Otsu's threshold; none when blank."""
    # lazy: scikit-image, only when tissue is detected
    from skimage.filters import threshold_otsu

    lo, hi = int(gray.min(initial=255)), int(gray.max(initial=0))
    if hi - lo < MIN_CONTRAST:
        return np.zeros(gray.shape, dtype=bool)
    return gray <= threshold_otsu(gray)  # skimage: t is the last grey level of the dark class


def tissue_mask(slide: _Slide) -> tuple[np.ndarray, float, float]:
    """(tissue mask, level-0 px per mask column, per mask row) from the slide's lowest level,
    read ``STRIP_ROWS`` rows at a time and subsampled to at most ``MASK_MAX`` px a side."""
    low = len(slide.level_dimensions) - 1
    w, h = slide.level_dimensions[low]
    ds = slide.level_downsamples[low]
    step = max(1, -(-max(w, h) // MASK_MAX))  # ceil: the stride that fits MASK_MAX
    strip = step * max(1, STRIP_ROWS // step)  # a multiple of the stride: one phase throughout
    grays = []
    for r0 in range(0, h, strip):
        rgb = slide.read(0, int(round(r0 * ds)), low, w, min(strip, h - r0))[::step, ::step]
        rgb = rgb.astype(np.float32)
        grays.append((0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
                     .round().clip(0, 255).astype(np.uint8))
    w0, h0 = slide.level_dimensions[0]
    return otsu_tissue(np.concatenate(grays, axis=0)), w0 / w * step, h0 / h * step


def _fraction_in_boxes(mask: np.ndarray, px: float, py: float, x0: np.ndarray, y0: np.ndarray,
                       side: float) -> np.ndarray:
    """Share of the mask pixels whose centres ((j + 0.5) px, (i + 0.5) py) lie in the level-0
    boxes [x0, x0 + side) x [y0, y0 + side); a box holding no centre takes the pixel under its
    centre."""
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    h, w = mask.shape

    def span(a, p, n):  # first index with centre >= a, i.e. (j + 0.5) p >= a
        return np.clip(np.ceil(a / p - 0.5).astype(np.int64), 0, n)

    c0, c1 = span(x0, px, w), span(x0 + side, px, w)
    r0, r1 = span(y0, py, h), span(y0 + side, py, h)
    empty = (c1 <= c0) | (r1 <= r0)
    cc = np.clip(((x0 + side / 2) / px).astype(np.int64), 0, w - 1)
    rr = np.clip(((y0 + side / 2) / py).astype(np.int64), 0, h - 1)
    c0, r0 = np.where(empty, cc, c0), np.where(empty, rr, r0)
    c1, r1 = np.where(empty, cc + 1, c1), np.where(empty, rr + 1, r1)
    inside = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
    return inside / ((r1 - r0) * (c1 - c0))


def slide_tiles(path: str | os.PathLike, tile: int, level: int = 0,
                threshold: float = 0.25) -> SlideTiles:
    """The ``tile`` px tiles of ``level`` of the slide at ``path`` and those with a tissue
    fraction ``>= threshold`` (see the module docstring)."""
    path = Path(path)
    slide = open_slide(path)
    slide.check_level(level)
    lw, lh = slide.level_dimensions[level]
    if tile > min(lw, lh):
        raise DataError(f"slide {display_path(path)}: --tile {tile} is larger than level {level} "
                        f"of the slide ({lw}x{lh} px); give a smaller --tile or a lower --level")
    ds = slide.level_downsamples[level]
    nx, ny = lw // tile, lh // tile
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))  # row-major: left to right, top to bottom
    x0 = np.round(ix.ravel() * tile * ds).astype(np.int64)
    y0 = np.round(iy.ravel() * tile * ds).astype(np.int64)
    mask, px, py = tissue_mask(slide)
    frac = _fraction_in_boxes(mask, px, py, x0.astype(float), y0.astype(float), tile * ds)
    kept = [Tile(int(x), int(y), level, ds, tile, round(float(f), 4))
            for x, y, f in zip(x0, y0, frac) if f >= threshold]
    return SlideTiles(path, slide.level_dimensions[0], level, tile, nx * ny, kept,
                      (lw - nx * tile, lh - ny * tile))


def list_slides(folder: str | os.PathLike) -> list[Path]:
    """The slide files (``SLIDE_EXTS``) of ``folder``, sorted; DataError when there are none."""
    return files_ending(folder, SLIDE_EXTS, "slides",
                        f"slides (looked for {', '.join(SLIDE_EXTS)})")


def tile_name(slide: Path, t: Tile) -> str:
    """The item name of a tile: ``<slide stem>_L<level>_x<x>_y<y>`` (x, y in level-0 px)."""
    return f"{slide_key(slide)}_L{t.level}_x{t.x}_y{t.y}"


def slide_key(slide: str | os.PathLike) -> str:
    """The name a slide goes by (its file name less the extension): tile names start with it and
    a slide-wide GeoJSON file ``<key>.geojson`` labels its tiles."""
    name = Path(slide).name
    low = name.lower()
    for ext in SLIDE_EXTS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


# ---------------------------------------------------------------- synthetic slides (tests, bench)
BACKGROUND = (245, 245, 245)  # the glass: bright
TISSUE = (200, 120, 170)      # eosin-pink, grey 150


def _synthetic_tile(rects, x0: int, y0: int, ds: int, size: int) -> np.ndarray:
    """The ``size`` px tile at level-0 (x0, y0) of a level with integer downsample ``ds``: level
    pixel (r, c) shows level-0 pixel (y0 + r ds, x0 + c ds), tissue inside one of ``rects``
    ((x0, y0, x1, y1), level-0, end exclusive), with a +-4 texture fixed in level-0 coordinates so
    the levels agree."""
    yy = y0 + ds * np.arange(size)[:, None]
    xx = x0 + ds * np.arange(size)[None, :]
    inside = np.zeros((size, size), dtype=bool)
    x1, y1 = x0 + ds * size, y0 + ds * size
    for a, b, c, d in rects:
        if a < x1 and c > x0 and b < y1 and d > y0:
            inside |= (xx >= a) & (xx < c) & (yy >= b) & (yy < d)
    out = np.where(inside[..., None], np.array(TISSUE, np.int16), np.array(BACKGROUND, np.int16))
    out = out + ((xx * 7 + yy * 13) % 9 - 4)[..., None]
    return out.clip(0, 255).astype(np.uint8)


def write_synthetic_slide(path: str | os.PathLike, width: int, height: int, rects,
                          levels: int = 3, tile: int = 256, compression: str = "zlib") -> Path:
    """A pyramidal tiled RGB TIFF of ``width`` x ``height`` level-0 px, white with tissue
    rectangles ``rects`` ((x0, y0, x1, y1) in level-0 px), and ``levels`` levels at downsamples
    1, 2, 4 ... (SubIFDs, as QuPath and tiffslide read them). Written tile by tile from an
    iterator, so a 20,000 px slide never exists in memory."""
    # lazy: tifffile, an optional dependency, only when a synthetic slide is written
    import tifffile

    path = Path(path)

    def tiles(ds: int, w: int, h: int):
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                yield _synthetic_tile(rects, tx * ds, ty * ds, ds, tile)

    opts = dict(tile=(tile, tile), photometric="rgb", compression=compression, dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for k in range(levels):
            ds = 2 ** k
            w, h = -(-width // ds), -(-height // ds)
            extra = {"subifds": levels - 1} if k == 0 else {"subfiletype": 1}
            tif.write(tiles(ds, w, h), shape=(h, w, 3), **opts, **extra)
    return path
