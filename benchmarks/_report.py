"""What every throughput benchmark records about the machine, and how it writes its result."""

from __future__ import annotations

import os
import platform
from typing import Any

import jax

from jaxmi.results import write_json


def machine_info() -> dict[str, Any]:
    """The device, host CPU, core count, load average and JAX version, for the result JSON."""
    dev = jax.devices()[0]
    return {"device": f"{dev.platform}: {dev.device_kind}", "host": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "jax": jax.__version__}


def write_result(out: str, result: dict[str, Any]) -> dict[str, Any]:
    """Writes ``result`` to ``out`` atomically, says so, and returns it."""
    write_json(out, result)
    print(f"wrote {out}")
    return result
