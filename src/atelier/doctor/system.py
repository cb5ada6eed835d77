"""/dev/shm size, free disk at the paths a run writes to, and whether this is a container."""

from __future__ import annotations

import os
from pathlib import Path

from atelier.doctor.findings import Report

GiB = 1 << 30
SHM_WARN_BYTES = 8 * GiB


def container_kind(root: Path = Path("/")) -> str | None:
    """docker, podman, kubernetes, containerd, lxc, or None (not in a container we know)."""
    if (root / ".dockerenv").exists():
        return "docker"
    if (root / "run" / ".containerenv").exists():
        return "podman"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    try:
        cgroup = (root / "proc" / "1" / "cgroup").read_text()
    except OSError:
        return None
    for marker, kind in (
        ("kubepods", "kubernetes"),
        ("docker", "docker"),
        ("containerd", "containerd"),
        ("lxc", "lxc"),
    ):
        if marker in cgroup:
            return kind
    return None


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / (1 << 20):.0f} MiB"


def check_shm(report: Report, path: Path = Path("/dev/shm")) -> None:
    try:
        st = os.statvfs(path)
    except OSError:
        report.add("shm", "info", f"{path}: absent (not Linux?)")
        return
    size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    report.facts["shm"] = {"path": str(path), "size_bytes": size, "free_bytes": free}
    if size < SHM_WARN_BYTES:
        report.add(
            "shm",
            "warn",
            f"{path} is {_gib(size)} ({_gib(free)} free): DataLoader workers pass batches "
            "through it and die with 'bus error' when it fills; start the container with "
            "docker run --shm-size=16g (or --ipc=host)",
        )
    else:
        report.add("shm", "ok", f"{path} is {_gib(size)} ({_gib(free)} free)")


def check_disks(report: Report, paths: list[Path], min_free_gib: float) -> None:
    facts = []
    for given in paths:
        path = given.expanduser()
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent  # a folder a run will create: its nearest existing parent
        try:
            st = os.statvfs(probe)
        except OSError as e:
            report.add("disk", "fail", f"{given}: cannot be inspected ({e.strerror})")
            continue
        free = st.f_bavail * st.f_frsize
        facts.append({"path": str(given), "checked": str(probe), "free_bytes": free})
        where = str(given) if probe == path else f"{given} (not there yet; {probe})"
        writable = os.access(probe, os.W_OK)
        if not writable:
            report.add(
                "disk", "fail", f"{where}: not writable by this user; choose a folder you own"
            )
        elif free < GiB:
            report.add(
                "disk", "fail", f"{where}: only {_gib(free)} free; free space or use another disk"
            )
        elif free < min_free_gib * GiB:
            report.add(
                "disk",
                "warn",
                f"{where}: {_gib(free)} free, below {min_free_gib:g} GiB; checkpoints may not fit",
            )
        else:
            report.add("disk", "ok", f"{where}: {_gib(free)} free")
    report.facts["disks"] = facts


def check_container(report: Report) -> None:
    kind = container_kind()
    report.facts["container"] = kind
    if kind:
        report.add("container", "info", f"running in a container ({kind})")
    else:
        report.add("container", "info", "not in a container")
