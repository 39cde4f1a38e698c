"""Finding images and their masks on disk: the GlaS layout and plain image/mask folders.

Importers only list files and pair them; nothing is decoded here (sizes are checked when a
workspace reads them). The accepted layouts are described in data/README.md.

Nothing is dropped silently: an entry of an input folder that is not read (a type seglearn does not
read, a dangling symbolic link, a folder, a GlaS image without its annotation ...) is named in one
:class:`SkippedFilesWarning` per folder, with the count (:func:`warn_skipped`). Hidden entries
(``.DS_Store``, macOS ``._x.png``, seglearn's own ``.tmp-*`` files) are the one exception.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from seglearn.data.errors import DataError, display_name, display_path

# The file types every command reads, images and masks alike (init, label, predict): one list.
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".gif", ".nii", ".nii.gz")
MAX_LISTED = 20  # names shown in a skipped-files warning; the rest are counted
MASK_TAGS = ("_mask", "_anno")
SPLITS = ("train", "pool", "test")
_GLAS_RE = re.compile(r"^(train|testa|testb)_(\d+)(_anno)?$", re.IGNORECASE)
_GLAS_ORDER = {"train": 0, "testa": 1, "testb": 2}


@dataclass(frozen=True)
class SourceImage:
    """One image found on disk. ``split``: "train" (labeled), "pool" (to annotate; a mask, if any,
    is the hidden oracle) or "test". ``name`` is printable text even for non-UTF-8 file names."""

    name: str
    image_path: Path
    mask_path: Path | None
    split: str

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} of {self.name!r} is not one of {', '.join(SPLITS)}")


def split_suffix(path: Path) -> tuple[str, str]:
    """(stem, suffix) with ``.nii.gz`` as one suffix; suffix lower-cased, '' if not an image type."""
    name = path.name
    low = name.lower()
    for suf in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suf):
            return name[: -len(suf)], suf
    return name, ""


class SkippedFilesWarning(UserWarning):
    """Entries of an input folder that were not read; the message names them and counts them."""


@dataclass(frozen=True)
class Skipped:
    """One entry of an input folder that is not read, and why."""

    path: Path
    reason: str


NOT_AN_IMAGE = f"not a type seglearn reads ({', '.join(IMAGE_SUFFIXES)})"


def list_images(folder: str | os.PathLike, what: str) -> tuple[list[Path], list[Skipped]]:
    """Image files directly in ``folder`` (by name, in byte order) and the entries not read, with
    why: another file type, a dangling symbolic link, a folder (subfolders are not read), not a
    regular file. Hidden entries are neither (see the module docstring). DataError if ``folder``
    is missing or not a folder; ``what`` names it in that message ("images", "masks" ...)."""
    folder = Path(os.fspath(folder))
    if not folder.exists():
        raise DataError(f"{what} folder {display_path(folder)} does not exist")
    if not folder.is_dir():
        raise DataError(f"{what} folder {display_path(folder)} is not a folder")
    files: list[Path] = []
    skipped: list[Skipped] = []
    for entry in sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name)):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink() and not os.path.exists(entry.path):
            skipped.append(Skipped(path, "a symbolic link to a missing file"))
        elif entry.is_dir():
            skipped.append(Skipped(path, "a folder (subfolders are not read)"))
        elif not entry.is_file():
            skipped.append(Skipped(path, "not a regular file"))
        elif not split_suffix(path)[1]:
            skipped.append(Skipped(path, NOT_AN_IMAGE))
        else:
            files.append(path)
    return files, skipped


def skipped_message(skipped: list[Skipped], root: Path | None = None) -> str:
    """``N entries not read: REASON: a, b; REASON: c``, naming at most MAX_LISTED of them (by file
    name, or by path below ``root`` when given)."""
    by_reason: dict[str, list[Skipped]] = {}
    for s in skipped:
        by_reason.setdefault(s.reason, []).append(s)
    parts, shown = [], 0
    for reason, group in by_reason.items():
        names = [display_path(s.path.relative_to(root)) if root else display_name(s.path)
                 for s in group[: max(MAX_LISTED - shown, 0)]]
        shown += len(names)
        if names:
            parts.append(f"{reason}: {', '.join(names)}")
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    n = len(skipped)
    return f"{n} {'entry' if n == 1 else 'entries'} not read: {'; '.join(parts)}{more}"


def warn_skipped(skipped: list[Skipped], where: str, root: Path | None = None) -> None:
    """One :class:`SkippedFilesWarning` naming ``skipped`` (nothing when it is empty). The CLI
    prints it as one ``warning: ...`` line on stderr."""
    if skipped:
        warnings.warn(f"{where}: {skipped_message(skipped, root)}", SkippedFilesWarning,
                      stacklevel=3)


def _image_files(folder: Path, what: str) -> list[Path]:
    """:func:`list_images`, warning about what it skips."""
    files, skipped = list_images(folder, what)
    warn_skipped(skipped, f"{what} folder {display_path(folder)}")
    return files


def _warn_undecodable(paths: list[Path]) -> None:
    bad = [p for p in paths if display_name(p) != p.name]
    if bad:
        shown = ", ".join(display_path(p) for p in bad[:5])
        warnings.warn(
            f"{len(bad)} file name(s) are not valid UTF-8 and are listed with \\xNN escapes: {shown}",
            stacklevel=3,
        )


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        stem = split_suffix(path)[0]
        if stem in out:
            raise DataError(
                f"two {what} files share the name {display_name(stem)!r}: {display_path(out[stem])} and "
                f"{display_path(path)}; keep one of them"
            )
        out[stem] = path
    return out


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def scan_glas(root: str | os.PathLike) -> list[SourceImage]:
    """The GlaS layout: ``train_N.{bmp,png}`` + ``train_N_anno.{bmp,png}``, ``testA_N...``, ``testB_N...``.

    Files may sit in ``root`` itself or in its subfolders (``train/``, ``testA/``, ``testB/``, or any
    other one level down). Training images become split "pool" (their masks are the hidden oracle of
    the active-learning simulation), testA/testB images split "test". An image without its
    ``_anno`` file is skipped (the simulation's oracle could not label it, evaluation could not
    score it) and named in a SkippedFilesWarning, as are image files with other names; files of
    other types (``Grade.csv``, ``README``) are part of the layout and ignored.
    """
    root = Path(os.fspath(root))
    folders = [root] + [Path(e.path) for e in sorted(os.scandir(root), key=lambda e: e.name)
                        if e.is_dir() and not e.name.startswith(".")] if root.is_dir() else [root]
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    skipped: list[Skipped] = []
    for folder in folders:
        files, other = list_images(folder, "GlaS")
        # The subfolders of the root are read; other files (Grade.csv, README) are part of GlaS.
        skipped += [s for s in other if s.reason != NOT_AN_IMAGE and s.path not in folders]
        for path in files:
            stem = split_suffix(path)[0]
            m = _GLAS_RE.match(stem)
            if not m:
                skipped.append(Skipped(path, "not a GlaS name (train_N, testA_N, testB_N, *_anno)"))
                continue
            key = f"{m.group(1).lower()}_{int(m.group(2))}"
            table = masks if m.group(3) else images
            if key in table:
                raise DataError(
                    f"GlaS file {display_path(path)} duplicates {display_path(table[key])}; "
                    "keep one of them (BMP or PNG, one folder)"
                )
            table[key] = path
    for key, mask in masks.items():
        if key not in images:
            raise DataError(f"GlaS annotation {display_path(mask)} has no image (expected {key}.bmp or .png beside it)")
    if not images:
        raise DataError(
            f"no GlaS images in {display_path(root)}: expected train_N.bmp/png, testA_N..., testB_N... "
            "there or in its train/, testA/, testB/ subfolders"
        )
    out = []
    for key, path in images.items():
        if key not in masks:  # without it the image is neither an oracle-labelable nor a test image
            stem = split_suffix(path)[0]
            skipped.append(Skipped(path, f"a GlaS image without its annotation ({stem}_anno.bmp/png)"))
            continue
        part, num = key.split("_")
        split = "pool" if part == "train" else "test"
        out.append((_GLAS_ORDER[part], int(num), SourceImage(split_suffix(path)[0], path, masks.get(key), split)))
    warn_skipped(sorted(skipped, key=lambda s: _natural_key(str(s.path))),
                 f"GlaS folder {display_path(root)}", root=root)
    if not out:
        raise DataError(f"no GlaS image in {display_path(root)} has its annotation "
                        "(train_N_anno.bmp/png beside train_N.bmp/png)")
    return [rec for _, _, rec in sorted(out, key=lambda t: (t[0], t[1]))]


def _mask_base(stem: str) -> str | None:
    low = stem.lower()
    for tag in MASK_TAGS:
        if low.endswith(tag) and len(stem) > len(tag):
            return stem[: -len(tag)]
    return None


def scan_folders(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    mask_split: str = "train",
) -> list[SourceImage]:
    """Images in ``images_dir`` paired with masks by file stem.

    A mask matches image ``<stem>.*`` when it is named ``<stem>.*``, ``<stem>_mask.*`` or
    ``<stem>_anno.*`` (in ``masks_dir``; without ``masks_dir`` the ``_mask``/``_anno`` files beside the
    images are the masks). Images with a mask get split ``mask_split`` ("train": the masks are labels
    the user already has; "pool": they are an oracle for simulation); images without one, "pool".
    Errors (DataError): missing or empty folder, two images with one stem (a.png and a.tif), a mask
    with no image, an image with two masks.
    """
    if mask_split not in SPLITS:
        raise ValueError(f"mask_split {mask_split!r} is not one of {', '.join(SPLITS)}")
    images_dir = Path(os.fspath(images_dir))
    files = _image_files(images_dir, "images")
    same_folder = masks_dir is None or Path(os.fspath(masks_dir)).resolve() == images_dir.resolve()
    if same_folder:
        mask_files = [p for p in files if _mask_base(split_suffix(p)[0]) is not None]
        files = [p for p in files if _mask_base(split_suffix(p)[0]) is None]
    else:
        mask_files = _image_files(Path(os.fspath(masks_dir)), "masks")
    if not files:
        raise DataError(f"no images in {display_path(images_dir)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    _warn_undecodable(files + mask_files)
    images = _by_stem(files, "image")
    pairs: dict[str, Path] = {}
    for mask in mask_files:
        stem = split_suffix(mask)[0]
        base = stem if (stem in images and not same_folder) else _mask_base(stem)
        if base is None or base not in images:
            raise DataError(
                f"mask {display_path(mask)} has no image: expected an image named {display_name(base or stem)}.* "
                f"in {display_path(images_dir)}"
            )
        if base in pairs:
            raise DataError(
                f"image {display_path(images[base])} has two masks: {display_path(pairs[base])} and "
                f"{display_path(mask)}; keep one of them"
            )
        pairs[base] = mask
    out = [
        SourceImage(display_name(stem), path, pairs.get(stem), mask_split if stem in pairs else "pool")
        for stem, path in images.items()
    ]
    return sorted(out, key=lambda r: _natural_key(r.name))
