"""A compact U-Net-style FCN for 2D segmentation, built to be quantized and exported.

Layout (depth d, width w): encoder stages ``enc[i]`` of two ``ConvBNReLU`` blocks at width
``w * 2**i`` separated by 2x2 max-pooling; decoder stages upsample (nearest x2, or a 2x2 stride-2
transposed conv), concatenate the skip, and apply two ``ConvBNReLU`` blocks; a 1x1 head gives
``out_channels`` logits. Channel 0 is the foreground (gland) logit; with ``contour_head=True`` a
second 1x1 head gives channel 1, the boundary logit (DCAN-style, Chen et al. 2016).

The encoder's last feature map (the bottleneck) is exposed by :meth:`FCN.forward_features`: its
spatial mean is the image descriptor of suggestive annotation (Yang et al. 2017).

Every convolution is a plain ``nn.Conv2d`` without bias followed by ``nn.BatchNorm2d``, so
``quantize_model`` can swap convolutions for quantized ones and export can fold batch norm.
"""

from __future__ import annotations

import torch
from torch import nn

from seglearn.registry import Registry

MODELS: Registry = Registry("model")


class ConvBNReLU(nn.Sequential):
    """conv(k x k, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=False),
        )


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))


class Up(nn.Module):
    """x2 upsampling (nearest, or transposed conv), concat with the skip, two conv blocks."""

    def __init__(self, cin: int, cskip: int, cout: int, mode: str = "nearest"):
        super().__init__()
        self.mode = mode
        self.skip_channels = cskip
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(cin, cin, 2, stride=2, bias=False)
        elif mode == "nearest":
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
        else:
            raise ValueError(f"model.up must be 'nearest' or 'transpose', not {mode!r}")
        self.conv = DoubleConv(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class SegmenterInterface:
    """What inference relies on (``models.infer``): ``depth``, the input-side ``multiple`` and
    ``forward`` = the logits of ``forward_features``. Shared by :class:`FCN` and its inference
    copies (``seglearn.models.fused``)."""

    depth: int

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


@MODELS.register("fcn")
class FCN(SegmenterInterface, nn.Module):
    """U-Net-style FCN. Input (B, in_channels, H, W) with H, W divisible by 2**(depth-1)."""

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 4,
                 contour_head: bool = False, up: str = "nearest"):
        super().__init__()
        if depth < 2:
            raise ValueError("model.depth must be at least 2")
        self.in_channels, self.width, self.depth = in_channels, width, depth
        self.contour_head = contour_head
        widths = [width * 2**i for i in range(depth)]
        self.enc = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.enc.append(DoubleConv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.dec = nn.ModuleList(
            Up(widths[i + 1], widths[i], widths[i], mode=up) for i in reversed(range(depth - 1)))
        self.head = nn.Conv2d(widths[0], 2 if contour_head else 1, 1, bias=True)
        self.out_channels = 2 if contour_head else 1
        self.feature_channels = widths[-1]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (B, C, H, W), bottleneck features (B, F, H/m, W/m))."""
        return unet_forward(self.enc, self.pool, self.dec, self.head, x)


def unet_forward(enc, pool, dec, head, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The U-Net data flow shared by :class:`FCN` and its fused inference copy: encoder stages
    with ``pool`` between them, decoder stages ``up(x, skip)`` on the skips in reverse, ``head``.
    Returns (logits, bottleneck features)."""
    skips = []
    for i, stage in enumerate(enc):
        if i:
            x = pool(x)
        x = stage(x)
        skips.append(x)
    feats = x
    for up, skip in zip(dec, reversed(skips[:-1])):
        x = up(x, skip)
    return head(x), feats


def build_model(name: str = "fcn", **kwargs) -> nn.Module:
    """Build a registered model by name (``model.name`` in the config)."""
    return MODELS.get(name)(**kwargs)
