"""Cost of alignment, scoring and one training step of each method, in units of one fwd+bwd.

For the model of ``configs/default.py`` at ``--size`` (default ``small``: 4 layers, width
128, MLP 512, max_length 128), a batch b (``--batch_size``, default the config's 32) and a
big batch B = k * b (``--downsampling`` k, default the config's 8), it measures

  (a) unit:       grad of the mean loss over B (one forward + backward over B);
  (b) alignment:  ``per_example_alignment`` over B along a target gradient, for each of
                  ``--align_methods`` (jvp, vmap in chunks of ``--chunk_size``, weights);
  (c) scoring:    the weighting model's forward (the byte CNN's logits) over B;
  (d) step:       one full training step of each of ``--methods``, as the driver runs it
                  (``Method.step`` + parameter norm, jitted with the state donated);

each as time (median of ``--repeats`` synced calls after ``--warmup``), compile time,
memory (XLA's compiled memory analysis; the device allocator's peak on GPU), the ratio
to (a), and for steps the ratio to the ``base`` step. Three checks of the issue are
printed with PASS/FAIL: jvp <= 1.5 units; vmap / jvp >= 3; anograd step <= 1.5 x base.

    python experiments/bench_alignment.py --size tiny --repeats 2           # seconds
    python experiments/bench_alignment.py --output experiments/results/     # default model

The timings are only meaningful on a quiet machine; see experiments/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  (puts the repo root on sys.path)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from adaptive_data import methods, models  # noqa: E402
from adaptive_data.core import alignment  # noqa: E402
from adaptive_data.data import tokenizer  # noqa: E402
from adaptive_data.models import weighting  # noqa: E402

ALIGN_METHODS = alignment.METHODS
COLUMNS = [
    ("name", "what", "s"),
    ("batch", "batch", "s"),
    ("median_ms", "median ms", ".4g"),
    ("min_ms", "min ms", ".4g"),
    ("units", "x unit (a)", ".3g"),
    ("x_base", "x base step", ".3g"),
    ("lower_s", "trace s", ".3g"),
    ("compile_s", "compile s", ".3g"),
    ("xla_peak_mb", "XLA peak MiB", ".4g"),
    ("xla_temp_mb", "XLA temp MiB", ".4g"),
    ("device_peak_mb", "dev peak MiB", ".4g"),
    ("note", "note", "s"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--size",
        default="small",
        choices=["tiny", "small", "paper"],
        help="model size preset of configs/default.py",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="b, the model's batch (default: the config's train.batch_size)",
    )
    p.add_argument(
        "--downsampling",
        type=int,
        default=None,
        help="k: big batch B = k * b (default: the config's select.downsampling)",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed calls per function")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument(
        "--methods",
        default=",".join(benchlib.ALL_METHODS),
        help="training steps to time (comma-separated; '' for none)",
    )
    p.add_argument(
        "--align_methods",
        default=",".join(ALIGN_METHODS),
        help="alignment methods to time (comma-separated)",
    )
    p.add_argument(
        "--chunk_size",
        type=int,
        default=None,
        help="chunk of the vmap alignment (default b); jvp/weights run unchunked",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["auto", "float32", "bfloat16"],
        help="activation dtype of the LM (params stay float32)",
    )
    p.add_argument(
        "--output", default="", help="directory (or path.json) for the JSON and Markdown table"
    )
    p.add_argument(
        "--time_budget_s",
        type=float,
        default=0.0,
        help="skip the remaining steps once this many seconds have passed (0: no limit)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _row(name, batch, compiled: benchlib.Compiled, times, note=""):
    return {
        "name": name,
        "batch": batch,
        "median_ms": 1e3 * benchlib.median(times),
        "min_ms": 1e3 * min(times),
        "times_ms": [1e3 * t for t in times],
        "lower_s": compiled.lower_s,
        "compile_s": compiled.compile_s,
        "xla_peak_mb": compiled.memory.get("peak_mb"),
        "xla_temp_mb": compiled.memory.get("temp"),
        "memory_mb": compiled.memory,
        "xla_gflop": (compiled.xla_flops or 0) / 1e9 or None,
        "device_peak_mb": benchlib.device_peak_mb(),
        "note": note,
    }


def bench_function(name, batch, fn, args, *, warmup, repeats, note=""):
    compiled = benchlib.compile_fn(fn, args)
    benchlib.check_fits(compiled, name)
    times = benchlib.time_calls(lambda: compiled.fn(*args), warmup=warmup, repeats=repeats)
    return _row(name, batch, compiled, times, note), compiled


# Methods with an outer update of a weighting model phi, also timed with the update skipped.
OUTER_METHODS = methods.names(scorer="weighting_model")
# outer.every that never comes round again after the warm-up calls: the step then does
# only the scoring, the selection and the inner update.
NO_OUTER_UPDATE = 10**9


def bench_step(method_name, args, *, b, k, dtype, outer_every=1):
    config = benchlib.make_config(
        method_name, size=args.size, batch_size=b, downsampling=k, dtype=dtype
    )
    config.outer.every = outer_every
    step = benchlib.build_train_step(config, seed=args.seed)
    timing, _ = benchlib.time_train_step(
        step.compiled.fn, step.state, step.batches, warmup=args.warmup, repeats=args.repeats
    )
    note = f"RECOMPILES at step 2: {timing.recompile}" if timing.recompile else ""
    batch = f"b={b}" + (f", B={step.big_batch}" if step.big_batch != b else "")
    skipped = outer_every == NO_OUTER_UPDATE
    name = f"step: {method_name}" + (" (outer update skipped)" if skipped else "")
    row = _row(name, batch, step.compiled, timing.synced_s, note)
    row["kind"] = "step_no_outer" if skipped else "step"
    row["method"] = method_name
    return row


def main(argv=None):
    args = parse_args(argv)
    budget = benchlib.Budget(args.time_budget_s)
    info = benchlib.machine_info()
    benchlib.print_machine(info)
    dtype = benchlib.resolve_dtype(args.dtype)

    defaults = benchlib.load_config(f"size={args.size}")
    b = int(args.batch_size or defaults.train.batch_size)
    k = int(args.downsampling or defaults.select.downsampling)
    config = benchlib.make_config("base", size=args.size, batch_size=b, downsampling=k, dtype=dtype)
    big = k * b
    chunk = args.chunk_size or b
    m = config.model
    print(
        f"model: size {args.size}, {m.num_layers} layers, width {m.width}, MLP {m.mlp_dim}, "
        f"{m.num_heads} heads, max_length {m.max_length}, activations {dtype}; "
        f"b={b}, k={k}, B={big}; repeats {args.repeats} after {args.warmup} warm-up"
    )

    model = models.build(m, tokenizer.BYTES)
    params = model.init_params(jax.random.key(args.seed))
    print(f"LM parameters: {benchlib.param_count(params):,}")
    loss_fn = models.make_loss_fn(model)  # deterministic, as the scorers use it
    rng = np.random.default_rng(args.seed)
    big_batch = jax.device_put(benchlib.synthetic_batch(rng, big, m.max_length))
    target_batch = jax.device_put(
        benchlib.synthetic_batch(
            rng, b, m.max_length, domain=benchlib.DOMAINS.index(benchlib.TARGET_DOMAIN)
        )
    )
    direction = jax.jit(lambda p, t: alignment.mean_gradient(loss_fn, p, t))(params, target_batch)
    rows = []
    bench = dict(warmup=args.warmup, repeats=args.repeats)

    # (a) the unit: grad of the mean loss over B; and the forward alone, for reference.
    unit_row, _ = bench_function(
        "(a) unit: fwd+bwd",
        f"B={big}",
        lambda p, x: jax.grad(lambda q: jnp.mean(loss_fn(q, x)))(p),
        (params, big_batch),
        **bench,
    )
    unit_row["kind"] = "unit"
    rows.append(unit_row)
    fwd_row, _ = bench_function(
        "forward only", f"B={big}", lambda p, x: loss_fn(p, x), (params, big_batch), **bench
    )
    fwd_row["kind"] = "forward"
    rows.append(fwd_row)
    # The core of the base step: fwd+bwd over b with dropout (as the steps train).
    train_loss = models.make_loss_fn(model, deterministic=False)
    small_batch = jax.tree.map(lambda x: x[:b], big_batch)
    row, _ = bench_function(
        "fwd+bwd, dropout",
        f"b={b}",
        lambda p, x, key: jax.grad(lambda q: jnp.mean(train_loss(q, x, key)))(p),
        (params, small_batch, jax.random.key(args.seed)),
        **bench,
    )
    row["kind"] = "reference"
    rows.append(row)

    # (b) alignment methods.
    outputs = {}
    for method in benchlib.parse_list(args.align_methods, ALIGN_METHODS):
        chunk_size = chunk if method == "vmap" else None

        def align(p, x, d, method=method, chunk_size=chunk_size):
            return alignment.per_example_alignment(
                loss_fn, p, x, d, method=method, chunk_size=chunk_size
            )

        label = f"(b) align {method}" + (f" (chunk {chunk_size})" if chunk_size else "")

        def run_align(label=label, align=align, method=method):
            row, compiled = bench_function(
                label, f"B={big}", align, (params, big_batch, direction), **bench
            )
            outputs[method] = np.asarray(compiled.fn(params, big_batch, direction))
            return row

        row = benchlib.run_guarded(label, run_align)
        row["kind"], row["method"] = "align", method
        if "error" in row:
            row["note"] = "ERROR " + row["error"][:70] + " (see JSON)"
        rows.append(row)
    if "jvp" in outputs:
        scale = float(np.max(np.abs(outputs["jvp"]))) or 1.0
        for row in rows:
            if row.get("kind") == "align" and row.get("method") in outputs:
                diff = float(np.max(np.abs(outputs[row["method"]] - outputs["jvp"])))
                row["rel_diff_vs_jvp"] = diff / scale
                if row["method"] != "jvp":
                    row["note"] = f"max|a - a_jvp|/max|a_jvp| = {diff / scale:.1e}"

    # (c) weighting-model scoring of B.
    wmodel = weighting.from_config(config.weighting, model.tokenizer)
    phi = weighting.init_weighting_params(
        jax.random.key(args.seed + 1), wmodel, jnp.zeros((1, m.max_length), jnp.int32)
    )
    row, _ = bench_function(
        "(c) score: weighting CNN",
        f"B={big}",
        lambda f, x: weighting.weighting_forward(wmodel, f, x, mode="logits"),
        (phi, big_batch["inputs"]),
        **bench,
        note=f"{benchlib.param_count(phi):,} CNN params",
    )
    row["kind"] = "score"
    rows.append(row)

    prefix = benchlib.output_prefix(
        args.output, f"bench_alignment_{args.size}_b{b}_k{k}_{dtype}_{info['backend']}"
    )
    unit_ms = unit_row["median_ms"]

    def report(final):
        """Ratios, checks, table, files; written after every step so a killed run keeps rows."""
        base_ms = _median_ms(rows, "step", "base")
        for row in rows:
            if "median_ms" in row:
                row["units"] = row["median_ms"] / unit_ms
                if row.get("kind", "").startswith("step") and base_ms:
                    row["x_base"] = row["median_ms"] / base_ms
        checks = _checks(rows, unit_ms, base_ms)
        text, md = benchlib.render_table(rows, COLUMNS)
        check_lines = [
            f"{benchlib.pass_fail(ok):4s}  {name}: measured {benchlib.fmt(value)} "
            f"(threshold {threshold})"
            for name, value, threshold, ok in checks
        ]
        info["load_average_end"] = benchlib.load_average()
        info["host_peak_rss_mb"] = benchlib.host_peak_rss_mb()
        header = (
            f"# bench_alignment: size {args.size}, b={b}, B={big}, {dtype}"
            f"{'' if final else ' (partial)'}\n\n"
            f"Machine: {info['device_count']} x {info['device_kind']} "
            f"({info['backend']}), jax {info['jax']}, {info['cpu_count']} host CPUs, "
            f"load average {info['load_average']} -> {info['load_average_end']}. "
            f"Median of {args.repeats} synced calls after {args.warmup} warm-up "
            f"calls.\n\n"
        )
        payload = {
            "script": "bench_alignment",
            "complete": final,
            "args": vars(args),
            "machine": info,
            "model": m.to_dict(),
            "b": b,
            "k": k,
            "B": big,
            "dtype": dtype,
            "unit_ms": unit_ms,
            "base_step_ms": base_ms,
            "rows": rows,
            "checks": [
                {"name": n, "value": v, "threshold": t, "pass": ok} for n, v, t, ok in checks
            ],
        }
        checks_md = "\n".join(f"- {line}" for line in check_lines)
        benchlib.write_outputs(prefix, payload, header + md + "\n\n" + checks_md, quiet=not final)
        if final:
            print()
            print(text)
            print()
            print("\n".join(check_lines))
            print(
                f"load average at the end: {info['load_average_end']}; host peak RSS "
                f"{info['host_peak_rss_mb']:.0f} MiB; total {budget.elapsed():.0f} s"
            )
        return payload

    # (d) full training steps (and, for the outer methods, the step without its update).
    runs = [(method, 1) for method in benchlib.parse_list(args.methods, benchlib.ALL_METHODS)]
    runs += [(method, NO_OUTER_UPDATE) for method, _ in list(runs) if method in OUTER_METHODS]
    for method, outer_every in runs:
        if budget.exhausted():
            rows.append(
                {
                    "name": f"step: {method}",
                    "kind": "step",
                    "method": method,
                    "note": "skipped (time budget)",
                }
            )
            continue
        row = benchlib.run_guarded(
            f"step: {method}",
            lambda method=method, every=outer_every: bench_step(
                method, args, b=b, k=k, dtype=dtype, outer_every=every
            ),
        )
        row.setdefault("kind", "step")
        row.setdefault("method", method)
        if "error" in row:
            row["note"] = "ERROR " + row["error"][:70] + " (see JSON)"
        rows.append(row)
        print(
            f"  {row['name']}: {benchlib.fmt(row.get('median_ms'))} ms "
            f"(compile {benchlib.fmt(row.get('compile_s'))} s)  [{budget.elapsed():.0f} s]",
            flush=True,
        )
        report(final=False)
    return report(final=True)


def _median_ms(rows, kind, method):
    return next(
        (
            r["median_ms"]
            for r in rows
            if r.get("kind") == kind and r.get("method") == method and "median_ms" in r
        ),
        None,
    )


def _checks(rows, unit_ms, base_ms):
    """The issue's targets: (name, measured value, threshold, pass or None if not measured).

    The step-cost targets apply to every method with a weighting model that was timed."""
    jvp, vmap = _median_ms(rows, "align", "jvp"), _median_ms(rows, "align", "vmap")
    jvp_units = None if jvp is None else jvp / unit_ms
    speedup = None if jvp is None or vmap is None else vmap / jvp
    checks = [
        (
            "jvp alignment <= 1.5 units",
            jvp_units,
            1.5,
            None if jvp_units is None else jvp_units <= 1.5,
        ),
        ("vmap / jvp >= 3", speedup, 3.0, None if speedup is None else speedup >= 3.0),
    ]
    for method in OUTER_METHODS:
        step = _median_ms(rows, "step", method)
        if step is None:
            continue
        ratio = None if base_ms is None else step / base_ms
        checks.append(
            (
                f"{method} step <= 1.5 x base step",
                ratio,
                1.5,
                None if ratio is None else ratio <= 1.5,
            )
        )
        skipped = _median_ms(rows, "step_no_outer", method)
        if None not in (skipped, base_ms):
            # outer.every = N: N - 1 steps without the update, one with it.
            for n in (2, 4, 8, 16):
                x = (skipped + (step - skipped) / n) / base_ms
                checks.append(
                    (f"{method} step <= 1.5 x base step at outer.every={n}", x, 1.5, x <= 1.5)
                )
    return checks


if __name__ == "__main__":
    main()
