"""The quantizer zoo. ``get_quantizer(name, kind=..., bits=...)``; see base.py for the contract.

Each method lives in its own module and registers itself on import.
"""

import importlib

from seglearn.quant.base import (QUANTIZERS, QuantInfo, Quantizer, get_quantizer,
                                 list_quantizers, register_quantizer)

# Method modules register themselves on import; every one of them must import (an error is real).
METHOD_MODULES = ("binarynet", "twn", "dorefa", "inq", "clipq", "hwgq",
                  "elq", "featq", "iao", "syq", "tsq")
for _name in METHOD_MODULES:
    importlib.import_module(f"seglearn.quant.{_name}")
del _name

__all__ = ["QUANTIZERS", "QuantInfo", "Quantizer", "get_quantizer", "list_quantizers",
           "register_quantizer", "METHOD_MODULES"]
