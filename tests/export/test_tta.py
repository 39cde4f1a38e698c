"""postprocess.tta (test-time flip averaging): the torch route averages the logits of the image and
its three flips, the runtime sums the four integer margins; both against hand-made oracles, and the
two routes' foregrounds agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglearn.config import ConfigError, PostprocessConfig
from seglearn.export import export_model
from seglearn.models.fcn import FCN
from seglearn.models.infer import predict_image
from seglearn.postprocess import PostprocessParams
from seglearn.quant.convert import quantize_model
from seglearn.runtime import load_model
from seglearn.runtime.postprocess_int import margins

from .conftest import discs, to_tensor, train_briefly

SCHEME = {"weight": "iao", "act": "iao"}  # int8: the runtime rounds where fake-quant does


@pytest.fixture(scope="module")
def model(data):
    imgs, masks = data
    torch.manual_seed(5)
    return train_briefly(quantize_model(FCN(3, width=4, depth=2, contour_head=True), SCHEME),
                         imgs, masks, steps=30)


@pytest.fixture(scope="module")
def image():
    return discs(1, h=37, w=53, seed=4)[0][0]  # odd sides: the flips move the padding


def test_torch_flips_average_the_four_logit_maps(model):
    image = discs(1, h=36, w=52, seed=4)[0][0]  # sides of the network's multiple: no padding
    x = to_tensor(image)
    with torch.no_grad():
        logits = [model(x)]
        for dims in ((3,), (2,), (2, 3)):  # width, height, both (NCHW), each flipped back
            logits.append(torch.flip(model(torch.flip(x, dims)), dims))
    want = torch.sigmoid(torch.stack(logits).mean(0))[0].numpy()
    got, _ = predict_image(model, image, flips=True)
    plain, _ = predict_image(model, image, flips=False)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # a flip-asymmetric model: averaging changed something


def _export(model, path, tta, fg_threshold=0.5):
    export_model(model, path, postprocess=PostprocessParams(min_area=5, seed_min_area=2, tta=tta,
                                                            fg_threshold=fg_threshold))
    return load_model(path)


def test_runtime_tta_margins_are_the_sum_of_the_flipped_margins(model, image, tmp_path):
    m = _export(model, tmp_path / "t.slq", True)
    plain = _export(model, tmp_path / "p.slq", False)
    a = plain._prepare(image)
    want = {k: v.copy() for k, v in margins(plain.accumulators(image), plain.decisions).items()}
    for axes in ((1,), (0,), (0, 1)):
        acc = plain.accumulators(np.ascontiguousarray(np.flip(a, axes)))
        for k, v in margins(acc, plain.decisions).items():
            want[k] += np.flip(v, axes)
    got = m.margins(image)
    assert set(got) == set(want) == {"fg", "contour"}
    for k in got:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert not np.array_equal(got["fg"], 4 * plain.margins(image)["fg"])  # the flips saw other pixels
    assert m.predict(image).shape == image.shape[:2]


def test_runtime_and_torch_agree_with_tta(model, tmp_path):
    imgs = discs(3, seed=9)[0]
    probs = [predict_image(model, img, flips=True)[0][0] for img in imgs]
    # a threshold inside the probabilities' range (a few training steps leave them near one value),
    # so both classes are present and the agreement means something
    thr = float(np.round(np.median(np.concatenate([p.ravel() for p in probs])), 4))
    m = _export(model, tmp_path / "t.slq", True, fg_threshold=thr)
    for img, p in zip(imgs, probs):
        want = p > thr
        assert 0.05 < want.mean() < 0.95, want.mean()
        flipped = m.foreground(img) != want
        assert flipped.mean() <= 0.02, flipped.mean()


def test_tta_is_a_checked_parameter():
    assert PostprocessConfig().tta is False
    with pytest.raises(ConfigError, match="tta"):
        PostprocessConfig(tta="yes")
