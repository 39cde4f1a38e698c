"""MONAI dictionary-transform pipelines for training and evaluation, and inference padding helpers.

A sample is a dict ``{"image": uint8 (H, W, 3) array or path, "label": int (H, W) instance labels or
path (optional)}``. The pipelines produce ``image`` float32 (3, H, W) in [0, 1] and ``label``
float32 (C, H, W) with one channel per target: "fg" (foreground 0/1) and optionally "contour" (each
instance's inner boundary band, :func:`contour_band`). Targets are computed from the instance map
BEFORE any geometric transform and then travel with the image as label channels, so resizing and
cropping never have to re-derive boundaries. With ``keep_instances=True`` the instance map itself
travels along as ``instances`` int32 (1, H, W) (for object metrics on crops).
"""

from __future__ import annotations

import os
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    MapTransform,
    Rand2DElasticd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandRotate90d,
    RandSpatialCropd,
    ScaleIntensityRanged,
    SpatialPadd,
    Zoomd,
)
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed

from seglearn.config import AUGMENTS
from seglearn.data.errors import DataError
from seglearn.data.io import instances_from_mask, read_image, read_mask

TARGETS = ("fg", "contour")


def contour_band(instances: np.ndarray, width: int = 2) -> np.ndarray:
    """Inner boundary band of every instance, uint8 (H, W).

    Pixel p (label k > 0) is in the band iff some pixel q with ``max(|dy|, |dx|) <= width`` has a
    label other than k (background or another instance). So the band is ``width`` pixels thick on
    the inside of each object, and two touching instances both mark their side of the shared border
    (which is what separates them, cf. DCAN, Chen et al. CVPR 2016). The image border is not a boundary.
    Computed as max-filter != min-filter over a (2 width + 1)^2 window.
    """
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise ValueError(f"instances must be 2D (H, W), got shape {inst.shape}")
    if int(width) < 1:
        raise ValueError(f"contour width must be >= 1 pixel, got {width}")
    size = 2 * int(width) + 1
    hi = ndi.maximum_filter(inst, size=size, mode="nearest")
    lo = ndi.minimum_filter(inst, size=size, mode="nearest")
    return ((inst > 0) & (hi != lo)).astype(np.uint8)


def _check_targets(targets: Sequence[str]) -> tuple[str, ...]:
    targets = tuple(targets)
    if not targets or targets[0] != "fg" or any(t not in TARGETS for t in targets) or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be ('fg',) or ('fg', 'contour'), got {targets}")
    return targets


