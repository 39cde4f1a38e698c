"""Synthetic data: H&E-like gland images with instance masks (the demo's data set), and thin
branching structures (vessel-like trees, :func:`synth_vessels`) with binary masks.

A colon-gland caricature after the GlaS images (Sirinukunwattana et al., MedIA 2017): pink eosin
stroma with oriented fibres, scattered elongated stromal nuclei and pale loose-tissue spaces;
glands as wobbly ellipses (2-8 per image, varied size, elongation and orientation) made of a ring
of purple epithelium packed with dark hematoxylin nuclei on its basal side, around a pale lumen
(sometimes pink with mucin, sometimes absent), some with a pale retraction cleft outside. About a
third of the glands are placed against an earlier one, so touching pairs (one shared border, two
instances) are common and a binary foreground alone cannot separate them. The image is blurred and
noisy, and the stain colours vary per image. Instance masks include the lumen (as GlaS does).

Determinism: image ``i`` of :func:`make_synthetic` uses ``SeedSequence(seed).spawn(n)[i]``, so it
does not depend on how many images were asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from seglearn.data.importers import SourceImage
from seglearn.data.io import write_mask

# Base stain colours (RGB), read off GlaS training images; jittered per image.
STROMA_LIGHT = (238, 160, 218)
STROMA_DARK = (212, 92, 190)
CYTOPLASM = (178, 96, 186)
NUCLEUS = (92, 40, 142)
LUMEN = (246, 232, 244)
MUCIN = (236, 178, 222)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, float) + rng.normal(0.0, amount, 3), 0, 255)


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: img <- (1 - alpha) img + alpha colour; colour is (3,) or (H, W, 3)."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    img *= 1.0 - a
    img += a * colour


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Anti-aliased alpha of a binary mask (why: hard 0/1 edges look synthetic and are too easy)."""
    return ndi.gaussian_filter(mask.astype(np.float32), sigma)


