"""Shared helpers of the benchmarks in experiments/: configs, synthetic data, timing, memory.

Nothing here imports ``adaptive_data.train`` or ``adaptive_data.data.pipeline`` (they
import grain): the benchmarks build the model and the ``Method`` step directly, on
synthetic batches and a synthetic ``Corpus``, so they run on an image that has only
jax, flax, optax, numpy, absl and ml_collections.

Timing conventions (see experiments/README.md):

- every function is jitted, lowered and compiled ahead of time (``jit(f).lower(*args)
  .compile()``); ``lower_s`` is tracing + lowering, ``compile_s`` the XLA compile;
- "synced": ``repeats`` calls after ``warmup`` calls, each followed by
  ``jax.block_until_ready``; the median (and min) per call is reported;
- "pipelined" (training steps only): ``steps`` calls dispatched back to back, one
  ``block_until_ready`` at the end; the mean per step is reported;
- memory: XLA's compiled memory analysis (deterministic; argument, output, temp and
  alias bytes of the executable), plus the device allocator's peak where the backend
  reports one (GPU), which is a running peak of the whole process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from adaptive_data import config_args, methods, run_setup  # noqa: E402
from adaptive_data.data import tokenizer  # noqa: E402

# CPU donation is not always possible; the warning says nothing about speed.
warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")

# Every registered method that trains on its own (finetune, cds and rho need other runs'
# workdirs), and those of them that select.
ALL_METHODS = methods.names(needs_other_runs=False)
SELECTION_METHODS = methods.names(needs_other_runs=False, selecting=True)
# Synthetic corpus: two generic domains and the target (also present in the pool).
DOMAINS = ("generic_a", "generic_b", "target")
TARGET_DOMAIN = "target"
MB = 1024.0 * 1024.0


# ----------------------------------------------------------------------------- config


def load_config(arg: str = "") -> Any:
    """``configs/default.py:get_config(arg)``."""
    return config_args.load_config(REPO_ROOT / "configs" / "default.py", arg)


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 on accelerators, float32 on CPU; else the name unchanged."""
    if dtype == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return dtype


def make_config(
    method: str,
    *,
    size: str,
    batch_size: int,
    downsampling: int,
    dtype: str,
    target_batch_size: int | None = None,
    chunk_size: int | None = None,
):
    """The default config of ``method`` at ``size``, set up for benchmarking.

    The selection warm-up is 0 and the outer update runs every step, so that every
    timed step does the full work of the method (during warm-up the driver runs a
    separately compiled step without the scorer and the outer update).
    """
    config = load_config(f"method={method},size={size}")
    config.train.batch_size = int(batch_size)
    config.train.target_batch_size = int(target_batch_size or batch_size)
    config.train.steps = 100_000  # only shapes the learning-rate schedule
    config.train.warmup_steps = 10
    config.select.downsampling = int(downsampling)
    config.select.warmup_steps = 0
    config.outer.every = 1
    config.model.dtype = dtype
    if chunk_size is not None:
        config.align_filter.chunk_size = int(chunk_size)
    return config


def param_count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- data