class LoadPaired(MapTransform):
    """Paths -> arrays (read_image / read_mask and their rules); an in-memory integer label array is
    taken as instance labels as it is (other arrays, e.g. bool, go through instances_from_mask)."""

    def __init__(self, image_key: str = "image", label_key: str = "label"):
        super().__init__([image_key, label_key], allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        img = d[self.image_key]
        name = "image"
        if isinstance(img, (str, os.PathLike)):
            name = os.fspath(img)
            img = read_image(img)
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise DataError(f"{name}: expected a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        d[self.image_key] = img
        lab = d.get(self.label_key)
        if lab is None:
            d.pop(self.label_key, None)
            return d
        if isinstance(lab, (str, os.PathLike)):
            lab = read_mask(lab, shape=img.shape[:2], image_name=name)
        else:
            lab = np.asarray(lab)
            if lab.ndim == 2 and lab.dtype.kind in "ui" and (lab.size == 0 or lab.min() >= 0):
                lab = lab.astype(np.int32, copy=False)  # in-memory arrays are instance labels already
            else:
                lab = instances_from_mask(lab, name=f"label of {name}")
            if lab.shape != img.shape[:2]:
                raise DataError(f"label of {name} is {lab.shape[0]}x{lab.shape[1]} but the image is "
                                f"{img.shape[0]}x{img.shape[1]}")
        d[self.label_key] = lab
        return d


class MakeTargetsd(MapTransform):
    """Instance map (H, W) -> label (C, H, W) float32 target channels [fg, contour?]; the instance
    map optionally kept as ``instances`` (1, H, W) int32 so it can follow the same geometry."""

    def __init__(self, targets: Sequence[str] = ("fg",), contour_width: int = 2, keep_instances: bool = False,
                 label_key: str = "label"):
        super().__init__([label_key], allow_missing_keys=True)
        self.targets, self.width, self.keep, self.label_key = _check_targets(targets), int(contour_width), keep_instances, label_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.label_key not in d:
            return d
        inst = np.asarray(d[self.label_key], dtype=np.int32)
        chans = [(inst > 0).astype(np.float32)]
        if "contour" in self.targets:
            chans.append(contour_band(inst, self.width).astype(np.float32))
        d[self.label_key] = np.stack(chans)
        if self.keep:
            d["instances"] = inst[None]
        return d


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Mild stain/colour jitter of a (3, H, W) [0, 1] image; labels untouched.

    x <- clip(g * (c * (x - mean) + mean) + b), then saturation: x <- gray + s * (x - gray), with
    brightness b ~ U(-brightness, brightness), contrast c ~ U(1 -/+ contrast), per-channel gains
    g ~ U(1 -/+ channel) (a crude hue/stain shift in RGB) and saturation s ~ U(1 -/+ saturation).
    """

    def __init__(self, keys="image", prob: float = 0.8, brightness: float = 0.06, contrast: float = 0.1,
                 channel: float = 0.04, saturation: float = 0.12):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.ranges = (brightness, contrast, channel, saturation)
        self._params = None

    def randomize(self, data=None) -> None:
        super().randomize(None)
        b, c, ch, s = self.ranges
        self._params = (self.R.uniform(-b, b), self.R.uniform(1 - c, 1 + c),
                        self.R.uniform(1 - ch, 1 + ch, size=3), self.R.uniform(1 - s, 1 + s))

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        b, c, gains, s = self._params
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key], dtype=torch.float32)
            mean = x.mean()
            x = (c * (x - mean) + mean) * torch.as_tensor(gains, dtype=x.dtype).view(3, 1, 1) + b
            gray = x.mean(dim=0, keepdim=True)
            d[key] = (gray + s * (x - gray)).clamp_(0.0, 1.0)
        return d


class RandHEDJitterd(RandomizableTransform, MapTransform):
    """Stain augmentation in H&E-DAB optical-density space (Tellez et al. 2018/2019, "HED" jitter).

    Colour deconvolution (Ruifrok & Johnston 2001, the matrix of ``skimage.color``):
    ``OD = -ln(max(x, eps))`` per RGB pixel, stain concentrations ``C = OD @ hed_from_rgb``; each
    stain channel is perturbed ``C'_s = alpha_s C_s + beta_s`` with ``alpha_s ~ U(1 - sigma_a,
    1 + sigma_a)``, ``beta_s ~ U(-sigma_b, sigma_b)``, and the image rebuilt ``x' = clip(exp(-C'
    @ rgb_from_hed), 0, 1)``. The map is linear in OD and not clipped in stain space (unlike
    ``skimage.color.rgb2hed``), so ``alpha = 1, beta = 0`` returns ``max(x, eps)``. Defaults are
    Tellez et al.'s "HED-light" (0.05, 0.05), the setting their comparison (MedIA 58, 2019) found
    to generalise best across centres. Labels are untouched.
    """

    EPS = 1e-6

    def __init__(self, keys="image", prob: float = 0.8, sigma_alpha: float = 0.05, sigma_beta: float = 0.05):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.sigma = (float(sigma_alpha), float(sigma_beta))
        self._params = None

    def randomize(self, data=None) -> None:
        super().randomize(None)
        sa, sb = self.sigma
        self._params = (self.R.uniform(1 - sa, 1 + sa, size=3), self.R.uniform(-sb, sb, size=3))

    @classmethod
    def apply(cls, x: torch.Tensor, alpha, beta) -> torch.Tensor:
        """The jitter of a (3, H, W) [0, 1] image for given per-stain ``alpha``, ``beta`` (3,)."""
        m_in = torch.as_tensor(hed_from_rgb, dtype=torch.float64)
        m_out = torch.as_tensor(rgb_from_hed, dtype=torch.float64)
        od = -torch.log(x.to(torch.float64).clamp_min(cls.EPS)).permute(1, 2, 0)  # (H, W, 3)
        c = od @ m_in
        c = c * torch.as_tensor(alpha, dtype=torch.float64) + torch.as_tensor(beta, dtype=torch.float64)
        return torch.exp(-(c @ m_out)).clamp_(0.0, 1.0).permute(2, 0, 1).to(x.dtype).contiguous()

    def __call__(self, data):
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        alpha, beta = self._params
        for key in self.key_iterator(d):
            d[key] = self.apply(torch.as_tensor(d[key], dtype=torch.float32), alpha, beta)
        return d


def _clip01(x):
    return torch.as_tensor(x).clamp(0.0, 1.0)


def user_error(exc: BaseException) -> BaseException:
    """The DataError/ValueError inside MONAI's RuntimeError("applying transform ...") wrapping, else
    ``exc``: re-raise it so the message naming the bad file is what the user sees."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ValueError):
        cause = cause.__cause__
    return cause if cause is not None else exc


