"""Which torch device training and inference run on (``train.device``).

One resolution for everything that runs a model: training (``seglearn.train.engine``) and the
ensembles that ``seglearn.models.ensemble.load_ensemble`` loads (select, evaluate, tune,
pre-annotation), so ``auto`` means the same device for both.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cuda..."`` without CUDA is a ValueError
    naming ``train.device``; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name} but no CUDA device is available")
    return torch.device(name)


def config_device(cfg) -> str:
    """The device of a Config (its ``train.device``, resolved) as a string, e.g. ``"cpu"``."""
    return str(resolve_device(cfg.train.device))
