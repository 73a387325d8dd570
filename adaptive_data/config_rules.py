"""Config rules: ``Rule`` (a key, a predicate, the allowed values in words) and the
predicate helpers (``integer``, ``number``, ``one_of``, ...) that build them.

The leaf of the config-checking modules: it imports neither the method registry (whose
entries declare their own rules with these helpers) nor ``adaptive_data.validation``
(which composes the generic rules with every registered method's rules and applies them).
Each helper returns ``(ok, must_be)``: ``ok(value, config) -> bool`` and the allowed
values in words, for ``Rule(key, *helper(...))``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Rule:
    """``config.<key>`` must satisfy ``ok(value, config)``, described by ``must_be``.

    ``when(config)``: the rule applies only if this holds (constraints between keys);
    ``reads``: the other keys ``ok`` and ``when`` read (the rule is skipped when one of
    them is missing or itself bad).
    """

    key: str
    ok: Callable[[Any, Any], bool]
    must_be: str
    when: Callable[[Any], bool] | None = None
    reads: tuple[str, ...] = ()


# ------------------------------------------------------------------ value predicates


def is_int(v) -> bool:
    """Whether ``v`` is an integer (numpy ints included, bools not)."""
    if isinstance(v, bool):
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def is_number(v) -> bool:
    """Whether ``v`` is a finite real number (bools not)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _bound_text(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _within(v, lo, hi, lo_open, hi_open) -> bool:
    above = v > lo if lo_open else v >= lo
    below = hi is None or (v < hi if hi_open else v <= hi)
    return above and below


def integer(lo: int, *, optional: bool = False, note: str = ""):
    """``(ok, must_be)`` of an int >= ``lo`` (or None when ``optional``)."""
    text = f"an int >= {lo}" + (" or None" if optional else "") + note

    def ok(v, config):
        del config
        return (optional and v is None) or (is_int(v) and int(v) >= lo)

    return ok, text


def number(lo, hi=None, *, lo_open=False, hi_open=False, optional=False, note: str = ""):
    """``(ok, must_be)`` of a finite number within the bounds (or None when ``optional``)."""
    text = f"a number {_bound_text(lo, hi, lo_open, hi_open)}"
    text += (" or None" if optional else "") + note

    def ok(v, config):
        del config
        if optional and v is None:
            return True
        return is_number(v) and _within(float(v), lo, hi, lo_open, hi_open)

    return ok, text


def one_of(choices: Sequence[Any], *, optional: bool = False, note: str = ""):
    """``(ok, must_be)`` of a value of ``choices`` (or None when ``optional``)."""
    choices = tuple(choices)
    text = f"one of {choices}" + (" or None" if optional else "") + note

    def ok(v, config):
        del config
        return (optional and v is None) or (isinstance(v, str) and v in choices)

    return ok, text


def boolean():
    """``(ok, must_be)`` of True or False."""
    return (lambda v, config: isinstance(v, bool)), "True or False"


def text(*, optional: bool = False, note: str = ""):
    """``(ok, must_be)`` of a non-empty string (or None when ``optional``)."""

    def ok(v, config):
        del config
        return (optional and v is None) or (isinstance(v, str) and bool(v))

    return ok, "a non-empty string" + (" or None" if optional else "") + note


def regex(note: str = ""):
    """``(ok, must_be)`` of a string that compiles as a regular expression."""

    def ok(v, config):
        del config
        if not isinstance(v, str):
            return False
        try:
            re.compile(v)
        except re.error:
            return False
        return True

    return ok, "a valid regular expression" + note


def positive_ints():
    """``(ok, must_be)`` of a non-empty tuple (or list) of ints >= 1."""

    def ok(v, config):
        del config
        return (
            isinstance(v, (tuple, list))
            and len(v) > 0
            and all(is_int(x) and int(x) >= 1 for x in v)
        )

    return ok, "a non-empty tuple of ints >= 1"


def module_names():
    """``(ok, must_be)`` of a tuple (or list) of dotted Python module names."""

    def ok(v, config):
        del config
        return isinstance(v, (tuple, list)) and all(
            isinstance(m, str) and all(part.isidentifier() for part in m.split(".")) for m in v
        )

    return ok, "a tuple of importable module names, e.g. ('my_project.my_method',)"


def method_is(name: str) -> Callable[[Any], bool]:
    """``when`` condition of a rule that applies only when ``config.method == name``."""
    return lambda config: config.get("method") == name


def workdir(name: str, what: str) -> tuple:
    """A workdir key that ``method=name`` needs, for ``Rule(key, *workdir(name, what))``:
    ``(ok, must_be, when, reads)``; ``what`` says which run it is."""
    return (
        lambda v, config: isinstance(v, str) and bool(v),
        f"the workdir of {what} when config.method={name!r}",
        method_is(name),
        ("method",),
    )
