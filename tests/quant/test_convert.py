"""quantize_model on seglearn's FCN and MONAI's UNet; a short training run per scheme must learn."""

import warnings

import pytest
import torch
from torch import nn

from seglearn.models import FCN
from seglearn.quant import QUANTIZERS
from seglearn.quant.convert import check_scheme, describe, quantize_model, scheme_callbacks
from seglearn.quant.layers import QuantConv2d, QuantConvBN2d, QuantConvTranspose2d

SCHEMES = {
    "twn+dorefa4": {"weight": "twn", "act": "dorefa", "a_bits": 4},
    "dorefa1+dorefa2": {"weight": "dorefa", "w_bits": 1, "act": "dorefa", "a_bits": 2},
    "binarynet": {"weight": "binarynet", "act": None},
    "inq5": {"weight": "inq", "w_bits": 5},
    "clipq": {"weight": "clipq", "w_bits": 3, "weight_args": {"prune": 0.2}},
    "hwgq": {"weight": "hwgq", "act": "hwgq", "a_bits": 2},
    "twn-folded": {"weight": "twn", "act": "dorefa", "a_bits": 4, "fold_bn": True},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny convolutions: a second thread only adds contention on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def discs(n=8, size=32, seed=0):
    """Bright discs (radius 5..9) on a noisy dark background; the label is the disc."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    imgs, masks = [], []
    for _ in range(n):
        cy, cx = torch.randint(9, size - 9, (2,), generator=g).tolist()
        r = int(torch.randint(5, 10, (1,), generator=g))
        m = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()
        imgs.append(0.2 + 0.6 * m + 0.1 * torch.randn(size, size, generator=g))
        masks.append(m)
    return torch.stack(imgs)[:, None], torch.stack(masks)[:, None]


def train(model, scheme, steps=30):
    torch.manual_seed(0)
    x, y = discs()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cbs = scheme_callbacks(model, scheme)
    for cb in cbs:
        cb.on_train_start(model, steps)
    losses = []
    model.train()
    for step in range(steps):
        for cb in cbs:
            cb.before_step(model, step, steps)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for cb in cbs:
            cb.after_step(model, step, steps)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("key", list(SCHEMES))
def test_fcn_scheme_trains(key):
    torch.manual_seed(0)
    scheme = SCHEMES[key]
    model = quantize_model(FCN(in_channels=1, width=8, depth=2), scheme)
    losses = train(model, scheme)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    model.eval()
    assert model(discs(2)[0]).shape == (2, 1, 32, 32)


def test_fcn_conversion_layout_first_last_and_original_untouched():
    fcn = FCN(in_channels=3, width=4, depth=3, up="transpose")
    q = quantize_model(fcn, {"weight": "twn", "act": "dorefa", "first_last": "float"})
    assert not any(isinstance(m, QuantConv2d) for m in fcn.modules())  # deep copy by default
    n_conv = sum(type(m) in (nn.Conv2d, nn.ConvTranspose2d) for m in fcn.modules())
    layers = describe(q)
    assert len(layers) == n_conv - 2  # first and last stay float
    assert type(q.enc[0][0][0]) is nn.Conv2d and type(q.head) is nn.Conv2d
    assert isinstance(q.dec[0].up, QuantConvTranspose2d)
    assert set(layers.values()) == {"weight=twn/2 act=dorefa/4"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q8 = quantize_model(fcn, {"weight": "twn", "act": "dorefa"})
    edge = "iao" if "iao" in QUANTIZERS else "dorefa"
    assert q8.enc[0][0][0].weight_quant.method == edge and q8.head.weight_quant.bits == 8
    q.eval()(torch.rand(1, 3, 16, 16))


def test_fold_bn_replaces_bn_and_matches_float_when_unquantized():
    fcn = FCN(in_channels=1, width=4, depth=2).eval()
    with torch.no_grad():  # non-trivial running statistics
        for m in fcn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    q = quantize_model(fcn, {"weight": None, "act": None, "fold_bn": True}).eval()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in fcn.modules())
    assert sum(isinstance(m, QuantConvBN2d) for m in q.modules()) == n_bn
    assert all(m.bn is not None for m in q.modules() if isinstance(m, QuantConvBN2d))
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(q(x), fcn(x), rtol=1e-4, atol=1e-5)


def test_monai_unet():
    monai_nets = pytest.importorskip("monai.networks.nets")
    net = monai_nets.UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8),
                          strides=(2,), num_res_units=0, norm="batch")
    n_conv = sum(type(m) in (nn.Conv2d, nn.ConvTranspose2d) for m in net.modules())
    scheme = {"weight": "twn", "act": "dorefa", "a_bits": 4, "first_last": "same", "fold_bn": True}
    q = quantize_model(net, scheme)
    assert sum(type(m) in (nn.Conv2d, nn.ConvTranspose2d) for m in q.modules()) == 0
    assert len(describe(q)) == n_conv
    assert any(isinstance(m, QuantConvBN2d) for m in q.modules())
    assert any(isinstance(m, QuantConvTranspose2d) for m in q.modules())
    losses = train(q, scheme, steps=20)
    assert losses[-1] < losses[0]


def test_per_layer_overrides():
    fcn = FCN(in_channels=1, width=4, depth=2)
    q = quantize_model(fcn, {"weight": "clipq", "w_bits": 3, "first_last": "same",
                             "layers": {"enc.1.*": {"w_bits": 2, "weight_args": {"prune": 0.5}}}})
    assert q.enc[1][0][0].weight_quant.bits == 2 and q.enc[1][0][0].weight_quant.prune == 0.5
    assert q.enc[0][0][0].weight_quant.bits == 3 and q.enc[0][0][0].weight_quant.prune == 0.2


@pytest.mark.parametrize("scheme,match", [
    ({"weight": "twn", "wbits": 2}, "unknown quantization scheme keys"),
    ({"weight": "nope"}, "unknown quantizer 'nope'"),
    ({"weight": "twn", "first_last": "int8"}, "first_last"),
    ({"weight": "twn", "w_bits": 3}, "twn: bits"),
    ({"weight": "twn", "layers": {"enc.*": {"bits": 2}}}, "layers"),
    ("twn", "must be a dict"),
])
def test_bad_schemes(scheme, match):
    with pytest.raises(ValueError, match=match):
        quantize_model(FCN(in_channels=1, width=4, depth=2), scheme)


def test_iao_defaults_to_folding():
    assert check_scheme({"weight": "iao"})["fold_bn"] is True
    assert check_scheme({"weight": "twn"})["fold_bn"] is False


def test_binary_activations_replace_relu_so_codes_are_signed():
    """BinaryNet activations after a ReLU would all be +1: the ReLUs go, and both signs occur."""
    import torch
    from torch import nn

    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    m = quantize_model(FCN(width=4, depth=2), {"weight": "binarynet", "act": "binarynet",
                                               "first_last": "iao8"})
    assert not any(isinstance(x, nn.ReLU) for x in m.modules())
    seen = []
    hooks = [q.register_forward_hook(lambda mod, i, o: seen.append(o.detach()))
             for n, q in m.named_modules() if getattr(q, "method", None) == "binarynet"
             and getattr(q, "kind", None) == "act"]
    m(torch.randn(2, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert seen and all(set(torch.unique(o).tolist()) == {-1.0, 1.0} for o in seen)
    kept = quantize_model(FCN(width=4, depth=2), {"weight": "twn", "act": "dorefa"})
    assert any(isinstance(x, nn.ReLU) for x in kept.modules())


def _act_outputs(model, x, layer):
    out = []
    h = layer.act_quant.register_forward_hook(lambda mod, i, o: out.append(o.detach()))
    with __import__("torch").no_grad():
        model(x)
    h.remove()
    return out[0]


def test_binarynet_same_still_sees_the_image():
    """sign(image / 255) = +1 everywhere made every image give the same output; the first layer now
    keeps 8-bit input (BinaryNet section 2.6), so two images give different logits."""
    import torch

    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    m = quantize_model(FCN(width=4, depth=2), {"weight": "binarynet", "act": "binarynet",
                                               "first_last": "same"}).eval()
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (m(a) - m(b)).abs().max() > 0
    first = m.enc[0][0][0]
    assert first.act_quant.method == "iao" and first.act_quant.bits == 8
    assert m.head.weight_quant.method == "binarynet"  # the rest is the scheme ("same")


def test_hwgq_same_keeps_the_grey_levels_of_the_image():
    import torch

    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    m = quantize_model(FCN(width=4, depth=2), {"weight": "hwgq", "act": "hwgq", "a_bits": 2,
                                               "first_last": "same"})
    x = torch.arange(256.0).reshape(1, 1, 16, 16).expand(1, 3, 16, 16) / 255
    codes = _act_outputs(m.train(), x, m.enc[0][0][0])
    assert len(torch.unique(codes)) > 200  # 2-bit HWGQ would keep 3 of the 256 grey values
    middle = m.enc[1][0][0]
    assert middle.act_quant.method == "hwgq"


def test_binary_head_keeps_its_sign_under_iao8_and_float():
    """Without the ReLUs, an 8-bit (or float) head would read the last binary block's batch-norm
    output linearly; it reads its sign, as BinaryNet's classifier does."""
    import torch

    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    for first_last, weight in (("iao8", "iao"), ("float", None)):
        m = quantize_model(FCN(width=4, depth=2), {"weight": "binarynet", "act": "binarynet",
                                                   "first_last": first_last})
        assert getattr(m.head.weight_quant, "method", None) == weight
        codes = _act_outputs(m.eval(), torch.rand(1, 3, 16, 16), m.head)
        assert set(torch.unique(codes).tolist()) == {-1.0, 1.0}, first_last
    # non-signed schemes keep their 8-bit head input
    m = quantize_model(FCN(width=4, depth=2), {"weight": "twn", "act": "dorefa"})
    assert m.head.act_quant.method == "iao"
