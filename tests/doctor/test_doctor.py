"""`atelier doctor` on this machine, and with fake `nvidia-smi` / `npu-smi` on PATH.

The fakes print what the real tools print (an 8 x 910B3 `npu-smi info` table, an 8-GPU
`nvidia-smi --query-gpu ... --format=csv,noheader,nounits`), so the parsing is proved on the
real formats; torch here is a CPU build, so both mismatches must fail (exit 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.doctor.accelerators import parse_npu_smi_info, parse_nvidia_smi_csv
from atelier.doctor.versions import cann_version

DATA = Path(__file__).parent / "data"
NVIDIA_CSV = (DATA / "nvidia-smi-8xH100.csv").read_text()


def npu_smi_info(health: dict[int, str] | None = None) -> str:
    """`npu-smi info` of an Atlas 800T A2 (8 x 910B3, 64 GB HBM, NPU 5 busy), driver 23.0.6;
    `health` replaces the Health cell of the NPUs it names."""
    lines = (DATA / "npu-smi-info-8x910B3.txt").read_text().splitlines(keepends=True)
    for npu, state in (health or {}).items():
        row = f"| {npu:<5} 910B3               | "
        lines = [x.replace(row + f"{'OK':<13}", row + f"{state:<13}", 1) for x in lines]
    return "".join(lines)


def test_npu_smi_table_is_parsed() -> None:
    devices, version = parse_npu_smi_info(npu_smi_info({3: "Warning"}))
    assert version == "23.0.6" and len(devices) == 8
    assert [d.index for d in devices] == list(range(8))
    assert {d.name for d in devices} == {"910B3"} and {d.memory_total_mb for d in devices} == {
        65536
    }
    assert devices[5].memory_used_mb == 61012 and devices[0].memory_used_mb == 3339
    assert devices[1].bus_id == "0000:C2:00.0" and devices[3].health == "Warning"


def test_nvidia_smi_csv_is_parsed() -> None:
    devices, driver = parse_nvidia_smi_csv(NVIDIA_CSV)
    assert driver == "535.129.03" and len(devices) == 8
    assert devices[3].memory_used_mb == 70217 and devices[7].bus_id == "00000000:DB:00.0"
    assert {d.memory_total_mb for d in devices} == {81559}


def _fake_tools(folder: Path, npu_table: str | None = None, nvidia: str | None = None) -> None:
    folder.mkdir(exist_ok=True)
    if npu_table is not None:
        (folder / "npu-smi.out").write_text(npu_table)
        script = folder / "npu-smi"
        script.write_text(f'#!/bin/sh\n[ "$1" = info ] || exit 3\ncat "{folder}/npu-smi.out"\n')
        script.chmod(0o755)
    if nvidia is not None:
        (folder / "nvidia-smi.out").write_text(nvidia)
        script = folder / "nvidia-smi"
        script.write_text(
            "#!/bin/sh\n"
            'case "$*" in *--query-gpu=*--format=csv,noheader,nounits*) ;; *) exit 4;; esac\n'
            f'cat "{folder}/nvidia-smi.out"\n'
        )
        script.chmod(0o755)


def _doctor(*argv: str, path_prefix: Path | None = None, **env: str):
    base = {k: v for k, v in os.environ.items() if not k.endswith("_SOCKET_IFNAME")}
    base.pop("MASTER_ADDR", None)
    if path_prefix is not None:
        base["PATH"] = f"{path_prefix}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "atelier", "doctor", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **env},
    )


def test_this_machine_runs_reports_no_accelerator_and_exit_follows_checks(
    tmp_path: Path,
) -> None:
    r = _doctor("--path", str(tmp_path), "--min-free-gb", "0.001")
    lines = r.stdout.strip().splitlines()
    assert any(x.startswith("INFO  accelerators: no accelerator") for x in lines), r.stdout
    assert any(x.startswith("OK    network: interfaces: lo 127.0.0.1") for x in lines)
    assert any(x.startswith("OK    versions: python ") for x in lines)
    fails = [x for x in lines if x.startswith("FAIL")]
    assert r.returncode == (1 if fails else 0), r.stdout
    assert lines[-1] == f"doctor: {len(fails)} failed, " + lines[-1].split("failed, ")[1]


def test_bad_socket_ifname_fails_with_the_fix_and_json_agrees(tmp_path: Path) -> None:
    args = ("--path", str(tmp_path), "--min-free-gb", "0.001")
    r = _doctor(*args, GLOO_SOCKET_IFNAME="nosuchnic9")
    assert r.returncode == 1
    [fail] = [x for x in r.stdout.splitlines() if x.startswith("FAIL")]
    assert fail.startswith("FAIL  network: GLOO_SOCKET_IFNAME=nosuchnic9: no such interface; ")
    assert "export GLOO_SOCKET_IFNAME=" in fail
    j = _doctor(*args, "--json", GLOO_SOCKET_IFNAME="nosuchnic9")
    assert j.returncode == 1
    data = json.loads(j.stdout)
    assert data["exit_code"] == 1 and data["failed"] == 1
    text = [x for x in r.stdout.splitlines() if not x.startswith("doctor:")]
    as_lines = [f"{f['status'].upper():4}  {f['check']}: {f['message']}" for f in data["findings"]]
    # free space moves between the two runs (other processes write): compare those by kind
    steady = [not x.startswith(("OK    disk", "OK    shm", "WARN  shm")) for x in text]
    assert len(as_lines) == len(text)
    assert [a for a, k in zip(as_lines, steady, strict=True) if k] == [
        t for t, k in zip(text, steady, strict=True) if k
    ]
    assert [a[:10] for a in as_lines] == [t[:10] for t in text]
    names = [i["name"] for i in data["facts"]["network"]["interfaces"]]
    assert "lo" in names and data["facts"]["network"]["socket_ifname"] == {
        "GLOO_SOCKET_IFNAME": "nosuchnic9"
    }


def test_fake_npu_smi_and_nvidia_smi_are_parsed_and_mismatches_fail(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_tools(bin_dir, npu_table=npu_smi_info({6: "Alarm"}), nvidia=NVIDIA_CSV)
    r = _doctor("--json", "--path", str(tmp_path), "--min-free-gb", "0.001", path_prefix=bin_dir)
    data = json.loads(r.stdout)
    acc = data["facts"]["accelerators"]
    assert acc["npu_smi"]["driver"] == "23.0.6" and len(acc["npu_smi"]["devices"]) == 8
    assert acc["nvidia_smi"]["driver"] == "535.129.03" and len(acc["nvidia_smi"]["devices"]) == 8
    messages = {f["message"]: f["status"] for f in data["findings"]}
    assert messages["npu-smi: 8 x 910B3, 65536 MiB each, driver 23.0.6"] == "ok"
    assert (
        messages["nvidia-smi: 8 x NVIDIA H100 80GB HBM3, 81559 MiB each, driver 535.129.03"] == "ok"
    )
    fails = [m for m, s in messages.items() if s == "fail"]
    assert any(
        m.startswith("nvidia-smi lists 8 GPUs but torch sees none: this torch") for m in fails
    )
    assert any(m.startswith("npu-smi lists 8 NPUs but torch_npu is not installed") for m in fails)
    assert any(m.startswith("NPU 6 health is Alarm") for m in fails)
    assert r.returncode == 1 and data["exit_code"] == 1


def test_broken_driver_tool_is_one_failing_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate with the "
        "NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.'\n"
        "exit 9\n"
    )
    script.chmod(0o755)
    r = _doctor("--path", str(tmp_path), "--min-free-gb", "0.001", path_prefix=bin_dir)
    [fail] = [x for x in r.stdout.splitlines() if x.startswith("FAIL")]
    assert "nvidia-smi failed (NVIDIA-SMI has failed" in fail and "--gpus all" in fail
    assert r.returncode == 1


@pytest.mark.parametrize(
    "files,version",
    [
        (
            {
                "aarch64-linux/ascend_toolkit_install.info": "package_name=Ascend-cann-toolkit\n"
                "version=8.0.RC2\ninnerversion=V100R001C18SPC001\narch=aarch64\n"
            },
            "8.0.RC2",
        ),
        ({"compiler/version.info": "Version=7.0.0\nversion_dir=7.0.0\n"}, "7.0.0"),
    ],
)
def test_cann_version_from_the_toolkit_files(tmp_path: Path, files, version) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cann_version({"ASCEND_TOOLKIT_HOME": str(tmp_path)}) == (version, tmp_path)
