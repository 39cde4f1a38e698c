"""ONNX (QDQ) export: not implemented in this build.

The planned lowering: QuantizeLinear/DequantizeLinear pairs around every conv for the IAO scheme
(uint8 activations with (S, Z), int8 per-channel weights), fake-quant weights as int8 QDQ for other
schemes where they are exactly int8-representable. Until then this raises a clear error, and the
integer runtime's .slq format is the supported export.
"""

from __future__ import annotations

from pathlib import Path

SUPPORTED_SCHEMES: tuple[str, ...] = ()


class OnnxExportError(ValueError):
    """The model cannot be exported to ONNX (by this build)."""


def export_onnx(model, out: str | Path) -> dict:
    """Raise :class:`OnnxExportError`: QDQ ONNX export is not available yet; use ``--format slq``."""
    raise OnnxExportError("ONNX (QDQ) export is not implemented in this build (supported schemes: "
                          "none yet); export to the integer runtime with --format slq instead")
