"""The ``Method`` record: what a training method tells the driver."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


def _no_state(key, params):
    del key, params
    return None


def _single_phase(step):
    del step
    return {}


@dataclasses.dataclass(frozen=True)
class Method:
    """A training method as the driver sees it.

    ``streams``: stream name -> (corpus split, global batch size); the driver feeds
    ``step(state, batches, **phase(step_number))`` a dict with one batch per stream;
    ``phase`` returns static (hashable) flags of a step, e.g. whether the selection
    warm-up is over, and each distinct set of flags is compiled once.
    ``init_method_state(key, params)`` builds ``TrainState.method_state``.
    """

    name: str
    streams: Mapping[str, tuple[str, int]]
    step: Callable[..., tuple[Any, dict[str, Any]]]
    init_method_state: Callable[[Any, Any], Any] = _no_state
    phase: Callable[[int], dict[str, Any]] = _single_phase
