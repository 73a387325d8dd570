"""What selection costs at the paper's sizes: XLA FLOPs per train step of each method,
relative to base, compiled (never run) with abstract inputs.

    python experiments/paper_size_flops.py                      # tiny, small, paper, c4
    python experiments/paper_size_flops.py --sizes tiny --methods base,anograd

For each model size and method, the step is compiled in its two selecting phases (the big
batch scored and b drawn; the same plus the outer update) and base's step once. Columns:

- ``select x base`` / ``full x base``: a step without / with the outer update, over base's;
- ``every 4`` / ``every 16``: the mean step with the outer update every N steps,
  ``select + (full - select) / N``, over base's: what amortising the outer update buys;
- ``scorer share``: of the overhead ``full - base``, the part spent before the outer
  update (scoring the k x b candidates, drawing b) — the rest is the outer update;
- ``needs``: the effective compute multiplier the method must reach to pay for itself
  at every step (= ``full x base``): its selected data must be worth that many base steps.

Sizes: ``tiny`` at the scarce preset's b = 16, k = 4; ``small`` at b = 32, k = 8; ``paper``
(12 x 256 byte LM) at b = 128 and the k of ``configs/paper/c4.py`` (by scorer: 16 for the
LM-scored methods, 64 for the cheap scorers). Compiling the paper size takes minutes per
method on 2 CPU cores; the FLOPs are XLA's count on this backend (CPU), which counts the
same HLO a GPU build compiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import platform
import sys
import time

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import jax
from compute_multiplier import step_flops_by_phase

from adaptive_data import config_args, methods

PAPER_SIZE_METHODS = (
    "base",
    "mixing",
    "dsir",
    "classifier",
    "anograd",
    "dds",
    "soba",
    "align_filter",
)


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    model: str  # configs/default.py size
    batch_size: int
    downsampling: int | None  # None: configs/paper/c4.py's k for the method's scorer


SIZES = {
    "tiny": Size("tiny", "tiny", 16, 4),
    "small": Size("small", "small", 32, 8),
    "paper": Size("paper", "paper", 128, None),
}


def size_config(size: Size, method: str):
    """The config of ``method`` at ``size``, selecting from the first step."""
    config = config_args.load_config(
        benchlib.REPO_ROOT / "configs" / "default.py", f"method={method},size={size.model}"
    )
    paper_k = _paper_downsampling(method)
    return config_args.override(
        config,
        {
            "train.batch_size": size.batch_size,
            "train.target_batch_size": size.batch_size,
            "train.steps": 2,
            "select.warmup_steps": 0,
            "select.downsampling": size.downsampling or paper_k,
            "cds.generic_from": "-",
            "cds.target_from": "-",
            "rho.reference_from": "-",
            "finetune.init_from": "-",
        },
    )


def _paper_downsampling(method: str) -> int:
    sys.path.insert(0, str(benchlib.REPO_ROOT / "configs" / "paper"))
    import c4

    return c4.DOWNSAMPLING_BY_SCORER[methods.METHODS[method].scorer]


def method_row(size: Size, method: str, base: float) -> dict[str, float | str]:
    config = size_config(size, method)
    spec = methods.METHODS[method]
    selects = spec.scorer != "none"
    phases = step_flops_by_phase(config, ("select", "select_outer") if selects else ("warmup",))
    select = phases["select" if selects else "warmup"]
    full = phases.get("select_outer", select)
    overhead = full - base
    has_overhead = selects and overhead > 0.01 * base
    return {
        "size": size.name,
        "method": method,
        "k": config.select.downsampling if selects else 1,
        "select x base": select / base,
        "full x base": full / base,
        "every 4": (select + (full - select) / 4) / base,
        "every 16": (select + (full - select) / 16) / base,
        "scorer share": (select - base) / overhead if has_overhead else math.nan,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="tiny,small,paper")
    parser.add_argument("--methods", default=",".join(PAPER_SIZE_METHODS))
    parser.add_argument(
        "--out",
        default=str(benchlib.REPO_ROOT / "experiments" / "results" / "compute_multiplier"),
    )
    args = parser.parse_args(argv)
    rows = []
    for name in benchlib.parse_list(args.sizes, list(SIZES)):
        size = SIZES[name]
        base = step_flops_by_phase(size_config(size, "base"))["warmup"]
        for method in benchlib.parse_list(args.methods, list(PAPER_SIZE_METHODS)):
            rows.append(method_row(size, method, base))
            print(rows[-1], flush=True)
    columns = list(rows[0])
    lines = [
        "# Train-step FLOPs at the paper's sizes (XLA cost analysis, compiled, not run)",
        "",
        f"Command: `python experiments/paper_size_flops.py {' '.join(argv or sys.argv[1:])}`",
        "",
        f"Compiled {time.strftime('%Y-%m-%d')} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, jax {jax.__version__}, {jax.default_backend()} backend).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_size_flops.md").write_text(
        "\n".join(lines) + "\n\n" + __doc__.split("\n\n", 2)[2]
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
