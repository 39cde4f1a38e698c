"""Reading images and masks, writing instance masks.

Images come back as ``uint8 (H, W, 3)`` RGB whatever the file held; masks come back as ``int32 (H, W)``
instance labels (0 = background, 1..N = objects). Every failure is a :class:`DataError` that names
the file, so a bad file in a folder of thousands is found at once.

Image conversion rules (each conversion is reported by :func:`read_image_info` as a note):

- grayscale -> the gray value copied to R, G and B; bilevel (1-bit) -> 0/255;
- RGBA / LA / gray+alpha -> alpha dropped (not composited: the stored colours are the data);
- palette -> the palette's RGB colours; CMYK / YCbCr / LAB -> RGB through Pillow;
- 16-bit unsigned -> ``round(x / 257)`` (the full 0..65535 range onto 0..255; one fixed rule so
  all images of a data set keep their relative intensities);
- float in [0, 1] -> ``round(255 x)``; any other float or signed integer data (e.g. NIfTI CT/MR)
  -> min-max scaled to 0..255 per image; NaN or infinite values -> DataError;
- multi-page TIFF / animated files -> the first frame (a mask: only when every other
  full-resolution page equals it, else DataError; see :func:`_one_mask_page`).

NIfTI (``.nii``, ``.nii.gz``) holds 2D slices; singleton axes are squeezed and the voxel array is
taken in nibabel's index order (first axis = image rows), so an array saved with nibabel reads back
unchanged. Sizes are checked from the header before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglearn import atomic
from seglearn.data.errors import DataError, display_path

DEFAULT_MAX_PIXELS = 100_000_000
NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
# More distinct colours than this in a colour mask means lossy compression or a photo, not labels.
MAX_MASK_COLOURS = 4096


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _check_file(path: Path, what: str) -> None:
    where = display_path(path)
    if not path.exists():
        raise DataError(f"{what} {where} does not exist")
    if path.is_dir():
        raise DataError(f"{what} {where} is a folder, not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {where} is empty (0 bytes); the file was probably not written completely")


def _check_pixels(path: Path, shape: tuple[int, ...], max_pixels: int, what: str) -> None:
    h = int(shape[0])
    w = int(shape[1]) if len(shape) > 1 else 1
    if h * w > max_pixels:
        raise DataError(
            f"{what} {display_path(path)} is {h}x{w} pixels (rows x columns) = {h * w:,}, more than the "
            f"limit of {max_pixels:,}; it may be a decompression bomb, or pass a larger max_pixels"
        )


def _decode_nifti(path: Path, max_pixels: int, what: str) -> tuple[np.ndarray, list[str]]:
    # lazy: nibabel, an optional dependency, only for NIfTI files
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many types for damaged headers
        raise DataError(f"{what} {display_path(path)} is not a readable NIfTI file: {exc}") from exc
    spatial = tuple(s for s in shape if s != 1)
    if len(spatial) != 2:
        raise DataError(
            f"{what} {display_path(path)} has NIfTI shape {shape}; seglearn reads 2D slices only "
            "(exactly two axes longer than 1)"
        )
    _check_pixels(path, spatial, max_pixels, what)
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{what} {display_path(path)}: NIfTI voxel data cannot be read: {exc}") from exc
    return np.asarray(arr).reshape(spatial), [f"NIfTI {shape} squeezed to 2D"] if shape != spatial else []


def _decode_tifffile(path: Path, max_pixels: int, what: str,
                     for_mask: bool = False) -> tuple[np.ndarray, list[str]]:
    # lazy: tifffile, an optional dependency, only for TIFF files
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[0]
        shape = tuple(int(s) for s in page.shape)
        if page.planarconfig == 2 and len(shape) == 3:  # separate planes: (C, H, W)
            _check_pixels(path, shape[1:], max_pixels, what)
        else:
            _check_pixels(path, shape, max_pixels, what)
        arr = page.asarray()
        notes = ["multi-page TIFF: first page read"] if len(tif.pages) > 1 else []
        if for_mask and len(tif.pages) > 1:
            # pyramid levels (reduced-resolution pages) are views of the first page, not data
            _one_mask_page(arr, (p.asarray() for p in list(tif.pages)[1:]
                                 if not getattr(p, "is_reduced", False)), path)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr, notes


def _one_mask_page(first: np.ndarray, others, path: Path) -> None:
    """A multi-page mask is read as its first page only when every other full-resolution page
    equals it (a duplicated page); pages that differ (one page per class or per object, an
    ImageJ stack) would be data dropped without a word, so they are a DataError."""
    n = 1
    for other in others:
        n += 1
        if other.shape != first.shape or not np.array_equal(other, first):
            raise DataError(
                f"mask {display_path(path)} has several pages and page {n} differs from page 1; "
                "seglearn reads one 2D mask per image: save the mask as a single page (merge "
                "per-class or per-object pages into one label image first)"
            )


def _decode_pil(path: Path, max_pixels: int, what: str, for_mask: bool) -> tuple[np.ndarray, list[str]]:
    where = display_path(path)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # our own max_pixels check below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError as exc:
        raise DataError(f"{what} {where} is not an image Pillow can identify (wrong extension or not an image file)") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"{what} {where} has too many pixels (Pillow's decompression-bomb limit): {exc}") from exc
    except OSError as exc:
        raise DataError(f"{what} {where} cannot be opened: {exc}") from exc
    with im:
        w, h = im.size
        _check_pixels(path, (h, w), max_pixels, what)
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"{im.n_frames} frames: first frame read")
        try:
            if for_mask and getattr(im, "n_frames", 1) > 1:  # the rule of multi-page TIFF masks
                _one_mask_page(_pil_frame(im, 0), (_pil_frame(im, i) for i in range(1, im.n_frames)),
                               path)
                im.seek(0)
            im.load()
            mode = im.mode
            if mode == "P" and not for_mask:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                notes.append("palette converted to RGB")
            elif mode == "P" and for_mask:
                gray = _gray_palette_values(im)
                if gray is not None:
                    return gray, notes
            elif mode == "PA":
                im = im.convert("RGBA") if not for_mask else im.getchannel("P")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
                im = im.convert("RGB")
                notes.append(f"{mode} converted to RGB")
            elif mode.startswith("I;16"):
                arr = np.asarray(im).astype(np.uint16)  # big-endian variants -> native order
                return arr, notes
            arr = np.array(im)  # a writable copy (np.asarray of a PIL image is read-only)
        except DataError:
            raise
        except Exception as exc:  # truncated or corrupt pixel data: OSError, SyntaxError, zlib.error ...
            raise DataError(f"{what} {where} is damaged or truncated: {exc}") from exc
    if arr.ndim == 3 and arr.shape[-1] == 2:  # LA: gray + alpha
        arr = arr[..., 0]
        notes.append("alpha dropped")
    return arr, notes


def _pil_frame(im, i: int) -> np.ndarray:
    """Frame ``i`` of a multi-frame Pillow image as RGBA: Pillow decodes a GIF's later frames to
    RGB(A) while the first stays a palette image, so frames compare in their colours."""
    im.seek(i)
    return np.array(im.convert("RGBA"))


def _gray_palette_values(im) -> np.ndarray | None:
    """A palette mask whose used colours are all gray, as those gray values (uint8), else None.

    GIF stores every image with a palette, so a black/white mask (e.g. DRIVE's ``21_manual1.gif``)
    is a palette image whose index 0 may be white: its indices would turn the background into the
    object. Gray values keep black = background. Colour palettes (label PNGs) keep their indices.
    """
    idx = np.array(im)
    pal = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    used = np.unique(idx)
    if used.size == 0 or int(used[-1]) >= len(pal):
        return None
    colours = pal[used]
    if not (np.array_equal(colours[:, 0], colours[:, 1]) and np.array_equal(colours[:, 0], colours[:, 2])):
        return None
    return pal[idx, 0]


def _decode(path: str | os.PathLike, max_pixels: int, what: str, for_mask: bool) -> tuple[np.ndarray, list[str]]:
    """Decode a file to its stored array with as few conversions as possible."""
    path = Path(os.fspath(path))
    _check_file(path, what)
    if _is_nifti(path):
        return _decode_nifti(path, max_pixels, what)
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            return _decode_tifffile(path, max_pixels, what, for_mask)
        except DataError:
            raise
        except Exception:  # codecs tifffile lacks without imagecodecs: let Pillow try
            pass
    return _decode_pil(path, max_pixels, what, for_mask)


def _to_uint8(arr: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    where = display_path(path)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        notes.append("bilevel image scaled to 0/255")
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        notes.append("16-bit image scaled to 8-bit as round(x / 257)")
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if arr.dtype.kind not in "uif":
        raise DataError(f"image {where} has pixel type {arr.dtype}, which seglearn cannot read")
    data = arr.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise DataError(f"image {where} contains NaN or infinite values")
    lo, hi = float(data.min()), float(data.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        notes.append("float image in [0, 1] scaled by 255")
        return np.rint(data * 255.0).astype(np.uint8)
    if arr.dtype.kind in "ui" and lo >= 0 and hi <= 255:
        notes.append(f"{arr.dtype} image with values in 0..255 kept as 8-bit")
        return data.astype(np.uint8)
    notes.append(f"{arr.dtype} image min-max scaled from [{lo:g}, {hi:g}] to 0..255")
    if hi == lo:
        return np.zeros(arr.shape, np.uint8)
    return np.rint((data - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _to_rgb(arr: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        notes.append("grayscale copied to 3 channels")
        return np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        notes.append("alpha dropped")
        return np.ascontiguousarray(arr[..., :3])
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return np.ascontiguousarray(arr)
    raise DataError(f"image {display_path(path)} has array shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")


def read_image_info(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Read an image as uint8 (H, W, 3) RGB, with a list of the conversions made (module docstring)."""
    arr, notes = _decode(path, max_pixels, "image", for_mask=False)
    path = Path(os.fspath(path))
    rgb = _to_rgb(_to_uint8(arr, path, notes), path, notes)
    return rgb, notes


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8 (H, W, 3) RGB; see :func:`read_image_info` for the conversion rules."""
    return read_image_info(path, max_pixels)[0]


def _connected(fg: np.ndarray) -> np.ndarray:
    # lazy: scikit-image, only when masks are split into instances: seglearn.data imports without it
    from skimage.measure import label

    return label(fg, connectivity=2).astype(np.int32)  # 8-connectivity, as the GlaS README says


def _colour_instances(mask: np.ndarray, name: str) -> np.ndarray:
    """A colour mask: black is background, every other distinct colour is one object."""
    rgb = mask[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, inverse = np.unique(code, return_inverse=True)
    inverse = inverse.reshape(code.shape)
    if colours[0] != 0:
        raise DataError(f"colour mask {name} has no black (0, 0, 0) background; background must be black")
    if len(colours) == 2:
        return _connected(inverse > 0)
    if len(colours) - 1 > MAX_MASK_COLOURS:
        raise DataError(
            f"colour mask {name} has {len(colours) - 1} distinct non-black colours; a label mask has one "
            "colour per object, so this looks like a photo or a lossy (JPEG) save"
        )
    return inverse.astype(np.int32)  # colours sorted by code, black first -> labels 1..N


def instances_from_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Instance labels (int32, 0 = background) from a decoded mask array. The rules:

    1. A mask with at most two values, one of them 0 ({0, m}: 0/255, 0/1, bool, or any m) is binary:
       foreground = non-zero, objects = 8-connected components (skimage.measure.label, connectivity=2).
       Two values that are both non-zero -> DataError (no background).
    2. More than two values, integer (or integral floats), non-negative: already instance labels;
       kept, relabelled to 1..N in order of value (an object may be split in pieces: it stays one object).
    3. RGB(A) with identical channels: the one channel, then rules 1-2. Other colour masks: black is
       background; two colours -> rule 1; more -> each colour is one object.
    Negative or non-integral values (with more than two values) -> DataError.
    """
    # lazy: scikit-image, only when masks are split into instances: seglearn.data imports without it
    from skimage.segmentation import relabel_sequential

    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            arr = rgb[..., 0]
        else:
            return _colour_instances(rgb, name)
    if arr.ndim != 2:
        raise DataError(f"mask {name} has array shape {arr.shape}; expected (H, W) labels or (H, W, 3) colours")
    if arr.dtype == bool:
        return _connected(arr)
    if arr.dtype.kind not in "uif":
        raise DataError(f"mask {name} has value type {arr.dtype}; expected integer labels")
    values = np.unique(arr)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise DataError(f"mask {name} contains NaN or infinite values")
    if len(values) <= 2:
        nonzero = values[values != 0]
        if len(nonzero) == 2:
            raise DataError(
                f"mask {name} has two values {values[0]:g} and {values[1]:g}, neither of them 0; "
                "background must be 0"
            )
        return _connected(arr != 0)
    if values[0] < 0:
        raise DataError(f"mask {name} has negative values (min {values[0]:g}); labels must be >= 0")
    if arr.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise DataError(f"mask {name} has non-integer values with more than two levels; expected labels")
    if values[-1] > np.iinfo(np.int32).max:
        raise DataError(f"mask {name} has label {values[-1]:g}, beyond int32")
    labels, _, _ = relabel_sequential(arr.astype(np.int64))
    return labels.astype(np.int32)


def read_mask(
    path: str | os.PathLike,
    shape: tuple[int, int] | None = None,
    image_name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a mask file as int32 (H, W) instance labels (rules: :func:`instances_from_mask`).

    Palette PNG masks are read as their palette indices (the usual way label PNGs are stored),
    except when every colour used is gray (GIF masks): then as those gray values.
    JPEG masks are lossy, so their values are thresholded at half range before rule 1.
    ``shape`` (H, W) of the image the mask belongs to: a different size is a DataError naming both.
    """
    arr, _ = _decode(path, max_pixels, "mask", for_mask=True)
    path = Path(os.fspath(path))
    where = display_path(path)
    if path.suffix.lower() in LOSSY_SUFFIXES:
        gray = arr if arr.ndim == 2 else arr[..., :3].max(axis=-1)
        arr = gray >= 128  # JPEG ringing around 0/255 edges would otherwise become objects
    labels = instances_from_mask(arr, name=where)
    if shape is not None and tuple(labels.shape) != tuple(shape[:2]):
        img = f"its image {image_name}" if image_name else "its image"
        raise DataError(
            f"mask {where} is {labels.shape[0]}x{labels.shape[1]} but {img} is "
            f"{shape[0]}x{shape[1]} (rows x columns)"
        )
    return labels


def write_mask(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write instance labels as a 16-bit grayscale PNG (lossless), atomically.

    The PNG is written to a temporary file in the same folder, fsynced, then moved over ``path`` with
    os.replace, so a reader never sees a half-written mask and a crash leaves the old file intact.
    """
    path = Path(os.fspath(path))
    arr = np.asarray(labels)
    where = display_path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"mask {where}: masks are written as PNG; use a .png file name")
    if arr.ndim != 2:
        raise DataError(f"mask {where}: labels must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype != bool and arr.dtype.kind not in "ui":
        raise DataError(f"mask {where}: labels must be integers, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(f"mask {where}: labels must lie in 0..65535 for a 16-bit PNG (got {arr.min()}..{arr.max()})")
    path.parent.mkdir(parents=True, exist_ok=True)
    # No folder fsync per mask: an import writes thousands; the rename is atomic all the same.
    with atomic.output(path, sync_dir=False) as fh:
        Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16)).save(fh, format="PNG")
    return path
