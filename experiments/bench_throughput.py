"""Training throughput of base and each selection method: tokens/s, MFU, overhead vs base.

At the paper's model size by default (12 layers, width 256, MLP 1024, 8 heads,
max_length 256, batch b = 128) and a big batch B = k * b (``--downsampling`` k; the
paper uses B = 8,192 to 32,768, i.e. k = 64 to 256), it builds each method's training
step as the driver does (``Method.step`` + parameter norm, ``jax.jit`` with the state
donated) on synthetic batches and reports

- step time, "synced" (median of ``--steps`` steps, each followed by
  ``block_until_ready``) and "pipelined" (``--steps`` steps dispatched back to back, one
  sync at the end, mean per step: the driver's asynchronous loop without input
  pipeline);
- LM tokens/s = b * max_length / step time (pipelined), i.e. the tokens of the b
  examples the model is trained on, padding included;
- model TFLOP/s and MFU: flops/token * tokens/s, with flops/token = 6 N_mm +
  12 layers L D (see ``benchlib.lm_flops_per_token`` and experiments/README.md), over
  the peak ``--peak_tflops`` (default: the data-sheet dense peak of the device kind in
  the activation dtype; on CPU the measured rate of a ``jnp.dot``);
- XLA's own FLOP count of the compiled step (everything the method computes) and its
  rate, the compile time, XLA's memory analysis of the step, and the overhead of each
  method as a ratio of step times to ``base``.

    python experiments/bench_throughput.py --size tiny --steps 3            # CPU, seconds
    python experiments/bench_throughput.py --downsampling 16 --output experiments/results/
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  (puts the repo root on sys.path)

from adaptive_data import methods  # noqa: E402

# Every method that runs on its own, in registration order (base first: the other rows are
# reported as multiples of it).
DEFAULT_METHODS = methods.names(needs_other_runs=False)
COLUMNS = [
    ("method", "method", "s"),
    ("batch", "batch", "s"),
    ("synced_ms", "synced ms", ".4g"),
    ("pipelined_ms", "pipelined ms", ".4g"),
    ("tokens_per_s", "LM tokens/s", ",.0f"),
    ("model_tflops", "model TFLOP/s", ".3g"),
    ("mfu_pct", "MFU %", ".3g"),
    ("xla_tflop_per_step", "XLA TFLOP/step", ".3g"),
    ("xla_tflops", "XLA TFLOP/s", ".3g"),
    ("x_base", "x base (pipel.)", ".3g"),
    ("x_base_synced", "x base (synced)", ".3g"),
    ("compile_s", "compile s", ".3g"),
    ("xla_peak_mb", "XLA peak MiB", ".5g"),
    ("device_peak_mb", "dev peak MiB", ".5g"),
    ("note", "note", "s"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--size",
        default="paper",
        choices=["tiny", "small", "paper"],
        help="model size preset of configs/default.py",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="b (default 128 at size paper, else the config's train.batch_size)",
    )
    p.add_argument(
        "--target_batch_size",
        type=int,
        default=None,
        help="target batch of mixing and the outer updates (default b)",
    )
    p.add_argument(
        "--downsampling",
        type=int,
        default=8,
        help="k: big batch B = k * b of the selection methods",
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps, synced and pipelined each")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (the first compiles)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="activation dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)",
    )
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="methods to time, comma-separated (base is the reference)",
    )
    p.add_argument(
        "--chunk_size",
        type=int,
        default=None,
        help="config.align_filter.chunk_size (default: unchunked)",
    )
    p.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="hardware peak for MFU (default: data sheet of the device kind in "
        "--dtype; CPU or unknown kinds: the measured jnp.dot rate)",
    )
    p.add_argument(
        "--output", default="", help="directory (or path.json) for the JSON and Markdown table"
    )
    p.add_argument(
        "--time_budget_s",
        type=float,
        default=0.0,
        help="skip the remaining methods once this many seconds have passed",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def bench_method(name, args, *, b, dtype, flops_per_token):
    config = benchlib.make_config(
        name,
        size=args.size,
        batch_size=b,
        downsampling=args.downsampling,
        dtype=dtype,
        target_batch_size=args.target_batch_size,
        chunk_size=args.chunk_size,
    )
    step = benchlib.build_train_step(config, seed=args.seed)
    timing, _ = benchlib.time_train_step(
        step.compiled.fn,
        step.state,
        step.batches,
        warmup=args.warmup,
        repeats=args.steps,
        pipelined_steps=args.steps,
    )
    length = int(config.model.max_length)
    tokens = b * length
    synced = benchlib.median(timing.synced_s)
    pipelined = timing.pipelined_s
    xla_flops = step.compiled.xla_flops
    row = {
        "method": name,
        "b": b,
        "B": step.big_batch,
        "batch": f"b={b}" + (f", B={step.big_batch}" if step.big_batch != b else ""),
        "num_params": step.num_params,
        "synced_ms": 1e3 * synced,
        "synced_min_ms": 1e3 * min(timing.synced_s),
        "synced_all_ms": [1e3 * t for t in timing.synced_s],
        "pipelined_ms": 1e3 * pipelined,
        "tokens_per_s": tokens / pipelined,
        "tokens_per_s_synced": tokens / synced,
        "model_tflops": flops_per_token * tokens / pipelined / 1e12,
        "xla_tflop_per_step": None if xla_flops is None else xla_flops / 1e12,
        "xla_tflops": None if xla_flops is None else xla_flops / pipelined / 1e12,
        "lower_s": step.compiled.lower_s,
        "compile_s": step.compiled.compile_s,
        "xla_peak_mb": step.compiled.memory.get("peak_mb"),
        "memory_mb": step.compiled.memory,
        "device_peak_mb": benchlib.device_peak_mb(),
        "note": f"RECOMPILES at step 2: {timing.recompile}" if timing.recompile else "",
    }
    if args.chunk_size and "chunk_size" in config.get(methods.METHODS[name].block, {}):
        row["note"] = (row["note"] + "; " if row["note"] else "") + (
            f"chunk {args.chunk_size}: XLA FLOPs count one chunk"
        )
    return row


def main(argv=None):
    args = parse_args(argv)
    budget = benchlib.Budget(args.time_budget_s)
    info = benchlib.machine_info()
    benchlib.print_machine(info)
    dtype = benchlib.resolve_dtype(args.dtype)
    defaults = benchlib.load_config(f"size={args.size}")
    b = int(args.batch_size or (128 if args.size == "paper" else defaults.train.batch_size))
    m = defaults.model
    flops = benchlib.lm_flops_per_token(m)
    print(
        f"model: size {args.size}, {m.num_layers} layers, width {m.width}, MLP {m.mlp_dim}, "
        f"{m.num_heads} heads, max_length {m.max_length}, activations {dtype}; b={b}, "
        f"k={args.downsampling}, B={args.downsampling * b}; {args.steps} timed steps after "
        f"{args.warmup} warm-up"
    )
    print(
        f"model FLOPs/token (training) = 6 * N_mm + 12 * layers * L * D = "
        f"6 * {flops['n_matmul_params']:,.0f} + 12 * {m.num_layers} * {m.max_length} * "
        f"{m.width} = {flops['total'] / 1e6:.2f} MFLOP "
        f"(dense {flops['dense'] / 1e6:.2f}, attention {flops['attention'] / 1e6:.2f})"
    )

    measured = benchlib.measure_matmul_tflops(dtype)
    spec = benchlib.spec_peak_tflops(info["device_kind"], dtype)
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops, "--peak_tflops"
    elif spec is not None and info["backend"] != "cpu":
        peak, peak_source = spec, f"data sheet, {info['device_kind']} {dtype} dense"
    else:
        peak, peak_source = measured, f"measured jnp.dot rate in {dtype}"
    print(
        f"peak for MFU: {peak:.4g} TFLOP/s ({peak_source}); measured jnp.dot rate "
        f"{measured:.4g} TFLOP/s"
    )

    prefix = benchlib.output_prefix(
        args.output,
        f"bench_throughput_{args.size}_b{b}_k{args.downsampling}_{dtype}_{info['backend']}",
    )

    def report(rows, final):
        """Ratios, table, files; written after every method so a killed run keeps its rows."""
        base = next((r for r in rows if r["method"] == "base" and "pipelined_ms" in r), None)
        for row in rows:
            if "pipelined_ms" in row:
                row["mfu_pct"] = 100.0 * row["model_tflops"] / peak
                if base is not None:
                    row["x_base"] = row["pipelined_ms"] / base["pipelined_ms"]
                    row["x_base_synced"] = row["synced_ms"] / base["synced_ms"]
        text, md = benchlib.render_table(rows, COLUMNS)
        info["load_average_end"] = benchlib.load_average()
        info["host_peak_rss_mb"] = benchlib.host_peak_rss_mb()
        header = (
            f"# bench_throughput: size {args.size}, b={b}, k={args.downsampling}, {dtype}"
            f"{'' if final else ' (partial)'}\n\n"
            f"Machine: {info['device_count']} x {info['device_kind']} ({info['backend']}), "
            f"jax {info['jax']}, {info['cpu_count']} host CPUs, load average "
            f"{info['load_average']} -> {info['load_average_end']}. {args.steps} steps "
            f"synced (median) and pipelined (mean) after {args.warmup} warm-up steps.\n\n"
            f"Model FLOPs/token = 6 N_mm + 12 layers L D = {flops['total'] / 1e6:.2f} MFLOP; "
            f"peak {peak:.4g} TFLOP/s ({peak_source}); measured jnp.dot {measured:.4g} "
            f"TFLOP/s.\n\n"
        )
        payload = {
            "script": "bench_throughput",
            "complete": final,
            "args": vars(args),
            "machine": info,
            "model": m.to_dict(),
            "b": b,
            "k": args.downsampling,
            "dtype": dtype,
            "flops_per_token": flops,
            "peak_tflops": peak,
            "peak_source": peak_source,
            "measured_matmul_tflops": measured,
            "rows": rows,
        }
        benchlib.write_outputs(prefix, payload, header + md, quiet=not final)
        if final:
            print()
            print(text)
            print(
                f"\nload average at the end: {info['load_average_end']}; host peak RSS "
                f"{info['host_peak_rss_mb']:.0f} MiB; total {budget.elapsed():.0f} s"
            )
        return payload

    rows = []
    for name in benchlib.parse_list(args.methods, benchlib.ALL_METHODS):
        if budget.exhausted():
            rows.append({"method": name, "note": "skipped (time budget)"})
            print(f"  {name}: skipped (time budget)", flush=True)
            continue
        row = benchlib.run_guarded(
            name,
            lambda name=name: bench_method(
                name, args, b=b, dtype=dtype, flops_per_token=flops["total"]
            ),
        )
        row.setdefault("method", name)
        if "error" in row:
            row["note"] = "ERROR " + row["error"][:70] + " (see JSON)"
        rows.append(row)
        print(
            f"  {name}: synced {benchlib.fmt(row.get('synced_ms'))} ms, pipelined "
            f"{benchlib.fmt(row.get('pipelined_ms'))} ms, compile "
            f"{benchlib.fmt(row.get('compile_s'))} s  [{budget.elapsed():.0f} s]",
            flush=True,
        )
        report(rows, final=False)
    return report(rows, final=True)


if __name__ == "__main__":
    main()
