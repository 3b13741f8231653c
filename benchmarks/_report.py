"""What every throughput benchmark records about the machine, and how it writes its result."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import jax

from jaxmi.results import atomic_write_text, write_json


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


def save_report(report: dict[str, Any], out_dir, stem: str, markdown) -> tuple[Path, Path]:
    """Writes ``report`` as ``<stem>.json`` and its table ``markdown(report)`` as ``<stem>.md`` into
    ``out_dir``, each atomically (a report saved after every part keeps what it measured)."""
    out_json, out_md = Path(out_dir) / f"{stem}.json", Path(out_dir) / f"{stem}.md"
    write_json(out_json, report)
    atomic_write_text(out_md, markdown(report))
    return out_json, out_md


def finish_report(report: dict[str, Any], out_dir, stem: str, markdown) -> dict[str, Any]:
    """Saves the report a last time, prints its table and where it went, and returns it."""
    out_json, out_md = save_report(report, out_dir, stem, markdown)
    print(markdown(report))
    print(f"wrote {out_json} and {out_md}")
    return report
