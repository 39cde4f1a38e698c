"""The integer-only runtime: numpy, numba and scipy.ndimage, never torch (see docs/METHODS.md section 5).

Submodules: ``fixedpoint`` (gemmlowp requantization), ``bitpack`` (64-to-a-word packing, bit planes),
``fold`` (BN/activation -> integer thresholds), ``checks`` (input validation), ``ops_ref`` (readable
reference kernels), ``ops_fast`` + ``ops_fast_binary`` (numba kernels, identical results),
``resample`` (the training resize in integers; exact bilinear margins), ``tiling``, ``postprocess_int``
(instances from integer margins), ``ops`` (the op table), ``model`` (``load_model``), ``cli``
(``seglearn-predict`` / ``python -m seglearn.runtime``).
Dependencies: numpy, numba, scipy (``ndimage``, post-processing) and Pillow (image files, the CLI
only): ``pip install seglearn[runtime]``; ``tests/runtime/test_runtime_imports.py`` checks it.
``ops_fast`` loads lazily on first attribute access so that importing ``fixedpoint`` (export, quant)
does not pay numba's import time.
"""

import importlib

from seglearn.runtime import bitpack, fixedpoint, fold, ops_ref  # noqa: F401
from seglearn.runtime.fixedpoint import quantize_multiplier, quantize_multipliers, requantize  # noqa: F401

_LAZY = ("ops_fast", "ops_fast_binary")

__all__ = ["load_model", "SlqFormatError", "bitpack", "fixedpoint", "fold", "ops_ref", *_LAZY,
           "quantize_multiplier", "quantize_multipliers", "requantize"]


def __getattr__(name: str):
    if name in ("load_model", "SlqFormatError"):  # lazy: the model loader imports scipy (post-processing)
        return getattr(importlib.import_module("seglearn.runtime.model"), name)
    if name in _LAZY:
        return importlib.import_module(f"seglearn.runtime.{name}")
    raise AttributeError(f"module 'seglearn.runtime' has no attribute {name!r}")
