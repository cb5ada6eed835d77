"""Every check group in order, into one Report (the CLI prints it or dumps its JSON)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from atelier.doctor import accelerators, network, system, versions
from atelier.doctor.findings import Report


def run_all(
    paths: list[Path] | None = None,
    min_free_gib: float = 20.0,
    environ: Mapping[str, str] | None = None,
) -> Report:
    env = os.environ if environ is None else environ
    report = Report()
    accelerators.check(report)
    versions.check(report, env)
    seen = report.facts["accelerators"]["torch"]
    backend = "nccl" if seen["cuda"] else "hccl" if seen["npu"] else "gloo"
    network.check(report, env, backend=backend)
    system.check_shm(report)
    system.check_disks(report, paths or [Path.cwd()], min_free_gib)
    system.check_container(report)
    return report
