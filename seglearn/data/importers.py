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


# --------------------------------------------------------------- naming patterns

PATTERN_HELP = ("a template with {id} (e.g. '{id}_manual1.gif') or a regular expression with a "
                "named group (?P<id>...)")


@dataclass(frozen=True)
class NamePattern:
    """``--image-pattern`` / ``--mask-pattern``: how the pairing key is read from a file name.

    A template such as ``{id}_manual1.gif`` matches the whole file name with ``{id}`` standing for
    one or more characters (the key); the rest is literal and compared case-insensitively (``.GIF``
    = ``.gif``, as on the file systems of macOS and Windows). A regular expression with a named
    group ``(?P<id>...)`` must match the whole file name (``re.fullmatch``, as written). Either may
    leave out the file type: the name without its suffix (``21_manual1``) is tried too.
    """

    text: str
    option: str
    regex: re.Pattern

    def key(self, path: Path) -> str | None:
        """The key of ``path``'s file name, or None when the name does not fit the pattern."""
        for name in (path.name, split_suffix(path)[0]):
            m = self.regex.fullmatch(name)
            if m and m.group("id"):
                return m.group("id")
        return None


def name_pattern(text: str | None, option: str) -> NamePattern | None:
    """A :class:`NamePattern` from the option's text (None stays None). DataError naming
    ``option`` when the text is neither a template with exactly one ``{id}`` nor a regular
    expression with the named group ``id``."""
    if text is None:
        return None
    if "(?P<id>" in text:
        try:
            regex = re.compile(text)
        except re.error as exc:
            raise DataError(f"{option} {text!r} is not a valid regular expression: {exc}") from None
    elif text.count("{id}") == 1:
        head, tail = text.split("{id}")
        regex = re.compile(f"{re.escape(head)}(?P<id>.+?){re.escape(tail)}", re.IGNORECASE)
    else:
        raise DataError(f"{option} {text!r}: expected {PATTERN_HELP}")
    return NamePattern(text, option, regex)


def _suggested_patterns(image: Path, mask: Path) -> str:
    """Pattern options that would pair ``image`` with ``mask``: the two names' common beginning
    (to its last letter or digit) taken as the key, e.g. 21_training.tif + 21_manual1.gif ->
    --image-pattern '{id}_training.tif' --mask-pattern '{id}_manual1.gif'."""
    common = os.path.commonprefix([image.name, mask.name])
    key = re.sub(r"[^0-9A-Za-z]+$", "", common)
    if not key:
        return ("--image-pattern '{id}_training.tif' --mask-pattern '{id}_manual1.gif' (or a regex "
                "with a named group (?P<id>...))")
    return (f"--image-pattern '{{id}}{image.name[len(key):]}' --mask-pattern "
            f"'{{id}}{mask.name[len(key):]}' (or a regex with a named group (?P<id>...))")


def no_pair_error(images_where: str, image_example: Path, masks_where: str, mask_example: Path,
                  patterns: tuple[NamePattern | None, NamePattern | None]) -> DataError:
    """The error of a masks folder of which no file pairs with an image: an example of each
    name, the rule that was applied, and the pattern options that would pair them."""
    image_pattern, mask_pattern = patterns
    rule = (f"keys read with {', '.join(f'{p.option} {p.text!r}' for p in patterns if p)}"
            if any(patterns) else "masks are matched by the image's name: <stem>.*, <stem>_mask.* "
            "or <stem>_anno.*")
    return DataError(
        f"no mask in {masks_where} pairs with an image in {images_where} ({rule}): e.g. image "
        f"{display_name(image_example)!r}, mask {display_name(mask_example)!r}; to pair other "
        f"names give {_suggested_patterns(image_example, mask_example)}"
    )


def _keyed(files: list[Path], pattern: NamePattern | None, what: str,
           skipped: list[Skipped]) -> dict[str, Path]:
    """{key: file} by ``pattern`` (files that do not fit it are added to ``skipped``), or by stem
    without one; two files with one key are a DataError."""
    if pattern is None:
        return _by_stem(files, what)
    out: dict[str, Path] = {}
    for path in files:
        key = pattern.key(path)
        if key is None:
            skipped.append(Skipped(path, f"does not match {pattern.option} {pattern.text!r}"))
        elif key in out:
            raise DataError(
                f"two {what} files have the key {display_name(key)!r} ({pattern.option} "
                f"{pattern.text!r}): {display_path(out[key])} and {display_path(path)}; keep one"
            )
        else:
            out[key] = path
    return out


