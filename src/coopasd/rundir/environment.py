"""What a run ran on: package versions and the host's CPU, read without importing torch or Flower."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import coopasd

PACKAGES = (
    "torch",
    "flwr",
    "numpy",
    "scikit-learn",
    "matplotlib",
)  # besides coopasd and python: the versions a result depends on most


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """coopasd, python and :data:`PACKAGES` -> version strings (from package metadata)."""
    return {"coopasd": coopasd.__version__, "python": platform.python_version()} | {p: _version(p) for p in PACKAGES}


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host() -> dict[str, str | int | None]:
    """The host's operating system, architecture, CPU model and core count (no host name)."""
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count()}


def version_text() -> str:
    """One line for ``coopasd --version``."""
    v = versions()
    where = Path(coopasd.__file__).parent
    return f"coopasd {v['coopasd']} (torch {v['torch']}, flwr {v['flwr']}, python {v['python']}) at {where}"
