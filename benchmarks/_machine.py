"""Describe the machine a benchmark ran on, as a short Markdown list.

Shared by the scripts under ``benchmarks/``: ``describe()`` goes at the end of every
``reports/bench/*.md`` so that a number is never read without its hardware, library versions and
how busy the machine was. Versions come from package metadata, so nothing heavy is imported here.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata

__all__ = ["describe", "load_average"]

_PACKAGES = ("spectra-hts", "torch", "numpy", "scipy", "safetensors", "weightwatcher", "powerlaw")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.02 / 0.85 / 0.60"`` (``"n/a"`` if unknown)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def describe() -> str:
    """Markdown bullet list: CPU model, cores, RAM, OS, Python and package versions, UTC date, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    lines = [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores ({usable} usable by this process)",
        f"- RAM: {_ram_gib()}; OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"load average (1/5/15 min): {load_average()}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