class _Pipeline(Compose):
    """Compose that lets a DataError through instead of MONAI's RuntimeError wrapper."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError as exc:
            err = user_error(exc)
            if err is exc:
                raise
            raise err from None


def _base(scale: float, targets, contour_width: int, keep_instances: bool) -> tuple[list, tuple[str, ...]]:
    if not float(scale) > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    keys = ("image", "label", "instances") if keep_instances else ("image", "label")
    steps = [
        LoadPaired(),
        MakeTargetsd(targets, contour_width, keep_instances),
        EnsureChannelFirstd("image", channel_dim=-1),
        ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    if float(scale) != 1.0:
        img_mode = "area" if scale < 1 else "bilinear"
        modes = (img_mode,) + ("nearest-exact",) * (len(keys) - 1)
        steps.append(Zoomd(keys, zoom=float(scale), mode=modes, keep_size=False, allow_missing_keys=True))
    return steps, keys


def _final(keys) -> EnsureTyped:
    dtypes = (torch.float32, torch.float32, torch.int32)[: len(keys)]
    return EnsureTyped(keys, data_type="tensor", dtype=dtypes, track_meta=False, allow_missing_keys=True)


def train_transforms(
    crop: int | tuple[int, int],
    scale: float = 1.0,
    targets: Sequence[str] = ("fg",),
    contour_width: int = 2,
    keep_instances: bool = False,
    jitter: bool = True,
    augment: str = "basic",
) -> Compose:
    """Load, targets, [0, 1] float CHW, resize by ``scale``, random 90-degree rotation, pad to ``crop``
    if smaller (zeros), random ``crop``, random flips (geometry: image and labels together), colour
    jitter (image only). Seed it with ``.set_random_state(seed)``.

    ``augment="strong"`` (``data.augment``) adds, after the flips: one elastic + affine resampling
    (``Rand2DElasticd``, p 0.5: control points every crop/4 px moved up to 3 px, rotation +-15 deg,
    scale 0.9-1.1; labels nearest, reflected borders), HED stain jitter (``RandHEDJitterd``, p 0.8),
    Gaussian blur (sigma 0.25-1 px, p 0.2) and Gaussian noise (std <= 0.02, p 0.15): the stain and
    geometry augmentations of histology pipelines meant for unseen centres (Tellez et al. 2019)."""
    crop = (int(crop), int(crop)) if np.isscalar(crop) else tuple(int(c) for c in crop)
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop must be a positive int or (h, w), got {crop}")
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, not {augment!r}")
    steps, keys = _base(scale, targets, contour_width, keep_instances)
    opt = dict(allow_missing_keys=True)
    steps += [
        # rotate before cropping, so a non-square crop keeps its (h, w) and batches stack
        RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1), **opt),
        SpatialPadd(keys, spatial_size=crop, mode="constant", **opt),
        RandSpatialCropd(keys, roi_size=crop, random_size=False, **opt),
        RandFlipd(keys, prob=0.5, spatial_axis=0, **opt),
        RandFlipd(keys, prob=0.5, spatial_axis=1, **opt),
    ]
    if augment == "strong":
        label_modes = ("bilinear",) + ("nearest",) * (len(keys) - 1)
        steps.append(Rand2DElasticd(keys, spacing=max(4, min(crop) // 4), magnitude_range=(0.0, 3.0),
                                    prob=0.5, rotate_range=np.pi / 12, scale_range=0.1,
                                    mode=label_modes, padding_mode="reflection", **opt))
    if jitter:
        steps.append(RandColorJitterd("image"))
    if augment == "strong":
        steps += [RandHEDJitterd("image"),
                  RandGaussianSmoothd("image", sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), prob=0.2),
                  RandGaussianNoised("image", std=0.02, prob=0.15),
                  Lambdad("image", _clip01)]  # the noise may leave [0, 1]; inference never does
    steps.append(_final(keys))
    return _Pipeline(steps)


def eval_transforms(
    scale: float = 1.0,
    targets: Sequence[str] = ("fg",),
    contour_width: int = 2,
    keep_instances: bool = False,
) -> Compose:
    """Load, targets, [0, 1] float CHW, resize by ``scale``; no randomness, no cropping (pad with
    :func:`pad_to_multiple` for the network and crop back with :func:`crop_to`)."""
    steps, keys = _base(scale, targets, contour_width, keep_instances)
    steps.append(_final(keys))
    return _Pipeline(steps)


def pad_to_multiple(x, m: int, mode: str = "reflect"):
    """Pad the last two axes of ``x`` (numpy or torch, (..., H, W)) at the bottom and right to
    multiples of ``m``. Returns ``(padded, (H, W))``; :func:`crop_to` undoes it. Reflection (no seam
    for the convolutions to see); where the image is too small to reflect, edge replication."""
    if int(m) < 1:
        raise ValueError(f"multiple must be >= 1, got {m}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % int(m), (-w) % int(m)
    if ph == 0 and pw == 0:
        return x, (h, w)
    if isinstance(x, torch.Tensor):
        mode = {"edge": "replicate"}.get(mode, mode)
        use = mode if (mode != "reflect" or (ph < h and pw < w)) else "replicate"
        y = x.reshape((-1,) + tuple(x.shape[-3:])) if x.ndim >= 3 else x[None, None]
        y = F.pad(y.float() if use != "constant" and not y.is_floating_point() else y, (0, pw, 0, ph), mode=use)
        return y.reshape(tuple(x.shape[:-2]) + (h + ph, w + pw)).to(x.dtype), (h, w)
    arr = np.asarray(x)
    mode = {"replicate": "edge"}.get(mode, mode)
    use = mode if (mode != "reflect" or (ph < h and pw < w)) else "edge"
    pad = [(0, 0)] * (arr.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(arr, pad, mode=use), (h, w)


def crop_to(x, shape: tuple[int, int]):
    """Crop the last two axes back to ``shape`` (H, W) (the inverse of :func:`pad_to_multiple`)."""
    return x[..., : int(shape[0]), : int(shape[1])]
