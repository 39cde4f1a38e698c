"""Segmentation losses.

Foreground: binary cross-entropy on the logit plus soft Dice (Milletari et al. 2016),
``1 - (2 sum p g + 1) / (sum p + sum g + 1)`` over the batch, which keeps thin glands from being
swamped by background. Contour (DCAN, Chen et al. 2016): class-balanced BCE, the positive weight
``#neg / #pos`` of the batch (clamped to [1, 50]) because boundary pixels are a few percent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits.float())
    inter = (p * target).sum()
    return 1 - (2 * inter + smooth) / (p.sum() + target.sum() + smooth)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      contour_weight: float = 1.0) -> torch.Tensor:
    """logits (B, C, H, W), target (B, C', H, W) in {0, 1}; channel 0 foreground, 1 contour."""
    logits = logits.float()
    fg_t = target[:, :1].float()
    loss = F.binary_cross_entropy_with_logits(logits[:, :1], fg_t) + soft_dice_loss(logits[:, :1], fg_t)
    if logits.shape[1] > 1:
        if target.shape[1] < 2:
            raise ValueError("the model has a contour head but the batch carries no contour target")
        c_t = target[:, 1:2].float()
        pos = c_t.sum()
        pos_weight = ((c_t.numel() - pos) / pos.clamp(min=1.0)).clamp(1.0, 50.0)
        loss = loss + contour_weight * F.binary_cross_entropy_with_logits(
            logits[:, 1:2], c_t, pos_weight=pos_weight)
    return loss