def _stroma(rng: np.random.Generator, h: int, w: int, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fibre texture (0..1), stromal-nucleus alpha and pale-space mask, all oriented one way."""
    side = int(np.ceil(np.hypot(h, w))) + 2
    fib = ndi.gaussian_filter(rng.normal(size=(side, side)), (0.8 * s, 6.0 * s))
    nuc = ndi.gaussian_filter((rng.random((side, side)) < 0.006 / s**2).astype(float), (0.9 * s, 2.0 * s))
    angle = rng.uniform(0, 180)
    fib, nuc = (ndi.rotate(x, angle, reshape=False, order=1, mode="reflect") for x in (fib, nuc))
    y0, x0 = (side - h) // 2, (side - w) // 2
    fib, nuc = fib[y0:y0 + h, x0:x0 + w], nuc[y0:y0 + h, x0:x0 + w]
    fib = np.clip(0.5 + 0.5 * fib / (fib.std() + 1e-9) * 0.45, 0, 1)
    fib = 0.7 * fib + 0.3 * np.clip(0.5 + ndi.gaussian_filter(rng.normal(size=(h, w)), 8 * s) * 25, 0, 1)
    nuc_alpha = np.clip(nuc / (nuc.max() + 1e-9) * 2.2 - 0.35, 0, 0.95)
    spaces = ndi.gaussian_filter(rng.normal(size=(h, w)), 3.0 * s)
    pale = spaces > np.quantile(spaces, 1.0 - rng.uniform(0.0, 0.06))
    return fib, nuc_alpha, pale


def _ellipse(shape, centre, a, b, angle, harm):
    """Wobbly ellipse in its bounding box: rho(u, v) < 1 + sum_k c_k cos(k phi + p_k)."""
    h, w = shape
    r = max(a, b) * (1.0 + sum(abs(c) for c, _ in harm)) + 2
    y0, y1 = max(int(centre[0] - r), 0), min(int(centre[0] + r) + 2, h)
    x0, x1 = max(int(centre[1] - r), 0), min(int(centre[1] + r) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    dy, dx = yy - centre[0], xx - centre[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (dx * ca + dy * sa) / a, (-dx * sa + dy * ca) / b
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    edge = 1.0 + sum(c * np.cos(k * phi + p) for k, (c, p) in enumerate(harm, start=2))
    return (slice(y0, y1), slice(x0, x1)), rho < edge


def _reach(a: float, b: float, angle: float, theta: float) -> float:
    """Radius of the (a, b, angle) ellipse in direction theta (closed form)."""
    t = theta - angle
    return a * b / np.hypot(b * np.cos(t), a * np.sin(t))


def _place_glands(rng: np.random.Generator, h: int, w: int, s: float) -> tuple[list[dict], np.ndarray]:
    """Sample 2-8 glands; about 1/3 are pushed against an earlier gland so that they touch."""
    n = int(rng.integers(2, 9))
    labels = np.zeros((h, w), np.int32)
    mean_r = np.sqrt(0.42 * h * w / (n * np.pi))
    glands: list[dict] = []
    margin = max(2, int(round(2 * s)))
    for attempt in range(n * 40):
        if len(glands) >= n or (attempt > n * 25 and len(glands) >= 2):
            break
        shrink = 0.85 ** (attempt // (n * 10))
        r = mean_r * rng.uniform(0.55, 1.05) * shrink
        elong = rng.uniform(1.0, 2.2)
        a, b = r * np.sqrt(elong), r / np.sqrt(elong)
        angle = rng.uniform(0, np.pi)
        wob = 0.15 if rng.random() < 0.25 else 0.07  # some irregular ("malignant") glands
        harm = [(rng.uniform(0, wob), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
        touch = glands and rng.random() < 0.35
        if touch:
            j = int(rng.integers(len(glands)))
            g = glands[j]
            theta = rng.uniform(0, 2 * np.pi)
            dist = (_reach(g["a"], g["b"], g["angle"], theta) + _reach(a, b, angle, theta + np.pi)) * rng.uniform(0.85, 0.97)
            centre = (g["centre"][0] + dist * np.sin(theta), g["centre"][1] + dist * np.cos(theta))
            if not (0.05 * h < centre[0] < 0.95 * h and 0.05 * w < centre[1] < 0.95 * w):
                continue
        else:
            centre = (rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w)
        sl, m = _ellipse((h, w), centre, a, b, angle, harm)
        if m.sum() < 40 * s * s:
            continue
        near = ndi.binary_dilation(labels > 0, iterations=margin)[sl] if glands else np.zeros_like(m)
        if touch:
            own = labels[sl] == glands[j]["label"]
            others = near & ~ndi.binary_dilation(labels == glands[j]["label"], iterations=margin)[sl]
            overlap = (m & own).sum()
            if (m & others).any() or overlap == 0 or overlap > 0.2 * m.sum():
                continue
        elif (m & near).any():
            continue
        lab = len(glands) + 1
        labels[sl][m & (labels[sl] == 0)] = lab  # the earlier gland keeps the overlap: a shared border
        glands.append(dict(label=lab, centre=centre, a=a, b=b, angle=angle))
    return glands, labels


def synth_image(rng: np.random.Generator, size: tuple[int, int] = (128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic sample: (uint8 (H, W, 3) RGB image, int32 (H, W) instance labels 1..N)."""
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"synthetic images need at least 32x32 pixels, got {h}x{w}")
    s = min(h, w) / 128.0  # every length below is in pixels of a 128-pixel image
    fib, stroma_nuc, pale = _stroma(rng, h, w, s)
    light, dark = _jitter(rng, STROMA_LIGHT, 8), _jitter(rng, STROMA_DARK, 10)
    img = light[None, None] * (1 - fib[..., None]) + dark[None, None] * fib[..., None]
    _blend(img, _soft(pale, 0.8 * s) * 0.85, _jitter(rng, LUMEN, 4))
    _blend(img, stroma_nuc, _jitter(rng, NUCLEUS, 8) * 0.9)

    _, labels = _place_glands(rng, h, w, s)
    labels = _drop_slivers(labels, min_area=30 * s * s)
    cyto, nuc_col = _jitter(rng, CYTOPLASM, 10), _jitter(rng, NUCLEUS, 8)
    epi = np.zeros((h, w), bool)
    lumen = np.zeros((h, w), bool)
    band = np.zeros((h, w), bool)
    cleft = np.zeros((h, w), bool)
    lumen_col = np.broadcast_to(_jitter(rng, LUMEN, 4), (h, w, 3)).copy()
    for lab in range(1, int(labels.max()) + 1):
        g = labels == lab
        # edge padding: a gland cut by the image border continues beyond it, so its lumen may too
        pad = max(h, w) // 2
        depth = ndi.distance_transform_edt(np.pad(g, pad, mode="edge"))[pad:-pad, pad:-pad]
        thick = rng.uniform(0.35, 0.7) * depth.max() + 2.5 * s
        wobble = ndi.gaussian_filter(rng.normal(size=(h, w)), 2 * s) * 8
        lum = g & (depth > thick * (1 + 0.3 * np.clip(wobble, -1, 1)))
        lumen |= lum
        epi |= g & ~lum
        band |= g & (depth > 0.1 * thick) & (depth < 0.75 * thick)
        if rng.random() < 0.35:
            lumen_col[lum] = _jitter(rng, MUCIN, 6)
        if rng.random() < 0.5:
            ring = ndi.binary_dilation(g, iterations=max(1, int(round(rng.uniform(1, 2.5) * s)))) & ~g
            cleft |= ring & (labels == 0)
    _blend(img, _soft(cleft, 0.5 * s) * 0.8, _jitter(rng, LUMEN, 4))
    _blend(img, _soft(epi, 0.6 * s) * 0.92, cyto)
    _blend(img, _soft(lumen, 0.7 * s) * 0.95, lumen_col)
    seeds = band & (rng.random((h, w)) < 0.22 / s**2)
    nuc = ndi.gaussian_filter(seeds.astype(float), 1.0 * s)
    _blend(img, np.clip(nuc / (nuc.max() + 1e-9) * 4.0 - 0.25, 0, 0.95), nuc_col)

    img = ndi.gaussian_filter(img, (rng.uniform(0.4, 0.9) * s,) * 2 + (0,))
    img += rng.normal(0, rng.uniform(3, 7), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


def _drop_slivers(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Remove objects cut down to slivers by the border, relabel 1..N in order."""
    areas = np.bincount(labels.ravel())
    keep = np.flatnonzero(areas >= min_area)
    keep = keep[keep > 0]
    lut = np.zeros(len(areas), np.int32)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[labels]


# ----------------------------------------------------------------------------- thin structures

# Fundus-like colours (RGB): an orange-red background and darker vessels; jittered per image.
FUNDUS = (196, 92, 48)
VESSEL = (128, 34, 22)
SYNTHETIC_KINDS = ("glands", "vessels")


def _curve(rng: np.random.Generator, start, heading: float, length: float, w0: float, w1: float,
           s: float) -> np.ndarray:
    """A smooth random curve: (N, 3) rows (y, x, width) every 0.5 px, the heading a smoothed random
    walk (curvature changes slowly, as along a vessel), the width tapering linearly w0 -> w1."""
    n = max(2, int(length / 0.5))
    turn = ndi.gaussian_filter1d(rng.normal(0.0, 1.0, n), 12.0 * s / 0.5, mode="nearest")
    turn *= 0.012 / s / (turn.std() + 1e-9) * rng.uniform(0.3, 1.0)  # radians per 0.5 px step
    theta = heading + np.cumsum(turn)
    y = start[0] + np.cumsum(0.5 * np.sin(theta))
    x = start[1] + np.cumsum(0.5 * np.cos(theta))
    return np.stack([y, x, np.linspace(w0, w1, n)], axis=1)


def _tree(rng: np.random.Generator, start, heading: float, width: float, s: float,
          depth: int = 0) -> list:
    """A branching vessel: one curve, then 1-2 children from points along it, each narrower
    (widths 4 -> 1 px, at most three levels of branching); returns the curves."""
    length = rng.uniform(50, 110) * np.sqrt(s) * (0.7 ** depth)  # small images: still long
    end_w = max(1.0, width * rng.uniform(0.6, 0.85))
    c = _curve(rng, start, heading, length, width, end_w, s)
    out = [c]
    if depth >= 3 or end_w <= 1.0:
        return out
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(len(c) // 3, len(c)))
        side = rng.choice((-1.0, 1.0))
        h = float(np.arctan2(c[min(i + 1, len(c) - 1), 0] - c[i - 1, 0],
                             c[min(i + 1, len(c) - 1), 1] - c[i - 1, 1]))
        out += _tree(rng, c[i, :2], h + side * rng.uniform(0.4, 1.1), max(1.0, c[i, 2] * 0.75),
                     s, depth + 1)
    return out


def _rejoin(rng: np.random.Generator, c: np.ndarray, s: float) -> np.ndarray | None:
    """A vessel that leaves curve ``c`` and rejoins it further on (quadratic Bezier, offset to one
    side by 2-12 px more than its width): a loop, or, at a small offset, a parallel vessel
    enclosing a thin strip of background that hole filling would wrongly merge into the object."""
    if len(c) < 40:
        return None
    i = int(rng.integers(0, len(c) // 2))
    j = int(min(len(c) - 1, i + rng.integers(30, 90) * s / 0.5))
    if j - i < 20:
        return None
    a, b = c[i, :2], c[j, :2]
    mid = (a + b) / 2
    d = b - a
    normal = np.array([d[1], -d[0]]) / (np.hypot(*d) + 1e-9)
    w = max(1.0, min(c[i, 2], c[j, 2]) * rng.uniform(0.6, 1.0))
    # the Bezier's apex is half the control point's offset: the vessels' centres end up w + 2..12
    # px apart (at least a 2 px strip of background between them)
    apex = w + rng.uniform(2, 12) * max(s, 0.5)
    ctrl = mid + normal * rng.choice((-1.0, 1.0)) * 2 * apex
    t = np.linspace(0, 1, max(2, int(2.5 * np.hypot(*d) / 0.5)))[:, None]
    pts = (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t ** 2 * b
    w = np.full((len(pts), 1), w)
    return np.hstack([pts, w])


def _draw(curves: list, h: int, w: int) -> np.ndarray:
    """Rasterise curves of (y, x, width) rows: a pixel is in when its centre is within width/2 of a
    centre-line point (a 1 px vessel is one pixel wide: its own pixel, 0.5 px steps keep it
    8-connected)."""
    mask = np.zeros((h, w), bool)
    for c in curves:
        for y, x, wd in c:
            r = wd / 2.0
            y0, y1 = max(int(np.floor(y - r)), 0), min(int(np.ceil(y + r)) + 1, h)
            x0, x1 = max(int(np.floor(x - r)), 0), min(int(np.ceil(x + r)) + 1, w)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            mask[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= max(r, 0.5) ** 2
    return mask


def synth_vessels(rng: np.random.Generator,
                  size: tuple[int, int] = (128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """One thin-structure sample: (uint8 (H, W, 3) RGB image, int32 (H, W) binary mask 0/1).

    A caricature of a retinal fundus crop (DRIVE, Staal et al. 2004) or a neurite tracing: 2-4
    trees (in 128 px; fewer in smaller images) of smooth branching curves entering from the border
    or starting inside, 3-4 px wide at the root tapering to 1 px, branching up to three times; 1-3 vessels leave a vessel and rejoin it
    (loops, and near-parallel pairs a few pixels apart), so the background between them is a hole
    of the object that must stay background. Thin vessels are fainter. On an orange-red background
    with slow illumination changes, fine texture, a few dark dots that are not vessels, blur and
    noise. The masks read as thin to ``seglearn.metrics.shape``: pooled over 8 images, median
    elongation 27-49 at 128 px, 21-28 at 96 px (per image: median 33 / 24, below 10 for about
    1 image in 10, where crossings widen the largest disc); below 96 px the trees get short.
    """
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"synthetic images need at least 32x32 pixels, got {h}x{w}")
    s = min(h, w) / 128.0
    curves: list = []
    # 2-4 trees in a 128 px image, fewer in smaller ones (widths stay 1-4 px: not crowded)
    for _ in range(max(1, int(round(int(rng.integers(2, 5)) * min(1.0, s))))):
        if rng.random() < 0.6:  # enter from a border, heading inwards
            side = int(rng.integers(4))
            t = rng.uniform(0.15, 0.85)
            start = [(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][side]
            heading = [np.pi / 2, -np.pi / 2, 0.0, np.pi][side] + rng.uniform(-0.5, 0.5)
        else:
            start = (rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w)
            heading = rng.uniform(0, 2 * np.pi)
        curves += _tree(rng, start, heading, rng.uniform(3.0, 4.0), s)
    trunks = [c for c in curves if len(c) >= 40]
    for k in rng.permutation(len(trunks))[: int(rng.integers(1, 4))]:
        loop = _rejoin(rng, trunks[k], s)
        if loop is not None:
            curves.append(loop)
    mask = _draw(curves, h, w)
    mask = _drop_slivers(ndi.label(mask, structure=np.ones((3, 3), bool))[0], 15 * s * s) > 0
    # contrast by width: a pixel's vessel width ~ 2 x its distance to the background at the centre line
    width = ndi.grey_dilation(ndi.distance_transform_edt(mask), size=(3, 3)) * 2 * mask
    alpha = np.clip(0.35 + 0.14 * width, 0, 0.9)

    bg = _jitter(rng, FUNDUS, 10)
    light = 0.85 + 0.3 * np.clip(0.5 + ndi.gaussian_filter(rng.normal(size=(h, w)), 20 * s) * 30, 0, 1)
    texture = ndi.gaussian_filter(rng.normal(size=(h, w)), 1.5 * s) * 6
    img = bg[None, None] * light[..., None] + texture[..., None]
    dots = ndi.gaussian_filter((rng.random((h, w)) < 0.0015 / s**2).astype(float), 1.2 * s)
    _blend(img, np.clip(dots / (dots.max() + 1e-9) * 0.6, 0, 0.6), _jitter(rng, VESSEL, 10))
    _blend(img, _soft(mask, 0.5 * s) * alpha, _jitter(rng, VESSEL, 8) * light[..., None])
    img = ndi.gaussian_filter(img, (rng.uniform(0.4, 0.8) * s,) * 2 + (0,))
    img += rng.normal(0, rng.uniform(3, 7), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask.astype(np.int32)


def make_synthetic(
    n: int,
    out_dir: str | os.PathLike,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    test_fraction: float = 0.25,
    kind: str = "glands",
) -> list[SourceImage]:
    """Write ``n`` samples: ``out_dir/images/syn_XXX.png`` and ``out_dir/masks/syn_XXX_anno.png``
    (uint16 masks: gland instances, or the binary vessel mask). ``kind``: "glands"
    (:func:`synth_image`) or "vessels" (:func:`synth_vessels`). ``round(n * test_fraction)`` of them
    (at most n - 1), chosen by the seed, are split "test", the rest "pool". Same arguments ->
    byte-identical arrays."""
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"synthetic kind must be one of {', '.join(SYNTHETIC_KINDS)}, not {kind!r}")
    synth = synth_image if kind == "glands" else synth_vessels
    if int(n) < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out = Path(os.fspath(out_dir))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(int(seed)).spawn(n)
    n_test = min(int(round(n * test_fraction)), n - 1)
    test = set(np.random.default_rng([int(seed), 1]).permutation(n)[:n_test].tolist())
    width = max(3, len(str(n - 1)))
    records = []
    for i in range(n):
        image, labels = synth(np.random.default_rng(children[i]), size)
        name = f"syn_{i:0{width}d}"
        img_path, mask_path = out / "images" / f"{name}.png", out / "masks" / f"{name}_anno.png"
        Image.fromarray(image).save(img_path)
        write_mask(mask_path, labels)
        records.append(SourceImage(name, img_path, mask_path, "test" if i in test else "pool"))
    return records
