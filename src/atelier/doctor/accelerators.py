"""GPUs and NPUs: what torch sees, and what `nvidia-smi` / `npu-smi info` report.

The classic mismatch is a machine whose driver tool lists 8 devices while torch sees none
(a CPU build of torch, torch_npu missing, a container started without the devices); each
such case is one failing line naming the fix.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from atelier.doctor.findings import Report

NVIDIA_QUERY = "index,name,memory.total,memory.used,driver_version,pci.bus_id"


@dataclass
class Device:
    index: int
    name: str
    memory_total_mb: int | None
    memory_used_mb: int | None
    bus_id: str | None = None
    health: str | None = None


def parse_nvidia_smi_csv(text: str) -> tuple[list[Device], str | None]:
    """`nvidia-smi --query-gpu=NVIDIA_QUERY --format=csv,noheader,nounits` -> devices, driver."""
    devices, driver = [], None
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 5 or not cells[0].isdigit():
            continue  # a header line, if the tool printed one
        devices.append(
            Device(
                index=int(cells[0]),
                name=cells[1],
                memory_total_mb=_int(cells[2]),
                memory_used_mb=_int(cells[3]),
                bus_id=cells[5] if len(cells) > 5 else None,
            )
        )
        driver = driver or cells[4]
    return devices, driver


def _int(text: str) -> int | None:
    m = re.match(r"\s*(\d+)", text)
    return int(m.group(1)) if m else None


_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+(\S+)\s*\|\s*(\w[\w ]*?)\s*\|")
_CHIP_ROW = re.compile(
    r"^\|\s*(\d+)\s*\|\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f.]+)\s*\|(.*)\|"
)


def parse_npu_smi_info(text: str) -> tuple[list[Device], str | None]:
    """`npu-smi info`: one `NPU Name | Health | ...` row per device, then its chip row with
    `Bus-Id | AICore(%) Memory-Usage(MB) HBM-Usage(MB)` (used / total); the process table
    after the devices is ignored. The first line carries the driver version."""
    devices: list[Device] = []
    version = None
    m = re.search(r"Version:\s*(\S+)", text)
    if m:
        version = m.group(1)
    pending: Device | None = None
    for line in text.splitlines():
        if "Process id" in line:  # the process table follows
            break
        row = _NPU_ROW.match(line)
        chip = _CHIP_ROW.match(line)
        if chip and pending is not None:
            pairs = re.findall(r"(\d+)\s*/\s*(\d+)", chip.group(3))
            if pairs:  # the last used/total pair is HBM (the one before: DDR memory)
                pending.memory_used_mb, pending.memory_total_mb = map(int, pairs[-1])
            pending.bus_id = chip.group(2)
            devices.append(pending)
            pending = None
        elif row and not chip:
            pending = Device(int(row.group(1)), row.group(2), None, None, health=row.group(3))
    return devices, version


def _run(argv: list[str]) -> tuple[int, str, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, "", str(e)
    return r.returncode, r.stdout, r.stderr


def _first_line(text: str) -> str:
    return next((x.strip() for x in text.splitlines() if x.strip()), "no output")


def _torch_view() -> dict[str, Any]:
    import importlib.util

    import torch

    view: dict[str, Any] = {"cuda_available": bool(torch.cuda.is_available()), "cuda": []}
    if view["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            view["cuda"].append({"index": i, "name": p.name, "memory_mb": p.total_memory >> 20})
    view["torch_npu_installed"] = importlib.util.find_spec("torch_npu") is not None
    view["npu"] = []
    if view["torch_npu_installed"]:
        try:
            import torch_npu  # noqa: F401  (registers torch.npu)

            if torch.npu.is_available():
                view["npu"] = [
                    {"index": i, "name": torch.npu.get_device_name(i)}
                    for i in range(torch.npu.device_count())
                ]
        except Exception as e:  # a broken CANN install fails inside the import
            view["torch_npu_error"] = _first_line(str(e))
    return view


def check(report: Report) -> None:
    facts: dict[str, Any] = {"torch": _torch_view()}
    report.facts["accelerators"] = facts
    seen = facts["torch"]
    for d in seen["cuda"]:
        report.add(
            "accelerators", "ok", f"torch sees cuda:{d['index']} {d['name']}, {d['memory_mb']} MiB"
        )
    for d in seen["npu"]:
        report.add("accelerators", "ok", f"torch sees npu:{d['index']} {d['name']}")
    if "torch_npu_error" in seen:
        report.add(
            "accelerators",
            "fail",
            f"import torch_npu failed ({seen['torch_npu_error']}); source "
            "/usr/local/Ascend/ascend-toolkit/set_env.sh and install the torch_npu release "
            "matching this torch and CANN",
        )
    _nvidia(report, facts, len(seen["cuda"]))
    _ascend(report, facts, seen)
    if (
        not seen["cuda"]
        and not seen["npu"]
        and "nvidia_smi" not in facts
        and "npu_smi" not in facts
    ):
        report.add(
            "accelerators",
            "info",
            "no accelerator: no CUDA or NPU device and no nvidia-smi / npu-smi; runs use the CPU",
        )


def _summary(devices: list[Device]) -> str:
    names = sorted({d.name for d in devices})
    mem = {d.memory_total_mb for d in devices if d.memory_total_mb}
    each = f", {mem.pop()} MiB each" if len(mem) == 1 else ""
    return f"{len(devices)} x {'/'.join(names)}{each}"


def _query(
    report: Report, facts: dict[str, Any], tool: str, argv: list[str], parse, fix: str
) -> list[Device]:
    """Run a vendor tool, record its devices and driver under facts[tool], one line each way."""
    path = shutil.which(tool)
    if path is None:
        return []
    key, what = tool.replace("-", "_"), " ".join([tool, *argv][: 2 if argv == ["info"] else 1])
    rc, out, err = _run([path, *argv])
    if rc != 0:
        report.add("accelerators", "fail", f"{what} failed ({_first_line(err or out)}): {fix}")
        facts[key] = {"error": _first_line(err or out)}
        return []
    devices, driver = parse(out)
    facts[key] = {"driver": driver, "devices": [asdict(d) for d in devices]}
    if devices:
        report.add("accelerators", "ok", f"{tool}: {_summary(devices)}, driver {driver}")
    else:
        report.add("accelerators", "warn", f"{what} lists no device")
    return devices


def _nvidia(report: Report, facts: dict[str, Any], torch_count: int) -> None:
    devices = _query(
        report,
        facts,
        "nvidia-smi",
        [f"--query-gpu={NVIDIA_QUERY}", "--format=csv,noheader,nounits"],
        parse_nvidia_smi_csv,
        "the NVIDIA driver is not loaded or the container was started without GPUs "
        "(docker run --gpus all)",
    )
    if not devices:
        return
    if torch_count == 0:
        import torch

        why = (
            f"this torch {torch.__version__} is a CPU build: install the CUDA build of torch"
            if torch.version.cuda is None
            else "check CUDA_VISIBLE_DEVICES and that the driver supports CUDA "
            f"{torch.version.cuda}"
        )
        report.add(
            "accelerators",
            "fail",
            f"nvidia-smi lists {len(devices)} GPUs but torch sees none: {why}",
        )
    elif torch_count != len(devices):
        report.add(
            "accelerators",
            "warn",
            f"torch sees {torch_count} of the {len(devices)} GPUs nvidia-smi lists "
            "(CUDA_VISIBLE_DEVICES?)",
        )


def _ascend(report: Report, facts: dict[str, Any], seen: dict[str, Any]) -> None:
    devices = _query(
        report,
        facts,
        "npu-smi",
        ["info"],
        parse_npu_smi_info,
        "the Ascend driver is not loaded, or the container lacks --device=/dev/davinciN, "
        "/dev/davinci_manager, /dev/hisi_hdc",
    )
    if not devices:
        return
    for d in devices:
        if d.health and d.health != "OK":
            report.add(
                "accelerators",
                "fail",
                f"NPU {d.index} health is {d.health}: see npu-smi info -t health -i {d.index}",
            )
    if not seen["torch_npu_installed"]:
        report.add(
            "accelerators",
            "fail",
            f"npu-smi lists {len(devices)} NPUs but torch_npu is not installed: pip install the "
            "torch_npu release matching this torch",
        )
    elif not seen["npu"] and "torch_npu_error" not in seen:
        report.add(
            "accelerators",
            "fail",
            f"npu-smi lists {len(devices)} NPUs but torch_npu sees none: check "
            "ASCEND_RT_VISIBLE_DEVICES and source /usr/local/Ascend/ascend-toolkit/set_env.sh",
        )
