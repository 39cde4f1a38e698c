"""The quantizer zoo. ``get_quantizer(name, kind=..., bits=...)``; see base.py for the contract.

Each method lives in its own module and registers itself on import.
"""

import importlib

from seglearn.quant.base import (QUANTIZERS, QuantInfo, Quantizer, get_quantizer,
                                 list_quantizers, register_quantizer)

# Method modules register themselves on import. Part B's modules are written in parallel: a module
# that does not exist yet is skipped, but an import error *inside* an existing module still raises.
METHOD_MODULES = ("binarynet", "twn", "dorefa", "inq", "clipq", "hwgq",
                  "elq", "featq", "iao", "syq", "tsq")
for _name in METHOD_MODULES:
    _full = f"seglearn.quant.{_name}"
    try:
        importlib.import_module(_full)
    except ModuleNotFoundError as _err:
        if _err.name != _full:
            raise
del _name, _full

__all__ = ["QUANTIZERS", "QuantInfo", "Quantizer", "get_quantizer", "list_quantizers",
           "register_quantizer", "METHOD_MODULES"]
