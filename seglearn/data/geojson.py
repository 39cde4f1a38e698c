"""QuPath GeoJSON <-> instance masks.

Coordinates are pixels of the image, ``x`` = column, ``y`` = row, with QuPath's pixel-corner
convention: pixel ``(r, c)`` is the unit square ``[c, c+1] x [r, r+1]``, so its centre is
``(c + 0.5, r + 0.5)``.

Writing (:func:`mask_to_features`): each instance's outline is the exact boundary of its pixels,
built by shapely as the union of one rectangle per run of pixels in a row (no contour
approximation; collinear vertices are then removed with ``simplify(0)``). Holes become interior
rings; an instance whose pixels touch only at a corner becomes a MultiPolygon (one object).

Reading (:func:`rasterise`): a pixel belongs to a feature when its centre lies inside the geometry
(``shapely.contains_xy``, holes excluded). With the outlines written as above, the centres never
lie on a boundary, so mask -> GeoJSON -> mask is exact (IoU 1); for polygons drawn in QuPath it is
the usual centre-sampling rule. One instance per feature (a MultiPolygon is one object, as in
QuPath); where features overlap, the later one wins (a warning counts the pixels).

shapely (>= 2) checks and repairs geometry: a self-intersecting polygon is repaired with
``shapely.make_valid`` (polygonal parts kept, a warning names the feature) or refused when nothing
with an area is left. Features outside the image are clipped to it with a warning.
"""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from seglearn import atomic
from seglearn.data.errors import DataError, display_path

GEOJSON_EXTS = (".geojson", ".json")
DEFAULT_CLASS = "Gland"
DEFAULT_COLOR = (0, 200, 0)  # QuPath stores an RGB triple per classification
# Namespace of the feature ids seglearn writes (uuid5 of it and a pre-annotation key): QuPath
# keeps a feature's "id" as the object's id, so an edited export still names where it started.
ID_NAMESPACE = uuid.UUID("5e61ea2a-7c2d-4c0b-9a4e-3f1d0b6a2e10")
_POLY_TYPES = ("Polygon", "MultiPolygon")


def feature_ids(key: str, n: int) -> list[str]:
    """The ids :func:`mask_to_features` gives instances 1..n when written under ``key``."""
    return [str(uuid.uuid5(ID_NAMESPACE, f"{key}/{k}")) for k in range(1, n + 1)]


# ---------------------------------------------------------------- writing
def instance_geometry(mask: np.ndarray):
    """The exact pixel outline of the True pixels of a 2-D bool array, pixel-corner coordinates."""
    # lazy: shapely, an optional dependency, only where geometry is built
    import shapely

    rows, starts, ends = _runs(mask)
    boxes = shapely.box(starts, rows, ends, rows + 1)
    geom = shapely.union_all(boxes)  # exact: every box corner is an integer
    return shapely.simplify(geom, 0)  # drop the collinear vertices between runs


def _runs(mask: np.ndarray):
    """(row, start column, end column exclusive) of every horizontal run of True pixels."""
    pad = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    pad[:, 1:-1] = mask
    d = np.diff(pad, axis=1)
    r0, c0 = np.nonzero(d == 1)
    r1, c1 = np.nonzero(d == -1)  # same row-major order, so starts and ends pair up
    assert np.array_equal(r0, r1)
    return r0.astype(np.float64), c0.astype(np.float64), c1.astype(np.float64)