def synthetic_batch(
    rng: np.random.Generator,
    n: int,
    max_length: int,
    *,
    domain: int | None = None,
    target_share: float = 0.1,
) -> dict[str, np.ndarray]:
    """``n`` byte-LM examples of random printable text with realistic padding.

    Document lengths (bytes) are log-normal with median 0.6 * max_length (so about a
    fifth of the examples fill the window, the rest are padded; about 63% of the
    target positions are real tokens), clipped to
    [1, 4 * max_length]; layout as ``tokenizer.lm_example`` (BOS, bytes, EOS, PAD).
    ``domain``: every example of this domain id; None: the synthetic pool (target with
    probability ``target_share``, else one of the generic domains).
    """
    lengths = np.exp(rng.normal(math.log(0.6 * max_length), 0.6, size=n))
    lengths = np.clip(lengths.astype(np.int64), 1, 4 * max_length)
    text = rng.integers(32, 127, size=(n, max_length + 1), dtype=np.int32)
    # seq = [BOS, bytes..., EOS, PAD...] (length max_length + 2); inputs = seq[:L],
    # targets = seq[1:L+1], and inputs end at the last byte (EOS is only a target).
    seq = np.full((n, max_length + 2), tokenizer.PAD_ID, np.int32)
    seq[:, 0] = tokenizer.BOS_ID
    positions = np.arange(1, max_length + 2)[None, :]
    seq[:, 1:] = np.where(positions <= lengths[:, None], text, tokenizer.PAD_ID)
    eos_at = lengths + 1
    rows = np.nonzero(eos_at < max_length + 2)[0]
    seq[rows, eos_at[rows]] = tokenizer.EOS_ID
    targets = seq[:, 1 : max_length + 1].copy()
    keep = np.arange(max_length)[None, :] <= lengths[:, None]
    inputs = np.where(keep, seq[:, :max_length], tokenizer.PAD_ID).astype(np.int32)
    mask = (targets != tokenizer.PAD_ID).astype(np.float32)
    num_bytes = np.sum(targets < 256, axis=1).astype(np.int32)
    if domain is None:
        target_id = DOMAINS.index(TARGET_DOMAIN)
        generic_ids = [i for i in range(len(DOMAINS)) if i != target_id]
        domains = np.where(
            rng.random(n) < target_share, target_id, rng.choice(generic_ids, size=n)
        ).astype(np.int32)
    else:
        domains = np.full((n,), domain, np.int32)
    return {
        "inputs": inputs,
        "targets": targets,
        "mask": mask,
        "num_bytes": num_bytes,
        "domain": domains,
    }


def method_batches(method: methods.Method, max_length: int, seed: int = 0):
    """Device batches for ``train_step``: one per stream, of the stream's batch size."""
    rng = np.random.default_rng(seed)
    out = {}
    for stream, (split, size) in method.streams.items():
        domain = DOMAINS.index(TARGET_DOMAIN) if split.startswith("target") else None
        out[stream] = jax.device_put(synthetic_batch(rng, size, max_length, domain=domain))
    return out


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    devices = jax.devices()
    info = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "host": platform.node(),
        "load_average": _loadavg(),
    }
    try:
        import flax
        import optax

        info["flax"], info["optax"] = flax.__version__, optax.__version__
    except Exception:  # pragma: no cover - only for the report
        pass
    return info


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"jax {info['jax']} (flax {info.get('flax')}, optax {info.get('optax')}), "
        f"backend {info['backend']}, {info['device_count']} x {info['device_kind']}"
    )
    print(f"devices: {info['devices']}")
    print(f"host CPUs: {info['cpu_count']}, load average (1/5/15 min): {info['load_average']}")


# ----------------------------------------------------------------------------- compile


@dataclasses.dataclass
class Compiled:
    fn: Any  # the jax.stages.Compiled executable
    lower_s: float
    compile_s: float
    memory: dict[str, float]
    xla_flops: float | None


def compile_fn(
    fn: Callable, args: Sequence[Any], *, donate_argnums=(), **static_kwargs
) -> Compiled:
    """jit (unless ``fn`` is jitted already) + lower + compile ahead of time, with
    ``static_kwargs`` bound; times each phase, reads memory and FLOPs."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn, donate_argnums=donate_argnums)
    t0 = time.perf_counter()
    lowered = jitted.lower(*args, **static_kwargs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return Compiled(compiled, t1 - t0, t2 - t1, memory_analysis(compiled), xla_flops(compiled))


def memory_analysis(compiled) -> dict[str, float]:
    """MiB of the executable's buffers from XLA's memory analysis ({} if unavailable).

    ``peak_mb`` = argument + output + temp - alias: everything the executable holds
    while it runs (temp is XLA's buffer assignment, reuse included; a buffer aliased to
    an input, e.g. a donated state, is counted once). XLA's own ``peak_memory_in_bytes``
    is kept as ``reported_peak`` (on CPU it does not include the temp buffers).
    """
    try:
        stats = compiled.memory_analysis()
    except Exception:  # backend without memory analysis
        return {}
    if stats is None:
        return {}
    out = {
        name: getattr(stats, f"{name}_size_in_bytes", 0) / MB
        for name in ("argument", "output", "temp", "alias", "generated_code")
    }
    out["reported_peak"] = (getattr(stats, "peak_memory_in_bytes", 0) or 0) / MB
    out["peak_mb"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def device_limit_mb() -> float | None:
    """The device allocator's capacity (MiB) where the backend reports it (GPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] / MB


