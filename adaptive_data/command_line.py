"""The command line of ``python -m adaptive_data.main``, for code that launches runs as
subprocesses (sweeps, the diagnose validation, fault fuzzing, tests).

This module only builds argv lists; the flags themselves are defined in
``adaptive_data.main``, which is not imported here (importing it would define its absl
flags in the caller's process)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

DRIVER_MODULE = "adaptive_data.main"


def driver_command(
    config: str,
    workdir: str | os.PathLike,
    *,
    overrides: Mapping[str, object] | None = None,
    flags: Iterable[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """``PYTHON -m adaptive_data.main --config=CONFIG --workdir=WORKDIR`` + one
    ``--config.KEY=VALUE`` per item of ``overrides`` (dotted config key -> value, written
    with ``str``) + ``flags`` as given (``--mode=diagnose``, ``--config.seed=1``, ...).

    ``config`` is the config flag's value, ``PATH[:ARG]`` (e.g.
    ``configs/default.py:runlocal,method=anograd``); a relative PATH is read from the
    subprocess's working directory, so launch it from the repository root."""
    return [
        python,
        "-m",
        DRIVER_MODULE,
        f"--config={config}",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in (overrides or {}).items()),
        *flags,
    ]
