"""How many CPUs this process may use: the one count every thread pool and kernel sizes itself by.

A machine's CPU count is not what a process gets in a container, under a batch scheduler
or with ``taskset``: the affinity mask, a cgroup CPU quota and SLURM's
``SLURM_CPUS_PER_TASK`` each may say less, and more threads than that only queue (or
get throttled by the quota). No torch here.
"""

from __future__ import annotations

import functools
import math
import os

# Where the cgroup file systems are mounted, and where this process's cgroups are listed.
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"

# The cgroup v1 mount folders that may hold the ``cpu`` controller.
_V1_CPU_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@functools.cache
def usable_cpus() -> int:
    """The CPUs this process may keep busy: the least of its affinity mask, its cgroup CPU
    quota and ``SLURM_CPUS_PER_TASK`` (when set to a positive whole number); at least 1.

    Read once per process (cached; ``usable_cpus.cache_clear()`` reads again).
    """
    limits = [affinity_cpus()]
    quota = cgroup_cpu_limit()
    if quota is not None:
        limits.append(quota)
    slurm = slurm_cpus()
    if slurm is not None:
        limits.append(slurm)
    return max(1, min(limits))


def affinity_cpus() -> int:
    """The CPUs in this process's affinity mask (the CPU count where there is no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def slurm_cpus() -> int | None:
    """``SLURM_CPUS_PER_TASK`` when it is a positive whole number, else ``None``."""
    return _positive_int(os.environ.get("SLURM_CPUS_PER_TASK", ""))


def cgroup_cpu_limit() -> int | None:
    """The CPU quota of this process's cgroup and the cgroups above it, rounded up to whole
    CPUs; ``None`` when none sets one (or none can be read).

    cgroup v2: ``cpu.max`` holds ``"QUOTA PERIOD"`` or ``"max PERIOD"``; cgroup v1:
    ``cpu.cfs_quota_us`` (``-1``: no limit) over ``cpu.cfs_period_us``. A file that cannot
    be read or parsed sets no limit.
    """
    paths = _own_cgroups()
    limits: list[int] = []
    for folder in _with_ancestors(CGROUP_ROOT, paths.get("", "/")):
        limit = _v2_limit(os.path.join(folder, "cpu.max"))
        if limit is not None:
            limits.append(limit)
    v1_path = next((path for names, path in paths.items() if "cpu" in names.split(",")), "/")
    for mount in _V1_CPU_FOLDERS:
        for folder in _with_ancestors(os.path.join(CGROUP_ROOT, mount), v1_path):
            limit = _v1_limit(folder)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path by controller list (``""`` for the v2 hierarchy)."""
    try:
        with open(PROC_CGROUP, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[1]] = parts[2]
    return paths


def _with_ancestors(root: str, path: str) -> list[str]:
    """``root/path`` and each folder above it up to ``root`` (a quota anywhere above applies)."""
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    return [os.path.join(root, *parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limit(path: str) -> int | None:
    fields = _read(path).split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _cpus(fields[0], fields[1])


def _v1_limit(folder: str) -> int | None:
    quota = _read(os.path.join(folder, "cpu.cfs_quota_us")).strip()
    if not quota:
        return None
    return _cpus(quota, _read(os.path.join(folder, "cpu.cfs_period_us")).strip())


def _cpus(quota_text: str, period_text: str) -> int | None:
    """``ceil(quota / period)`` for positive whole numbers, else ``None`` (no limit)."""
    quota, period = _positive_int(quota_text), _positive_int(period_text)
    if quota is None or period is None:
        return None
    return max(1, math.ceil(quota / period))


def _positive_int(text: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return ""