def check_fits(compiled: Compiled, what: str) -> None:
    """Raises MemoryError before running an executable that XLA says cannot fit."""
    limit, need = device_limit_mb(), compiled.memory.get("peak_mb")
    if limit is not None and need is not None and need > limit:
        raise MemoryError(
            f"{what}: XLA needs {need:,.0f} MiB > device limit {limit:,.0f} MiB "
            "(use a smaller big batch, or chunking)"
        )


def xla_flops(compiled) -> float | None:
    """FLOPs of one call as XLA's cost analysis counts them (None if unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def device_peak_mb() -> float | None:
    """The device allocator's running peak (MiB), where the backend reports one (GPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / MB


def host_peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- timing


def time_calls(call: Callable[[], Any], *, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` synced calls of ``call()`` after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return times


def tree_signature(tree):
    """(treedef, [(shape, dtype, weak_type)]): what decides whether jit recompiles."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(tuple(x.shape), str(x.dtype), bool(jax.typeof(x).weak_type)) for x in leaves]


def signature_diff(before, after) -> str:
    """Human-readable difference of two ``tree_signature``s ('' if equal)."""
    if before[0] != after[0]:
        return "tree structure changed"
    diffs = [f"leaf {i}: {a} -> {b}" for i, (a, b) in enumerate(zip(before[1], after[1])) if a != b]
    return "; ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")


@dataclasses.dataclass
class StepTiming:
    synced_s: list[float]
    pipelined_s: float | None  # mean per step, or None if not measured
    recompile: str  # '' if the step's output state has its input's signature


def time_train_step(
    compiled, state, batches, *, warmup: int, repeats: int, pipelined_steps: int = 0
) -> tuple[StepTiming, Any]:
    """Times a donated ``step(state, batches) -> (state, metrics)``, threading the state.

    Also checks that the returned state has the signature of the input state (else the
    driver's ``jax.jit`` would compile the step a second time at step 2).
    """
    before = tree_signature(state)
    state, metrics = compiled(state, batches)
    jax.block_until_ready((state, metrics))
    recompile = signature_diff(before, tree_signature(state))
    for _ in range(max(warmup - 1, 0)):
        state, metrics = compiled(state, batches)
    jax.block_until_ready((state, metrics))
    synced = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batches)
        jax.block_until_ready((state, metrics))
        synced.append(time.perf_counter() - t0)
    pipelined = None
    if pipelined_steps > 0:
        t0 = time.perf_counter()
        for _ in range(pipelined_steps):
            state, metrics = compiled(state, batches)
        jax.block_until_ready((state, metrics))
        pipelined = (time.perf_counter() - t0) / pipelined_steps
    return StepTiming(synced, pipelined, recompile), state


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


# ----------------------------------------------------------------------------- methods


@dataclasses.dataclass
class TrainStep:
    """A method's jitted, compiled training step, ready to time."""

    method: methods.Method
    config: Any
    compiled: Compiled
    state: Any
    batches: dict[str, Any]
    num_params: int

    @property
    def big_batch(self) -> int:
        return int(self.method.streams["generic"][1])


def build_train_step(config, *, seed: int = 0) -> TrainStep:
    """The driver's step of ``config.method`` (``methods.jit_train_step``, state donated),
    compiled for the flags of step 1; single device, no mesh."""
    setup = run_setup.build(config, domains=DOMAINS, target_domain=TARGET_DOMAIN)
    method, state = setup.method, setup.initial_state()
    # Step 1 is after the selection warm-up (make_config sets it to 0): scoring and
    # selection on; the outer update on when outer.every divides 1.
    batches = method_batches(method, config.model.max_length, seed=seed + 1)
    compiled = compile_fn(methods.jit_train_step(method), (state, batches), **method.flags(1))
    check_fits(compiled, f"step of {config.method}")
    return TrainStep(method, config, compiled, state, batches, param_count(state.params))


def parse_list(text: str, valid: Sequence[str] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if valid is not None:
        bad = [t for t in items if t not in valid]
        if bad:
            raise SystemExit(f"unknown names {bad}; choose from {list(valid)}")
    return items


class Budget:
    """Wall-clock budget of a script: ``exhausted()`` once ``seconds`` have passed (0: never)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self) -> bool:
        return self.seconds > 0 and self.elapsed() > self.seconds


def run_guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or a row with the error (and the traceback on stderr) if it raises."""
    try:
        return fn()
    except Exception as e:  # keep going: one failing method must not lose the others
        traceback.print_exc()
        first_line = (str(e).splitlines() or [""])[0]
        return {"name": name, "error": f"{type(e).__name__}: {first_line}"[:300]}


# ----------------------------------------------------------------------------- FLOPs


def lm_flops_per_token(model_cfg, vocab_size: int = tokenizer.VOCAB_SIZE) -> dict[str, float]:
    """Training FLOPs per token of the TransformerLM (see experiments/README.md).

    Matmul weights N_mm = layers * (4 D^2 + 2 D F) + D V: per layer the Q, K, V and
    output projections (4 D^2) and the two MLP matrices (2 D F); plus the output
    projection onto the V byte logits (the shared embedding used as the LM head; the
    input lookup is a gather, no FLOPs). Biases, LayerNorm, GELU, softmax are ignored.
    Attention: per token and layer, QK^T and AV against L positions cost 2 * 2 L D in
    the forward pass (full L x L, as the implementation computes it before masking).
    Forward = 2 N_mm + 4 layers L D; training (forward + backward) = 3x forward:

        flops/token = 6 N_mm + 12 * layers * L * D.
    """
    layers, d, f, length = (
        model_cfg.num_layers,
        model_cfg.width,
        model_cfg.mlp_dim,
        model_cfg.max_length,
    )
    n_mm = layers * (4 * d * d + 2 * d * f) + d * vocab_size
    dense = 6.0 * n_mm
    attention = 12.0 * layers * length * d
    return {
        "n_matmul_params": float(n_mm),
        "dense": dense,
        "attention": attention,
        "total": dense + attention,
    }


# Dense (no sparsity) peak TFLOP/s per device kind and matmul dtype, from the vendors'
# data sheets (SXM parts). float32 matmuls on NVIDIA GPUs run as TF32 under JAX's
# default precision, so float32 maps to the TF32 tensor-core peak.
PEAK_TFLOPS = {
    "h200": {"bfloat16": 989.0, "float32": 494.0},
    "h100": {"bfloat16": 989.0, "float32": 494.0},
    "a100": {"bfloat16": 312.0, "float32": 156.0},
    "l4": {"bfloat16": 121.0, "float32": 60.0},
}


def spec_peak_tflops(device_kind: str, dtype: str) -> float | None:
    kind = device_kind.lower()
    for key, table in PEAK_TFLOPS.items():
        if key in kind:
            return table[dtype]
    return None


def measure_matmul_tflops(dtype: str, *, n: int | None = None, repeats: int = 5) -> float:
    """Measured rate (TFLOP/s) of an n x n x n ``jnp.dot`` in ``dtype`` on device 0."""
    if n is None:
        n = 1024 if jax.default_backend() == "cpu" else 8192
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(key_b, (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    times = time_calls(lambda: dot(a, b), warmup=2, repeats=repeats)
    return 2.0 * n**3 / median(times) / 1e12


# ----------------------------------------------------------------------------- output


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
