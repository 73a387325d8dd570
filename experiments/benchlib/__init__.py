"""Shared helpers of the scripts in experiments/, one module per concern:

- ``paths``: the repository root, put on ``sys.path`` (imported first);
- ``configs``: the default config set up for timing; the registry-derived method lists;
- ``data``: synthetic byte-LM batches and the synthetic domains;
- ``machine``: versions, devices, load average, device and host memory;
- ``compiled``: ahead-of-time compile with XLA's memory and FLOP counts; a method's
  training step compiled for timing;
- ``timing``: synced and pipelined timing loops; a script's wall-clock budget;
- ``flops``: model FLOPs per token and hardware peaks (MFU);
- ``output``: command-line lists, guarded rows, tables and JSON/Markdown files.

The scripts ``import benchlib`` and use the names below. Conventions of the timings and
memory numbers: experiments/README.md.
"""

# isort: off
from .paths import REPO_ROOT  # first: puts the repository root on sys.path

# isort: on
from .compiled import Compiled, build_train_step, check_fits, compile_fn, xla_flops
from .configs import (
    ALL_METHODS,
    SELECTION_METHODS,
    load_config,
    make_config,
    param_count,
    resolve_dtype,
)
from .data import DOMAINS, TARGET_DOMAIN, synthetic_batch
from .flops import lm_flops_per_token, measure_matmul_tflops, spec_peak_tflops
from .machine import device_peak_mb, host_peak_rss_mb, load_average, machine_info, print_machine
from .output import (
    fmt,
    output_prefix,
    parse_list,
    pass_fail,
    render_table,
    run_guarded,
    write_outputs,
)
from .timing import Budget, median, time_calls, time_train_step

__all__ = [
    "ALL_METHODS",
    "DOMAINS",
    "REPO_ROOT",
    "SELECTION_METHODS",
    "TARGET_DOMAIN",
    "Budget",
    "Compiled",
    "build_train_step",
    "check_fits",
    "compile_fn",
    "device_peak_mb",
    "fmt",
    "host_peak_rss_mb",
    "lm_flops_per_token",
    "load_average",
    "load_config",
    "machine_info",
    "make_config",
    "measure_matmul_tflops",
    "median",
    "output_prefix",
    "param_count",
    "parse_list",
    "pass_fail",
    "print_machine",
    "render_table",
    "resolve_dtype",
    "run_guarded",
    "spec_peak_tflops",
    "synthetic_batch",
    "time_calls",
    "time_train_step",
    "write_outputs",
    "xla_flops",
]
