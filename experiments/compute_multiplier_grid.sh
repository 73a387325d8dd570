#!/usr/bin/env bash
# The scarce compute-multiplier grid in the background, one process per target task (the
# runs of a target are sequential, the targets independent), each restarted after an
# interruption (a run resumes from its checkpoint, a finished run is skipped).
#
#   experiments/compute_multiplier_grid.sh ROOT [TARGET...]   # default: russian computing manpages
#
# Logs: ROOT/logs/<target>.log. Tables: experiments/results/compute_multiplier/ (rewritten
# after every finished target and seed; also `compute_multiplier.py --report_only`). Before
# a session ends, keep what has finished in the repository (no checkpoints):
#   python experiments/compute_multiplier.py --preset scarce --workdir ROOT \
#       --archive experiments/results/compute_multiplier/runs
set -uo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: $0 ROOT [TARGET...]}"
shift
[ "$#" -gt 0 ] || set -- russian computing manpages
targets=("$@")
mkdir -p "$root/logs"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$root/xla_cache}"

run_target() {  # run_target TARGET: up to 5 attempts, stops on success
    local target="$1" attempt
    for attempt in 1 2 3 4 5; do
        echo "== $(date -u +%FT%TZ) attempt $attempt" >> "$root/logs/$target.log"
        if nice -n 5 python experiments/compute_multiplier.py --preset scarce \
            --workdir "$root" --tfds_data_dir "$root/tfds" --targets "$target" \
            >> "$root/logs/$target.log" 2>&1; then
            return 0
        fi
        sleep 30
    done
    return 1
}

first=1
for target in "${targets[@]}"; do
    [ "$first" -eq 1 ] || sleep 120  # the first prepares the shared TFDS dir alone
    first=0
    run_target "$target" &
done
wait
