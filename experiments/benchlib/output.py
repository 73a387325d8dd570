"""Command-line lists, guarded rows, and the table and file output of the benchmarks."""

from __future__ import annotations

import json
import math
import pathlib
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def parse_list(text: str, valid: Sequence[str] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if valid is not None:
        bad = [t for t in items if t not in valid]
        if bad:
            raise SystemExit(f"unknown names {bad}; choose from {list(valid)}")
    return items


def run_guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or a row with the error (and the traceback on stderr) if it raises."""
    try:
        return fn()
    except Exception as e:  # keep going: one failing method must not lose the others
        traceback.print_exc()
        first_line = (str(e).splitlines() or [""])[0]
        return {"name": name, "error": f"{type(e).__name__}: {first_line}"[:300]}


def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def render_table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]
) -> tuple[str, str]:
    """(plain text, Markdown) of ``rows`` with ``columns`` = [(key, header, format)]."""
    cells = [[fmt(r.get(key), spec) for key, _, spec in columns] for r in rows]
    headers = [h for _, h, _ in columns]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]

    def line(xs):
        return "  ".join(
            x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(xs, widths))
        )

    text = "\n".join([line(headers), line(["-" * w for w in widths])] + [line(c) for c in cells])
    md = "\n".join(
        ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        + ["| " + " | ".join(x.replace("|", "\\|") for x in c) + " |" for c in cells]
    )
    return text, md


def output_prefix(output: str, default_stem: str) -> pathlib.Path | None:
    """``--output``: '' (nothing written), a directory, or a file path (.json/.md stripped)."""
    if not output:
        return None
    path = pathlib.Path(output)
    if path.suffix in (".json", ".md"):
        return path.with_suffix("")
    return path / default_stem


def write_outputs(
    prefix: pathlib.Path | None, payload: dict[str, Any], markdown: str, *, quiet: bool = False
) -> None:
    if prefix is None:
        return
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path = prefix.with_name(prefix.name + ".json")
    md_path = prefix.with_name(prefix.name + ".md")
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md_path.write_text(markdown + "\n")
    if not quiet:
        print(f"wrote {json_path} and {md_path}")


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def pass_fail(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")
