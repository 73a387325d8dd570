"""Pure maths of adaptive_data: losses, selection, alignment, outer updates, mixtures."""

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
