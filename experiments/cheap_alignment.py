"""How good is a cheap alignment scorer? The exact filter's per-example alignment
``a_i = <grad l_i, g_s>`` restricted to the LM's last layers, against the exact one on the
embedded corpus, and what each costs per train step.

    python experiments/cheap_alignment.py --workdir /work/runs/cm/russian/base_x1_lr0.01_seed0 \\
        --target russian --tfds_data_dir /work/runs/cm/tfds

At the latest checkpoint of a trained run (the scarce preset's model, b and k), for
``--batches`` big generic batches B (k x b candidates) each with a ``target_train`` batch
giving ``g_s``: the exact alignments (all parameters, forward-mode ``jvp``) and those of
each scope of ``SCOPES`` (``align_filter.param_filter``: leaves outside it are neither
differentiated nor carried as tangents). Reported per scope: the Spearman rank
correlation with the exact alignments (mean and SD over batches), the fraction of the
exact top b that the scope's top b keeps, and XLA's FLOPs of ``align_filter``'s train
step with that scope, over base's. Writes ``cheap_alignment.md`` / ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import types

import benchlib  # noqa: F401  (puts the repository root on sys.path)
import jax
import numpy as np
from benchmark_setup import PRESETS, REPO_ROOT, run_config
from compute_multiplier import step_flops_by_phase

from adaptive_data import checkpoint as ckpt
from adaptive_data import config_args, run_setup, stats
from adaptive_data.core import alignment
from adaptive_data.data import pipeline, sources
from adaptive_data.models import transformer

# ``align_filter.param_filter`` of each scope (None: every parameter, the exact filter).
# The tiny LM's parameters: embed (tied with the output layer), pos_embed, block_0,
# block_1, ln_final.
# The method whose scorer is measured (its ``align_filter.param_filter``).
SCORED_METHODS = ("align_filter",)
SCOPES = {
    "exact (all parameters)": None,
    "last block + final norm": r"block_1/|ln_final",
    "final norm": r"ln_final",
}


def top_overlap(exact: np.ndarray, cheap: np.ndarray, b: int) -> float:
    """Fraction of the b highest ``exact`` scores that are among the b highest ``cheap``."""
    return len(set(np.argsort(-exact)[:b]) & set(np.argsort(-cheap)[:b])) / b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained run of the scarce preset")
    parser.add_argument("--target", default="russian")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--tfds_data_dir", default=None)
    parser.add_argument(
        "--out", default=str(REPO_ROOT / "experiments" / "results" / "compute_multiplier")
    )
    args = parser.parse_args(argv)
    preset, run_args = PRESETS["scarce"], types.SimpleNamespace(**vars(args))
    config = run_config(preset, args.target, SCORED_METHODS[0], args.seed, run_args)
    corpus = sources.load_corpus(config.data)
    setup = run_setup.build(config, domains=corpus.domains, target_domain=corpus.target_domain)
    loss_fn = transformer.make_loss_fn(setup.model)
    params = jax.tree.map(jax.numpy.asarray, ckpt.restore_params(args.workdir))
    b, k = preset.batch_size, preset.downsampling

    @jax.jit
    def target_gradient(params, target):
        return alignment.mean_gradient(loss_fn, params, target)

    scorers = {
        name: jax.jit(
            lambda params, big, g, pattern=pattern: alignment.per_example_alignment(
                loss_fn, params, big, g, method="jvp", param_filter=pattern
            )
        )
        for name, pattern in SCOPES.items()
    }

    def stream(split, size, offset):
        return iter(
            pipeline.train_stream(
                corpus.splits[split],
                domains=corpus.domains,
                max_length=config.model.max_length,
                tokenizer=setup.model.tokenizer,
                global_batch_size=size,
                seed=1000 * args.seed + offset,
            )
        )

    generic, target = stream("generic_train", k * b, 21), stream("target_train", b, 22)
    spearman = {name: [] for name in SCOPES}
    overlap = {name: [] for name in SCOPES}
    for _ in range(args.batches):
        big, target_batch = (pipeline.device_view(next(it)) for it in (generic, target))
        g = target_gradient(params, target_batch)
        scores = {name: np.asarray(fn(params, big, g)) for name, fn in scorers.items()}
        exact = scores["exact (all parameters)"]
        for name, values in scores.items():
            spearman[name].append(stats.spearman(exact, values))
            overlap[name].append(top_overlap(exact, values, b))

    base_config = run_config(preset, args.target, "base", args.seed, run_args)
    base = step_flops_by_phase(base_config, ("warmup",))["warmup"]
    rows = []
    for name, pattern in SCOPES.items():
        scoped = config_args.override(config, {"align_filter.param_filter": pattern or ""})
        flops = step_flops_by_phase(scoped, ("select",))["select"]
        rows.append(
            {
                "scope": name,
                "param_filter": pattern or "",
                "spearman_mean": statistics.fmean(spearman[name]),
                "spearman_sd": statistics.stdev(spearman[name]) if args.batches > 1 else 0.0,
                "top_b_overlap": statistics.fmean(overlap[name]),
                "step_flops_x_base": flops / base,
            }
        )
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python experiments/cheap_alignment.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "# Cheap alignment scorers against the exact alignment",
        "",
        f"Command: `{command}`",
        "",
        f"Checkpoint: latest of `{args.workdir}`; target `{args.target}`; {args.batches} big "
        f"batches of k x b = {k} x {b}; {jax.default_backend()}, jax {jax.__version__}.",
        "",
        "| scope | param_filter | Spearman with exact (mean +- SD) | top-b overlap | "
        "align_filter step FLOPs x base |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scope']} | `{r['param_filter']}` | {r['spearman_mean']:.3f} +- "
            f"{r['spearman_sd']:.3f} | {r['top_b_overlap']:.2f} | {r['step_flops_x_base']:.2f} |"
        )
    (out / "cheap_alignment.md").write_text("\n".join(lines) + "\n")
    (out / "cheap_alignment.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
