"""Pure maths of adaptive_data: alignment filter, selection, outer updates, mixtures.

Submodules: ``alignment``, ``selection``, ``derivatives``, ``outer`` (ANOGRAD, SOBA, DDS,
the classifier, L2RW), ``mixture`` (domain mixture weights), ``dsir`` (hashed n-gram
importance weights), ``reference_scores`` (RHO-LOSS, CDS), ``tree``.
"""

from adaptive_data.core.alignment import mean_gradient, per_example_alignment
from adaptive_data.core.selection import (
    gather,
    positive_only,
    sample_with_replacement,
    sample_without_replacement,
    select,
    top_b,
)
from adaptive_data.core.tree import leaf_paths, path_mask

__all__ = [
    "gather",
    "leaf_paths",
    "mean_gradient",
    "path_mask",
    "per_example_alignment",
    "positive_only",
    "sample_with_replacement",
    "sample_without_replacement",
    "select",
    "top_b",
]
