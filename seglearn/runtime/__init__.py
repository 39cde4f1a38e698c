"""The integer-only runtime: numpy + numba only, never torch (see docs/METHODS.md section 5).

Submodules: ``fixedpoint`` (gemmlowp requantization), ``bitpack`` (64-to-a-word packing, bit planes),
``ops_ref`` (readable reference kernels), ``ops_fast`` (numba kernels, identical results).
``ops_fast`` is not imported here (numba compile/cache load): import it explicitly when needed.
"""

from seglearn.runtime import fixedpoint  # noqa: F401
from seglearn.runtime.fixedpoint import quantize_multiplier, quantize_multipliers, requantize  # noqa: F401

__all__ = ["fixedpoint", "quantize_multiplier", "quantize_multipliers", "requantize"]
