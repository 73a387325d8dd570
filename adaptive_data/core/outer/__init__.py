"""Outer updates of the weighting model phi: ANOGRAD, SOBA, DDS, the classifier, and the
L2RW baseline.

Each constructor returns an `OuterMethod(init, update)` (see `base`):
`init(phi, theta=None) -> state` and
`update(phi, state, theta, generic_batch, target_batch, key) -> (phi, state, metrics)`.
Each state sits next to its method (`PhiState` in `base`, `SobaState` in `soba`); the
domain mixture (`core.mixture`) and DSIR (`core.dsir`) use the same interface.
"""

from adaptive_data.core.outer.anograd import anograd, anograd_gradient
from adaptive_data.core.outer.base import OuterMethod, PhiState
from adaptive_data.core.outer.classifier import classifier, classifier_gradient
from adaptive_data.core.outer.dds import dds, dds_gradient
from adaptive_data.core.outer.l2rw import l2rw, l2rw_weights
from adaptive_data.core.outer.soba import SobaState, soba, soba_directions

__all__ = [
    "OuterMethod",
    "PhiState",
    "SobaState",
    "anograd",
    "anograd_gradient",
    "classifier",
    "classifier_gradient",
    "dds",
    "dds_gradient",
    "l2rw",
    "l2rw_weights",
    "soba",
    "soba_directions",
]
