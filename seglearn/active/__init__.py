"""Active learning: uncertainty scores, descriptors, selection strategies, greedy max-cover.

Numpy only: this package scores and selects on the outputs of models; it never trains or runs
them (ensemble inference lives in ``seglearn.models.ensemble``). ``tests/test_import_rules.py``
imports every module here with torch blocked.
"""

from seglearn.active.descriptors import (
    DescriptorAccumulator,
    descriptor_from_features,
    descriptors_from_batch,
)
from seglearn.active.maxcover import cosine_similarity, cover_gains, max_cover_select
from seglearn.active.scores import (
    REDUCTIONS,
    SCORES,
    reduce_map,
    reduce_maps,
    score_batch,
    score_image,
    score_image_all,
    score_map,
    score_maps,
)
from seglearn.active.strategies import (
    STRATEGIES,
    Selection,
    SelectionNote,
    get_strategy,
    list_strategies,
    register_strategy,
    select,
)

__all__ = [
    "DescriptorAccumulator",
    "descriptor_from_features",
    "descriptors_from_batch",
    "cosine_similarity",
    "cover_gains",
    "max_cover_select",
    "REDUCTIONS",
    "SCORES",
    "reduce_map",
    "reduce_maps",
    "score_batch",
    "score_image",
    "score_image_all",
    "score_map",
    "score_maps",
    "STRATEGIES",
    "Selection",
    "SelectionNote",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "select",
]
