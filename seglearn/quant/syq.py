"""SYQ: symmetric quantization with learned fine-grained scales (Faraone et al., CVPR 2018).

Weights (:class:`SYQWeight`)::

    c   = sign(W) * 1{|W| > eta * max|W|}            # eta = 0: binary, eta = 0.05: ternary
    W_q = alpha ⊙ c

``alpha`` is an ``nn.Parameter`` with one value per group (weights laid out (out, in, kh, kw)):

- ``granularity="pixel"`` (default): one per kernel position ``(kh, kw)`` — the paper's diagonal
  scaling matrix, the reference's ``fine_grained_quant`` (``Ws`` of shape [kh*kw, 1]); broadcast
  over output and input channels.
- ``granularity="row"``: one per kernel row, shape ``(kh, 1)`` — the reference's ``rows_quant``
  (``Ws`` of shape [kh, 1], TF kernels being [kh, kw, in, out]); broadcast over kw and channels.
- ``granularity="channel"``: one per output channel (axis 0), shape ``(out,)`` (not in the paper:
  what ``"row"`` meant here before it followed the reference).

A 2-D weight has no kernel positions: ``pixel`` and ``row`` give it one scalar (the reference's
``Wn`` of its fully connected layers).

``alpha`` is initialised to the group's mean ``|W|`` on the first forward (or by
:meth:`SYQWeight.init_from`). Gradients, as in the reference's TF graph (``Sign -> Identity`` and
``Mul -> Add`` overrides on ``sign(W) * mask_z``, then an ordinary multiply by the mask that holds
``alpha`` where ``|W| > eta max|W|`` and 1 elsewhere)::

    dL/dalpha_g = sum_{i in g} dL/dWq_i * c_i
    dL/dW_i     = alpha_g(i) * dL/dWq_i    where |W_i| > eta max|W|
                = dL/dWq_i                 elsewhere (the zeroed weights: straight through)

(a plain straight-through ``dL/dW = dL/dWq`` would give the kept weights a learning rate about
``1/alpha`` times the reference's). The codes themselves are constants.

Lazy alpha: the weight shape is unknown when the quantizer is built, so ``alpha`` is registered at
construction as an empty parameter (or with the shape implied by ``shape=``) and its ``.data`` is
replaced in place on first use — the same Parameter object, so an optimizer built earlier still
holds it. Loading a state dict resizes ``alpha`` to the stored shape first, so a fresh quantizer
loads a trained one's state without a forward.

Activations (:class:`SYQAct`): uniform k-bit on [0, 1] (default 8):
``y = round((2^k - 1) clip(x, 0, 1)) / (2^k - 1)``, gradient 1 for ``0 <= x <= 1``, else 0.

Reference: julianfaraone/SYQ ``quantize.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from seglearn.quant.base import QuantInfo, Quantizer, register_quantizer

PAPER = "Faraone et al., SYQ: Learning Symmetric Quantization, CVPR 2018"
GRANULARITIES = ("pixel", "row", "channel")


def resize_lazy_on_load(module: nn.Module, state_dict: dict, prefix: str,
                        names: Sequence[str]) -> None:
    """Before the default state-dict copy, give lazily-shaped tensors ``names`` the stored shapes."""
    for name in names:
        key = prefix + name
        if key in state_dict:
            current = getattr(module, name)
            incoming = state_dict[key]
            if current.shape != incoming.shape:
                current.data = torch.empty(incoming.shape, dtype=current.dtype,
                                           device=current.device)


class SYQWeight(Quantizer):
    """Binary/ternary weights with a learned per-position (per-kernel-row, per-channel) ``alpha``."""

    method, kind = "syq", "weight"

    def __init__(self, bits: int = 2, eta: float | None = None, granularity: str = "pixel",
                 shape: Sequence[int] | None = None):
        super().__init__()
        if bits not in (1, 2):
            raise ValueError(f"syq weights are binary (bits=1) or ternary (bits=2), not {bits!r}")
        self.bits = int(bits)
        eta = (0.0 if bits == 1 else 0.05) if eta is None else float(eta)
        if not 0.0 <= eta < 1.0:
            raise ValueError(f"syq eta must be in [0, 1), not {eta!r}")
        if bits == 1 and eta != 0.0:
            raise ValueError("syq binary weights (bits=1) need eta=0")
        if granularity not in GRANULARITIES:
            raise ValueError(f"syq granularity must be one of {GRANULARITIES}, not {granularity!r}")
        self.eta, self.granularity = eta, granularity
        alpha_shape = (0,) if shape is None else self.alpha_shape(tuple(shape))
        self.alpha = nn.Parameter(torch.ones(alpha_shape))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def alpha_shape(self, wshape: tuple[int, ...]) -> tuple[int, ...]:
        """The stored shape: (kh, kw) "pixel", (kh, 1) "row" (the reference's), (out,) "channel"."""
        if len(wshape) < 2:
            raise ValueError(f"syq needs a weight with at least 2 dims, got shape {wshape}")
        if self.granularity == "channel":
            return (wshape[0],)
        if len(wshape) == 2:
            return (1,)
        if self.granularity == "pixel":
            return tuple(wshape[2:])
        return (wshape[2],) + (1,) * (len(wshape) - 3)

    def _view_shape(self, wshape: tuple[int, ...]) -> tuple[int, ...]:
        """``alpha``'s shape broadcast against the weight (1 along the dims a group spans)."""
        if self.granularity == "channel":
            return (wshape[0],) + (1,) * (len(wshape) - 1)
        return (1, 1) + self.alpha_shape(wshape) if len(wshape) > 2 else (1, 1)

    def _view(self, wdim: int) -> torch.Tensor:
        """``alpha`` shaped to broadcast against a weight with ``wdim`` dims."""
        if self.granularity == "channel":
            return self.alpha.reshape((-1,) + (1,) * (wdim - 1))
        if wdim == 2:
            return self.alpha.reshape(1, 1)
        return self.alpha.reshape((1, 1) + tuple(self.alpha.shape))

    def _group_dims(self, wshape: tuple[int, ...]) -> list[int]:
        """The weight dims one alpha spans (reduced over for its initial mean |W|)."""
        view = self._view_shape(wshape)
        return [d for d in range(len(wshape)) if view[d] == 1]

    @torch.no_grad()
    def init_from(self, w: torch.Tensor) -> None:
        """Set ``alpha`` to the mean ``|W|`` of each group (in place: the Parameter object is kept)."""
        a = w.detach().abs().mean(dim=self._group_dims(tuple(w.shape)))
        a = a.reshape(self.alpha_shape(tuple(w.shape))).to(self.alpha.dtype)
        self.alpha.data = a.to(self.alpha.device).clone()
        self.initialized.fill_(True)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """``sign(W) * 1{|W| > eta max|W|}`` in {-1, 0, 1} (sign(0) = 0 never matters: |0| is not > .)."""
        w = w.detach()
        if self.eta == 0.0:  # binary: sign with sign(0) = +1 so every weight gets a code
            return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        thr = self.eta * w.abs().max()
        return torch.sign(w) * (w.abs() > thr).to(w.dtype)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.init_from(w)
        elif tuple(self.alpha.shape) != self.alpha_shape(tuple(w.shape)):
            raise ValueError(f"syq alpha has shape {tuple(self.alpha.shape)} but weight "
                             f"{tuple(w.shape)} needs {self.alpha_shape(tuple(w.shape))}")
        c = self.codes(w)
        alpha = self._view(w.ndim)
        # alpha * c carries dL/dalpha = sum g c. (w - w.detach()) is 0 in value; times the detached
        # mask (alpha where |W| > eta max|W|, else 1) it gives the reference's dL/dW = alpha g there
        # and g on the zeroed weights, without adding to dL/dalpha.
        keep = w.detach().abs() > self.eta * w.detach().abs().max()
        gain = torch.where(keep, alpha.detach(), torch.ones_like(alpha.detach()))
        return alpha * c + (w - w.detach()) * gain

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        """Codes in {-1, 0, 1}; ``scale`` is alpha: shape (kh, kw) for "pixel" or (kh, 1) for "row"
        (broadcast against the trailing weight dims, ``axis=None``), (out,) with ``axis=0`` for
        "channel"."""
        if x is None:
            raise ValueError("syq weight export_info needs the weight tensor")
        if not bool(self.initialized):
            self.init_from(x)
        codes = self.codes(x).to(torch.int8).numpy()
        alpha = self.alpha.detach().double().numpy().copy()
        if self.granularity != "channel" and x.ndim == 2:
            alpha = alpha.reshape(())
        return QuantInfo(method="syq", kind="weight", bits=self.bits, codes=codes,
                         scale=alpha if alpha.ndim else float(alpha), zero_point=0,
                         axis=0 if self.granularity == "channel" else None, signed=True,
                         extra={"granularity": self.granularity, "eta": self.eta})

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        resize_lazy_on_load(self, state_dict, prefix, ["alpha"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eta={self.eta}, granularity={self.granularity}"


class SYQAct(Quantizer):
    """Uniform k-bit activations on [0, 1] with a clipped straight-through gradient."""

    method, kind = "syq", "act"

    def __init__(self, bits: int = 8):
        super().__init__()
        if not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"syq act bits must be an integer in [1, 16], not {bits!r}")
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = 2**self.bits - 1
        xc = torch.clamp(x, 0.0, 1.0)  # clamp's own gradient is the 1{0 <= x <= 1} mask
        q = torch.round(xc.detach() * n) / n
        return xc + (q - xc).detach()

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        n = 2**self.bits - 1
        return QuantInfo(method="syq", kind="act", bits=self.bits, codes=None, scale=1.0 / n,
                         zero_point=0, signed=False, levels=np.arange(n + 1) / n,
                         thresholds=(np.arange(n) + 0.5) / n)


register_quantizer("syq", PAPER, weight=SYQWeight, act=SYQAct,
                   default_bits={"weight": 2, "act": 8})
