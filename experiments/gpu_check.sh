#!/usr/bin/env bash
# One-GPU check of the benchmarks, within 8 minutes in total:
#   1. bench_alignment.py at the default model (size small, b=32, k=8 -> B=256);
#   2. bench_throughput.py at the paper size (12 layers, width 256, b=128, bf16) with a
#      modest big batch (k=16 -> B=2048), methods in order of importance (align_filter
#      with align_filter.chunk_size=128: unchunked, its step needs far more memory than the
#      jvp alone, see experiments/README.md; l2rw has no chunking and goes last).
# Each script has a time budget (it skips what is left once it is spent) and a hard
# `timeout`, and rewrites its JSON/Markdown after every method, so a cut-off run keeps its
# rows. A step that XLA says cannot fit in GPU memory is reported as an error, not run.
# Outputs (logs, JSON, Markdown) go to $OUT if set (the device tool's folder), else to
# experiments/results/. Run from anywhere: bash experiments/gpu_check.sh
#
# Packages: the GPU image has jax, flax, optax, orbax, numpy and absl, but not
# ml_collections (needed by configs/default.py; pure Python, needs absl-py and PyYAML,
# both on the image). The benchmarks import neither grain nor tensorflow_datasets. The
# lead carries wheels as /work/.library/device/README.md describes: here, in the repo root,
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0
# and the device call names `.whl` in `carry`. This script installs every wheel found in
# wheels/ or .whl/ with `pip install --no-index` into /tmp/site (on PYTHONPATH) first.
#
# Knobs (environment): PYTHON (default python3), ALIGN_BUDGET_S / ALIGN_TIMEOUT_S,
# THROUGHPUT_BUDGET_S / THROUGHPUT_TIMEOUT_S, DOWNSAMPLING (default 16), STEPS (default 20),
# ALIGN_ARGS / THROUGHPUT_ARGS (extra flags appended, the last value of a flag wins; e.g.
# a CPU smoke test: ALIGN_ARGS="--size tiny --repeats 1" THROUGHPUT_ARGS="--size tiny").

set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
RESULTS="${OUT:-experiments/results}"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
START=$(date +%s)

echo "=== nvidia-smi"
nvidia-smi || echo "(no nvidia-smi)"

for dir in wheels .whl; do
  if compgen -G "$dir/*.whl" > /dev/null; then
    echo "=== installing wheels from $dir/"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site --find-links "$dir" "$dir"/*.whl \
      && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
done

echo "=== python, jax, devices"
"$PY" - <<'EOF' || { echo "jax/flax/optax/ml_collections missing; see the top of this script"; exit 2; }
import os, sys
import jax, flax, optax, ml_collections  # noqa: F401
print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__,
      "optax", optax.__version__, "ml_collections", getattr(ml_collections, "__version__", "?"))
print("devices:", jax.devices(), "| host CPUs:", os.cpu_count())
EOF

echo "=== bench_alignment (size small, default b and k)"
timeout "${ALIGN_TIMEOUT_S:-170}" "$PY" experiments/bench_alignment.py \
  --size small --repeats 20 --warmup 3 --dtype float32 \
  --time_budget_s "${ALIGN_BUDGET_S:-110}" --output "$RESULTS" ${ALIGN_ARGS:-} 2>&1 \
  | tee "$RESULTS/bench_alignment.log"
echo "bench_alignment exit status ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"

echo "=== bench_throughput (size paper, b=128, bf16)"
timeout "${THROUGHPUT_TIMEOUT_S:-270}" "$PY" experiments/bench_throughput.py \
  --size paper --batch_size 128 --downsampling "${DOWNSAMPLING:-16}" --dtype bfloat16 \
  --steps "${STEPS:-20}" --warmup 3 --chunk_size 128 \
  --methods base,anograd,dds,soba,align_filter,mixing,domain_mixture,l2rw \
  --time_budget_s "${THROUGHPUT_BUDGET_S:-200}" --output "$RESULTS" ${THROUGHPUT_ARGS:-} 2>&1 \
  | tee "$RESULTS/bench_throughput.log"
echo "bench_throughput exit status ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"

echo "=== files in $RESULTS"
ls -l "$RESULTS"
