"""Batched ensemble inference (Ensemble.predict_many, models.infer.predict_prepared_batch): the
same results as one image at a time, in the caller's order, with small same-size images really
batched and everything else run alone."""

import numpy as np
import pytest
import torch

import seglearn.models.ensemble as ensemble_mod
from seglearn.app.select import SCORE_NAMES, image_scores, image_scores_many
from seglearn.config import ModelConfig
from seglearn.models.checkpoint import make_model
from seglearn.models.ensemble import Ensemble
from seglearn.models.fcn import FCN
from seglearn.models.fused import FrozenFCN, FusedFCN
from seglearn.models.infer import predict_prepared, predict_prepared_batch, prepare_input


def _members(n=2, scheme=None):
    torch.manual_seed(11)
    members = []
    for _ in range(n):
        m = make_model(ModelConfig(width=4, depth=3), scheme)
        with torch.no_grad():  # non-trivial batch-norm statistics, so folding matters
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.2, 0.2)
                    mod.running_var.uniform_(0.5, 2.0)
        members.append(m.eval())
    return members


@pytest.fixture
def batch_sizes(monkeypatch):
    """The batch size of every forward the members (or their fused copies) run."""
    seen = []

    def spy(real):
        def forward_features(self, x):
            seen.append(x.shape[0])
            return real(self, x)
        return forward_features

    for cls in (FCN, FusedFCN, FrozenFCN):
        monkeypatch.setattr(cls, "forward_features", spy(cls.forward_features))
    return seen


def _images():
    rng = np.random.default_rng(3)
    small = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(10)]
    other = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    # ten of one size (a batch of 8, then 2 more after the interruption), one of another size
    # in between, a grayscale one of the first size (same network input: batched with them)
    return small[:5] + [other] + small[5:] + [gray]


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("scheme", [None, {"weight": "inq", "w_bits": 7, "first_last": "same"}])
def test_predict_many_equals_predict_one_at_a_time(fuse, scheme, batch_sizes):
    ens = Ensemble(_members(scheme=scheme), [], 1, "suggestive", fuse=fuse)
    ens.inference_members()  # fusing and tracing run a forward of their own
    images = _images()
    for scale in (1.0, 0.5):
        batch_sizes.clear()
        many = ens.predict_many(images, scale=scale)
        # per member: the first five, the odd one alone, then six more of the first size
        assert batch_sizes == [5, 5, 1, 1, 6, 6]  # group by group, each member in turn
        assert len(many) == len(images)
        for im, (probs, desc) in zip(images, many):
            p1, d1 = ens.predict(im, scale=scale)
            assert probs.shape == p1.shape == (2, 1) + im.shape[:2]
            np.testing.assert_allclose(probs, p1, rtol=0, atol=1e-5)
            np.testing.assert_allclose(desc, d1, rtol=1e-5, atol=1e-6)
            assert desc.dtype == np.float32 and probs.dtype == np.float32


def test_batches_are_capped_and_large_inputs_run_alone(monkeypatch, batch_sizes):
    ens = Ensemble(_members(n=1), [], 1, "suggestive")
    ens.inference_members()
    batch_sizes.clear()
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(7)]
    monkeypatch.setattr(ensemble_mod, "BATCH_IMAGES", 3)
    ens.predict_many(images)
    assert batch_sizes == [3, 3, 1]
    batch_sizes.clear()
    monkeypatch.setattr(ensemble_mod, "BATCH_MAX_PIXELS", 32 * 32 - 1)  # now "large"
    many = ens.predict_many(images)
    assert batch_sizes == [1] * 7
    batch_sizes.clear()
    ens.predict_many(images[:4], tile=16)  # tiled (sliding window) images are never batched
    assert all(b == 1 for b in batch_sizes)
    np.testing.assert_allclose(many[2][0], ens.predict(images[2])[0], rtol=0, atol=1e-5)
    assert ens.predict_many([]) == []


def test_predict_prepared_batch_equals_each_element_including_tiled():
    model = _members(n=1)[0]
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (36, 44, 3), dtype=np.uint8) for _ in range(3)]
    xs = [prepare_input(im)[0] for im in images]
    for tile in (512, 16):  # whole image, and MONAI's sliding window over a batch
        probs, desc = predict_prepared_batch(model, torch.cat(xs), (36, 44), tile=tile)
        assert probs.shape == (3, 1, 36, 44) and desc.shape == (3, 16)
        for b, x in enumerate(xs):
            p1, d1 = predict_prepared(model, x, (36, 44), tile=tile)
            np.testing.assert_allclose(probs[b], p1, rtol=0, atol=1e-5)
            np.testing.assert_allclose(desc[b], d1, rtol=1e-5, atol=1e-6)


def test_image_scores_many_equals_image_scores():
    ens = Ensemble(_members(n=3), [], 1, "suggestive", scale=0.5)
    images = _images()[:7]
    many = image_scores_many(ens, images, "mean")
    assert len(many) == 7
    for im, (scores, desc) in zip(images, many):
        one, d1 = image_scores(ens, im, "mean")
        assert set(scores) == set(SCORE_NAMES) == set(one)
        for name in SCORE_NAMES:
            assert scores[name] == pytest.approx(one[name], rel=1e-4, abs=1e-7)
        np.testing.assert_allclose(desc, d1, rtol=1e-5, atol=1e-6)
