"""seglearn: active learning for 2D biomedical segmentation with quantized FCN ensembles.

Suggestive annotation (Yang et al., MICCAI 2017) with quantized ensembles (Xu et al., CVPR 2018),
a quantizer zoo, and an integer-only runtime. See README.md.
"""

__version__ = "0.1.0"
