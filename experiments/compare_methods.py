"""Trains several methods with one config and prints a comparison table.

    python experiments/compare_methods.py --methods=base,align_filter,anograd \
        --config=configs/default.py --workdir=/tmp/ad_compare [--config.train.steps=300]

For each method: final ``eval/target_bpb`` and ``eval/generic_bpb`` (bits per byte, at the
same number of model steps), the mean share of target-domain documents among the selected
examples after the selection warm-up next to their share in the big batches (and the
ratio), and the wall time. Runs already finished in ``--workdir/<method>`` are reused
(the driver resumes them). Writes ``--workdir/comparison.{json,md}``.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags
from ml_collections import config_flags

from adaptive_data import train
from adaptive_data.methods import METHODS

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Base config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-directory per method goes here.")
_METHODS = flags.DEFINE_list(
    "methods", ["base", "align_filter", "anograd"], f"Methods to run, of {sorted(METHODS)}."
)
flags.mark_flags_as_required(["workdir"])


def summarize(method: str, rows: list[dict], warmup: int, seconds: float) -> dict:
    """Final bits/byte and the mean selection shares after the warm-up."""
    evals = [r for r in rows if "eval/target_bpb" in r]
    after = [r for r in rows if r["step"] > warmup and "select/target_share" in r]
    result = {
        "method": method,
        "steps": evals[-1]["step"],
        "target_bpb": evals[-1]["eval/target_bpb"],
        "generic_bpb": evals[-1]["eval/generic_bpb"],
        "seconds": seconds,
    }
    if after:
        selected = sum(r["select/target_share"] for r in after) / len(after)
        pool = sum(r["select/pool_target_share"] for r in after) / len(after)
        result.update(
            target_share=selected,
            pool_target_share=pool,
            share_ratio=selected / pool if pool > 0 else float("nan"),
        )
    return result


def markdown(results: list[dict]) -> str:
    lines = [
        "| method | steps | target bpb | generic bpb | selected target share | "
        "pool target share | ratio | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        share = (
            f"{r['target_share']:.3f} | {r['pool_target_share']:.3f} | {r['share_ratio']:.1f}x"
            if "target_share" in r
            else "- | - | -"
        )
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['target_bpb']:.4f} | "
            f"{r['generic_bpb']:.4f} | {share} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    root = pathlib.Path(_WORKDIR.value)
    unknown = sorted(set(_METHODS.value) - set(METHODS))
    if unknown:
        raise app.UsageError(f"Unknown --methods {unknown}; choose from {sorted(METHODS)}.")
    results = []
    for method in _METHODS.value:
        config = _CONFIG.value.copy_and_resolve_references()
        config.method = method
        start = time.time()
        train.train_and_evaluate(config, str(root / method))
        rows = [json.loads(line) for line in (root / method / "metrics.jsonl").open()]
        results.append(
            summarize(method, rows, int(config.select.warmup_steps), time.time() - start)
        )
        print(markdown(results), flush=True)
    (root / "comparison.json").write_text(json.dumps(results, indent=2))
    (root / "comparison.md").write_text(markdown(results) + "\n")


if __name__ == "__main__":
    app.run(main)
