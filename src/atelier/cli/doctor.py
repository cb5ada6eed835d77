"""`atelier doctor`: the machine checks the guide has users do by hand, in one command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from atelier.core.flags import POSITIVE_FLOAT


def register(suites: argparse._SubParsersAction) -> None:
    p = suites.add_parser(
        "doctor",
        help="check accelerators, versions, network interfaces, /dev/shm, disk (exit 1 on a "
        "failed check)",
        description="Accelerators (torch, nvidia-smi, npu-smi), torch/CUDA/CANN versions, "
        "network interfaces and the *_SOCKET_IFNAME variables, /dev/shm, net.ipv4.ip_forward, "
        "free disk, container. Reads this machine only; sends no traffic. Exit 1 when a check "
        "fails (warnings alone exit 0). See docs/doctor.md.",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--path",
        type=Path,
        action="append",
        default=None,
        help="check free disk here (repeatable; default: the current folder)",
    )
    p.add_argument(
        "--min-free-gb",
        type=POSITIVE_FLOAT,
        default=20.0,
        help="warn below this many GiB free at each --path (default 20)",
    )
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from atelier.doctor.checks import run_all

    report = run_all(paths=args.path, min_free_gib=args.min_free_gb)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return report.exit_code
