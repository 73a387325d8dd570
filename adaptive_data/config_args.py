"""Config files: loading them by path (the one way the library, tests, notebooks and
scripts do it) and the ``get_config`` argument parser."""

from __future__ import annotations

import importlib.util
import pathlib
import types

import ml_collections

# The checkout holding the package (and ``configs/``), for paths given relative to it.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def resolve_config_path(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` as given if it exists, else relative to the repository root."""
    path = pathlib.Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute() and (REPO_ROOT / path).is_file():
        return REPO_ROOT / path
    raise FileNotFoundError(
        f"Config file {str(path)!r} does not exist (looked in the current "
        f"directory and in {str(REPO_ROOT)!r})."
    )


def load_config_module(path: str | pathlib.Path) -> types.ModuleType:
    """Imports a config file (e.g. ``configs/default.py``) from its path."""
    path = resolve_config_path(path)
    spec = importlib.util.spec_from_file_location(f"adaptive_data_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str | pathlib.Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of ``"PATH[:ARG]"`` as ``--config=PATH[:ARG]`` gives it, e.g.
    ``load_config("configs/default.py:method=anograd,runlocal")``; ``arg`` (if given)
    replaces the part after the colon."""
    path, _, spec_arg = str(spec).partition(":")
    return load_config_module(path).get_config(spec_arg if arg is None else arg)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses ``"k1=v1,k2,k3=v3"`` against typed ``defaults``.

    A bare name sets a boolean default to True. Values take the type of their default
    (bool accepts true/false/1/0). Unknown keys raise ValueError listing the valid ones.
    """
    parsed = ml_collections.ConfigDict(defaults)
    if not arg:
        return parsed
    for item in arg.split(","):
        item = item.strip()
        if not item:
            continue
        key, has_value, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"Unknown config argument {key!r} in {arg!r}; valid arguments: {sorted(defaults)}."
            )
        default = defaults[key]
        if not has_value:
            if not isinstance(default, bool):
                raise ValueError(f"Config argument {key!r} needs a value ({key}=...).")
            parsed[key] = True
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"Config argument {key!r} expects true/false, got {value!r}.")
            parsed[key] = value.lower() in ("true", "1")
        else:
            parsed[key] = type(default)(value)
    return parsed


def override(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Sets ``{"a.b.c": value, ...}`` in ``config`` (in place, and returns it), as the
    dotted ``--config.a.b.c=value`` flags do; an unknown key raises KeyError naming it."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"Unknown config key {dotted!r}.")
        node[leaf] = value
    return config
