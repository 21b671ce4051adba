"""The machine a benchmark ran on, for its JSON: figures from two machines compare only when
their CPUs do too (a GPU check's loader figure depends on the host's cores as much as on the GPU).
"""
from __future__ import annotations

import os
import platform


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name as the kernel reports it ("model name"); `platform.processor()` where
    there is no such file. That one is empty on most Linux systems, hence the file first."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """`cpu_model()` with the number of cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()}, {cores} cores"
