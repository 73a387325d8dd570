"""The machine a benchmark ran on: versions, devices, load, and memory of device and host.

The device allocator's peak (``device_peak_mb``, GPU only) is a running peak of the
whole process, so it never decreases down a table.
"""

from __future__ import annotations

import os
import platform
import resource
from typing import Any

import jax

MB = 1024.0 * 1024.0


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
        "load_average": load_average(),
    }
    try:
        import flax
        import optax

        info["flax"], info["optax"] = flax.__version__, optax.__version__
    except Exception:  # pragma: no cover - only for the report
        pass
    return info


def load_average():
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


def device_limit_mb() -> float | None:
    """The device allocator's capacity (MiB) where the backend reports it (GPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] / MB


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
