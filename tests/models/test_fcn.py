"""FCN shapes, the exposed bottleneck, and whole-image inference with tiling."""

import numpy as np
import pytest
import torch

from seglearn.models import FCN, build_model
from seglearn.models.infer import predict_image


@pytest.mark.parametrize("depth,up,contour", [(2, "nearest", False), (3, "transpose", True),
                                              (4, "nearest", True)])
def test_shapes(depth, up, contour):
    m = FCN(width=4, depth=depth, up=up, contour_head=contour)
    x = torch.randn(2, 3, 32, 48)
    logits, feats = m.forward_features(x)
    assert logits.shape == (2, 2 if contour else 1, 32, 48)
    s = 2 ** (depth - 1)
    assert feats.shape == (2, 4 * 2 ** (depth - 1), 32 // s, 48 // s)
    assert m.multiple == s


def test_registry_and_bad_args():
    assert isinstance(build_model("fcn", width=4, depth=2), FCN)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope")
    with pytest.raises(ValueError, match="depth"):
        FCN(depth=1)


def test_predict_image_any_size_and_tiles_agree():
    torch.manual_seed(0)
    m = FCN(width=4, depth=3).eval()
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    p, d = predict_image(m, img)
    assert p.shape == (1, 70, 90) and d.shape == (16,)
    assert np.all((p >= 0) & (p <= 1))
    # Tiled inference (Gaussian-blended windows) stays close to the whole image.
    pt, dt = predict_image(m, img, tile=48, overlap=0.5)
    assert pt.shape == p.shape
    assert np.mean(np.abs(pt - p)) < 0.05
    gray = img[..., 0]
    assert predict_image(m, gray)[0].shape == (1, 70, 90)
