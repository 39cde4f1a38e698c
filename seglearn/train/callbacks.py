"""Training-engine callbacks: how quantizer schedules (INQ, ELQ, TSQ steps) and weight clipping
(BinaryNet) plug into training without the engine knowing any method.

The protocol and every schedule live in :mod:`seglearn.quant.schedules` (train may import quant,
never the reverse); :class:`Callback` is re-exported here for training code written against it.
"""

from seglearn.quant.schedules import Callback

__all__ = ["Callback"]
