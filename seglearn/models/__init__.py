"""FCN definitions. ``build_model(name, **kwargs)``; ``FCN.forward_features`` exposes the bottleneck."""

from seglearn.models.fcn import FCN, MODELS, build_model

__all__ = ["FCN", "MODELS", "build_model"]