def scan_folders(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    mask_split: str = "train",
    image_pattern: str | None = None,
    mask_pattern: str | None = None,
) -> list[SourceImage]:
    """Images in ``images_dir`` paired with masks by file stem, or by a key the patterns read.

    Without patterns a mask matches image ``<stem>.*`` when it is named ``<stem>.*``,
    ``<stem>_mask.*`` or ``<stem>_anno.*`` (in ``masks_dir``; without ``masks_dir`` the
    ``_mask``/``_anno`` files beside the images are the masks). ``image_pattern`` /
    ``mask_pattern`` (:class:`NamePattern`: ``'{id}_training.tif'``, ``'{id}_manual1.gif'`` or a
    regex with ``(?P<id>...)``) read a key from each name instead (an image without a pattern is
    keyed by its stem); files that do not fit a pattern are skipped and named in the warning, and
    beside the images the files that fit ``mask_pattern`` are the masks. The item keeps the
    image's stem as its name. Images with a mask get split ``mask_split`` ("train": the masks are
    labels the user already has; "pool": an oracle for simulation; "test"); images without one,
    "pool". Errors (DataError): missing or empty folder, two images with one key (a.png and
    a.tif), a mask with no image, an image with two masks, a masks folder none of whose files
    pairs with an image (:func:`no_pair_error`).
    """
    if mask_split not in SPLITS:
        raise ValueError(f"mask_split {mask_split!r} is not one of {', '.join(SPLITS)}")
    patterns = (name_pattern(image_pattern, "--image-pattern"),
                name_pattern(mask_pattern, "--mask-pattern"))
    images_dir = Path(os.fspath(images_dir))
    files, skipped = list_images(images_dir, "images")
    same_folder = masks_dir is None or Path(os.fspath(masks_dir)).resolve() == images_dir.resolve()
    if same_folder:
        is_mask = (lambda p: patterns[1].key(p) is not None) if patterns[1] else \
            (lambda p: _mask_base(split_suffix(p)[0]) is not None)
        mask_files = [p for p in files if is_mask(p)]
        files = [p for p in files if not is_mask(p)]
        mask_skipped: list[Skipped] = []
    else:
        mask_files, mask_skipped = list_images(Path(os.fspath(masks_dir)), "masks")
    if not files:
        raise DataError(f"no images in {display_path(images_dir)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    _warn_undecodable(files + mask_files)
    images = _keyed(files, patterns[0], "image", skipped)
    if not images:
        raise DataError(f"no image in {display_path(images_dir)} matches {patterns[0].option} "
                        f"{patterns[0].text!r}: e.g. {display_name(files[0])!r}")
    if patterns[0]:  # an item is named by its image's stem: one stem once, whatever the keys
        _by_stem(list(images.values()), "image")
    where_masks = display_path(images_dir if same_folder else Path(os.fspath(masks_dir)))
    if not same_folder and not mask_files:  # an empty masks folder given on purpose is a mistake
        raise DataError(f"masks folder {where_masks} contains no mask files (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)})"
                        + (f"; {skipped_message(mask_skipped)}" if mask_skipped else ""))
    if same_folder and patterns[1] and not mask_files:
        raise DataError(f"no file in {where_masks} matches --mask-pattern {patterns[1].text!r}: "
                        f"e.g. {display_name(files[0])!r}; expected {PATTERN_HELP}")
    # (key, mask) in name order; without a pattern the key is the stem (duplicates are caught
    # below as "two masks" of one image)
    masks = list(_keyed(mask_files, patterns[1], "mask", mask_skipped).items()) if patterns[1] \
        else [(split_suffix(p)[0], p) for p in mask_files]
    if not same_folder and not any(
            k in images or (not patterns[1] and _mask_base(k) in images) for k, _ in masks):
        raise no_pair_error(display_path(images_dir), next(iter(images.values())), where_masks,
                            mask_files[0], patterns)
    pairs: dict[str, Path] = {}
    for stem, mask in masks:
        if patterns[1]:
            base = stem
        else:
            base = stem if (stem in images and not same_folder) else _mask_base(stem)
        if base is None or base not in images:
            expected = (f"an image with the key {display_name(base)!r}" if patterns[1] else
                        f"an image named {display_name(base or stem)}.*")
            raise DataError(
                f"mask {display_path(mask)} has no image: expected {expected} in {display_path(images_dir)}"
            )
        if base in pairs:
            raise DataError(
                f"image {display_path(images[base])} has two masks: {display_path(pairs[base])} and "
                f"{display_path(mask)}; keep one of them"
            )
        pairs[base] = mask
    warn_skipped(skipped, f"images folder {display_path(images_dir)}")
    if not same_folder:
        warn_skipped(mask_skipped, f"masks folder {where_masks}")
    out = [
        SourceImage(display_name(split_suffix(path)[0]), path, pairs.get(key),
                    mask_split if key in pairs else "pool")
        for key, path in images.items()
    ]
    return sorted(out, key=lambda r: _natural_key(r.name))


def scan_test_folders(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
    image_pattern: str | None = None,
    mask_pattern: str | None = None,
    what: str = "test images",
) -> list[SourceImage]:
    """A labeled folder as split "test" (``init --test-images``, ``evaluate --images``): paired as
    :func:`scan_folders` pairs. An image without a mask cannot be scored: it is named in a
    SkippedFilesWarning (as GlaS test images without annotation are), and a folder none of whose
    images has a mask is a DataError. ``what`` names the folder in the messages."""
    sources = scan_folders(images_dir, masks_dir, mask_split="test", image_pattern=image_pattern,
                           mask_pattern=mask_pattern)
    where = display_path(Path(os.fspath(images_dir)))
    scored = [s for s in sources if s.mask_path is not None]
    if not scored:
        raise DataError(f"{what}: no image in {where} has a mask, so none can be scored"
                        + ("" if masks_dir is not None else " (give its masks folder: --test-masks DIR)"))
    warn_skipped([Skipped(s.image_path, "an image without a mask (it cannot be scored)")
                  for s in sources if s.mask_path is None], f"{what} folder {where}")
    return scored