def mask_to_features(labels: np.ndarray, class_name: str = DEFAULT_CLASS,
                     color: tuple[int, int, int] = DEFAULT_COLOR, id_key: str | None = None,
                     offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> list[dict]:
    """One QuPath annotation feature per instance of ``labels`` (0 = background), in label order.

    ``id_key``: give the features the ids :func:`feature_ids` names (else no id). ``offset``,
    ``scale``: coordinate = pixel coordinate * scale + offset (an image that is a region of a
    larger one, e.g. a tile of pyramid level L of a slide: scale = the level's downsample,
    offset = the tile's level-0 corner, so the outline lands in slide coordinates)."""
    # lazy: shapely, an optional dependency, only where geometry is built
    import shapely.affinity
    import shapely.geometry
    labels = np.asarray(labels)
    feats = []
    values = [int(v) for v in np.unique(labels) if v != 0]
    slices = ndimage.find_objects(labels.astype(np.int64)) if values else []
    ids = feature_ids(id_key, len(values)) if id_key is not None else [None] * len(values)
    for fid, v in zip(ids, values):
        sl = slices[v - 1]
        geom = instance_geometry(labels[sl] == v)
        geom = shapely.affinity.translate(geom, sl[1].start, sl[0].start)
        if scale != 1:
            geom = shapely.affinity.scale(geom, scale, scale, origin=(0, 0))
        geom = shapely.affinity.translate(geom, offset[0], offset[1])
        feat = {"type": "Feature", "geometry": shapely.geometry.mapping(geom),
                "properties": {"objectType": "annotation",
                               "classification": {"name": class_name, "color": list(color)}}}
        if fid is not None:
            feat["id"] = fid
        feats.append(feat)
    return feats


def to_geojson(labels: np.ndarray, **kw) -> str:
    """A QuPath-importable FeatureCollection of ``labels`` (see :func:`mask_to_features`)."""
    return json.dumps({"type": "FeatureCollection", "features": mask_to_features(labels, **kw)})


def write_geojson(path: str | Path, labels: np.ndarray, **kw) -> Path:
    """Write :func:`to_geojson` to ``path`` atomically; returns the path."""
    return atomic.write_text(Path(path), to_geojson(labels, **kw))


# ---------------------------------------------------------------- reading
def read_features(path: str | Path) -> list[dict]:
    """The features of a GeoJSON file: a FeatureCollection, a list of features, or one feature."""
    path = Path(path)
    where = display_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"GeoJSON file {where} is not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"GeoJSON file {where} is not valid JSON: {e.msg} at line {e.lineno}, "
                        f"column {e.colno}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        feats = [data]
    else:
        feats = data
    if not isinstance(feats, list) or not all(isinstance(f, dict) for f in feats):
        raise DataError(f"GeoJSON file {where} holds neither a FeatureCollection nor a list of "
                        "features (QuPath: File > Export objects as GeoJSON)")
    return feats


def class_name(feature: dict) -> str | None:
    """The feature's classification name (QuPath: ``properties.classification.name``)."""
    props = feature.get("properties") or {}
    cls = props.get("classification") if isinstance(props, dict) else None
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _describe(i: int, feature: dict) -> str:
    extra = [f"id {feature['id']}"] if feature.get("id") else []
    name = (feature.get("properties") or {}).get("name") if isinstance(
        feature.get("properties"), dict) else None
    if name:
        extra.append(f"name {name!r}")
    return f"feature {i + 1}" + (f" ({', '.join(extra)})" if extra else "")


def _geometry(feature: dict, what: str):
    """The feature's geometry as a valid shapely (Multi)Polygon, repaired when needed."""
    # lazy: shapely, an optional dependency, only where geometry is read
    import shapely
    from shapely.geometry import shape

    g = feature.get("geometry")
    if not isinstance(g, dict) or g.get("type") not in _POLY_TYPES:
        return None
    try:
        geom = shape(g)
    except Exception as e:  # noqa: BLE001 - shapely raises several types for bad coordinates
        raise DataError(f"{what}: {g.get('type')} coordinates are malformed ({e})") from None
    if geom.is_empty:
        return geom
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        fixed = shapely.make_valid(geom)
        parts = [p for p in shapely.get_parts(fixed) if p.geom_type in _POLY_TYPES]
        geom = shapely.union_all(parts) if parts else shapely.Polygon()
        if geom.area <= 0:
            raise DataError(f"{what}: the {g.get('type')} is invalid ({reason}) and has no area "
                            "after repair; fix or delete it in QuPath")
        warnings.warn(f"{what}: invalid {g.get('type')} ({reason}) repaired with make_valid",
                      stacklevel=3)
    return geom


def rasterise(features: list[dict], shape: tuple[int, int], source: str = "GeoJSON",
              class_filter: str | None = None, offset: tuple[float, float] = (0.0, 0.0),
              scale: float = 1.0, warn_clipped: bool = True) -> np.ndarray:
    """Instance mask (uint16, H x W) of the Polygon/MultiPolygon features: feature k -> label k
    (counting kept features), pixel centres inside the geometry, holes excluded.

    ``class_filter``: keep only features of that classification name. Other geometry types
    (points, lines) are skipped with a warning; parts outside the image are clipped with one
    (``warn_clipped=False``: silently, for an image that is one tile of the features' slide).
    ``offset``, ``scale``: the inverse of :func:`mask_to_features`'s, pixel coordinate =
    (coordinate - offset) / scale (features in slide coordinates, the image a tile of it)."""
    # lazy: shapely, an optional dependency, only where geometry is rasterised
    import shapely
    import shapely.affinity

    h, w = shape
    frame = shapely.box(0, 0, w, h)
    out = np.zeros((h, w), dtype=np.uint16)
    skipped, clipped, outside, overlap, label = [], [], [], 0, 0
    for i, f in enumerate(features):
        what = f"{source} {_describe(i, f)}"
        if class_filter is not None and class_name(f) != class_filter:
            continue
        geom = _geometry(f, what)
        if geom is None:
            skipped.append(str((f.get("geometry") or {}).get("type")))
            continue
        if geom.is_empty:
            continue
        if offset != (0.0, 0.0) or scale != 1:
            geom = shapely.affinity.affine_transform(
                geom, [1 / scale, 0, 0, 1 / scale, -offset[0] / scale, -offset[1] / scale])
        if not frame.contains(geom):
            clipped.append(i + 1)
            geom = geom.intersection(frame)
            if geom.area <= 0:
                outside.append(i + 1)
                continue
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        inside = shapely.contains_xy(geom, xx + 0.5, yy + 0.5)
        if not inside.any():
            continue  # thinner than a pixel: no pixel centre inside
        label += 1
        if label > np.iinfo(np.uint16).max:
            raise DataError(f"{source}: more than 65535 objects do not fit a 16-bit label mask")
        region = out[r0:r1, c0:c1]
        overlap += int(np.count_nonzero(region[inside]))
        region[inside] = label
    if skipped:
        kinds = ", ".join(sorted(set(skipped)))
        warnings.warn(f"{source}: {len(skipped)} feature(s) skipped: not Polygon/MultiPolygon "
                      f"({kinds})", stacklevel=2)
    if clipped and warn_clipped:
        gone = f"; {len(outside)} lie entirely outside and were dropped" if outside else ""
        warnings.warn(f"{source}: {len(clipped)} feature(s) reach outside the {w}x{h} image and "
                      f"were clipped to it (features {_short(clipped)}){gone}", stacklevel=2)
    if overlap:
        warnings.warn(f"{source}: features overlap on {overlap} pixel(s); the later feature "
                      "keeps them", stacklevel=2)
    return out


def _short(nums: list[int], k: int = 8) -> str:
    return ", ".join(map(str, nums[:k])) + (f" and {len(nums) - k} more" if len(nums) > k else "")


def read_geojson_mask(path: str | Path, shape: tuple[int, int],
                      class_filter: str | None = None) -> np.ndarray:
    """:func:`rasterise` of the features of the GeoJSON file ``path``."""
    return rasterise(read_features(path), shape, f"GeoJSON file {display_path(path)}",
                     class_filter)
