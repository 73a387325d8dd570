"""Helpers of config files: the ``get_config`` argument parser and loading by path."""

from __future__ import annotations

import importlib.util
import pathlib
import types

import ml_collections


def load_config_module(path: str | pathlib.Path) -> types.ModuleType:
    """Imports a config file (e.g. ``configs/default.py``) from its path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    spec = importlib.util.spec_from_file_location(f"adaptive_data_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            raise ValueError(f"Unknown config argument {key!r} in {arg!r}; valid arguments: "
                             f"{sorted(defaults)}.")
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
