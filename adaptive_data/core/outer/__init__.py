"""Outer updates of the weighting model phi: ANOGRAD, SOBA, DDS, and the L2RW baseline.

Each constructor returns an `OuterMethod(init, update)` (see `base`):
`init(phi, theta=None) -> state` and
`update(phi, state, theta, generic_batch, target_batch, key) -> (phi, state, metrics)`.
"""

from adaptive_data.core.outer.anograd import anograd, anograd_gradient
from adaptive_data.core.outer.base import (
    MixtureState,
    OuterMethod,
    PhiState,
    SobaState,
)
from adaptive_data.core.outer.dds import dds, dds_gradient
from adaptive_data.core.outer.l2rw import l2rw, l2rw_weights
from adaptive_data.core.outer.soba import soba, soba_directions

__all__ = [
    "MixtureState",
    "OuterMethod",
    "PhiState",
    "SobaState",
    "anograd",
    "anograd_gradient",
    "dds",
    "dds_gradient",
    "l2rw",
    "l2rw_weights",
    "soba",
    "soba_directions",
]
