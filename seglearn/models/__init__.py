"""FCN definitions. ``build_model(name, **kwargs)``; ``FCN.forward_features`` exposes the bottleneck.

Also model loading and running: ``checkpoint`` (build a quantized FCN, its JSON sidecar, rebuild
it from a checkpoint), ``ensemble`` (``load_ensemble``: a round's members at their trained scale
on the configured device), ``device`` (``train.device`` resolution), ``infer`` (whole-image and
tiled inference), ``fused`` (folded inference copies). Imported on their own, not from here, so
``import seglearn.models`` stays light.
"""

from seglearn.models.fcn import FCN, MODELS, build_model

__all__ = ["FCN", "MODELS", "build_model"]
