"""The repository root, put on ``sys.path`` so that the scripts of experiments/ import
``adaptive_data`` and ``configs/`` without ``pip install -e .``."""

from __future__ import annotations

import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
