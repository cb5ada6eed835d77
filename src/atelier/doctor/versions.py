"""torch, CUDA, torch_npu and CANN versions: the combinations the guide pins.

CANN's version is read from the toolkit's own files (`ascend_toolkit_install.info`,
`version.cfg`, `compiler/version.info`) under ASCEND_TOOLKIT_HOME / ASCEND_HOME_PATH or the
default /usr/local/Ascend/ascend-toolkit/latest.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from atelier.doctor.findings import Report

DEFAULT_TOOLKIT = "/usr/local/Ascend/ascend-toolkit/latest"


def cann_version(environ: Mapping[str, str]) -> tuple[str | None, Path | None]:
    """(version, toolkit folder) of the CANN toolkit, (None, folder or None) if unknown."""
    homes = [environ.get("ASCEND_TOOLKIT_HOME"), environ.get("ASCEND_HOME_PATH"), DEFAULT_TOOLKIT]
    for home in (Path(h) for h in homes if h):
        if not home.is_dir():
            continue
        candidates = [
            *sorted(home.glob("*/ascend_toolkit_install.info")),
            home / "version.cfg",
            home / "compiler" / "version.info",
            home / "version.info",
        ]
        for f in candidates:
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            m = re.search(r"^\s*(?:version|Version)\s*=\s*\[?([\w.\-]+)", text, re.M)
            if m:
                return m.group(1), home
        return None, home
    return None, None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check(report: Report, environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    cann, home = cann_version(env)
    facts = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "torch_npu": _dist_version("torch_npu") or _dist_version("torch-npu"),
        "cann": cann,
        "cann_home": str(home) if home else None,
    }
    report.facts["versions"] = facts
    parts = [f"python {facts['python']}", f"torch {facts['torch']}"]
    parts.append(f"CUDA {facts['cuda']}" if facts["cuda"] else "torch without CUDA")
    if cudnn:
        parts.append(f"cuDNN {cudnn}")
    if facts["torch_npu"]:
        parts.append(f"torch_npu {facts['torch_npu']}")
    if cann:
        parts.append(f"CANN {cann} ({home})")
    report.add("versions", "ok", ", ".join(parts))
    if facts["torch_npu"]:
        base = torch.__version__.split("+")[0]
        if not facts["torch_npu"].startswith(base.rsplit(".", 1)[0]):
            report.add(
                "versions",
                "warn",
                f"torch_npu {facts['torch_npu']} is not built for torch {base}: install the "
                "torch_npu release with the same major.minor as torch",
            )
        if cann is None:
            report.add(
                "versions",
                "warn",
                "torch_npu is installed but no CANN toolkit was found: source "
                "/usr/local/Ascend/ascend-toolkit/set_env.sh (sets ASCEND_TOOLKIT_HOME)",
            )
