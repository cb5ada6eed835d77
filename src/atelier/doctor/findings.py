"""What a check found: one line each, problems carrying their fix; the exit code rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "info", "warn", "fail"]


@dataclass
class Finding:
    check: str  # the group: accelerators, versions, network, shm, disk, container
    status: Status
    message: str  # for warn/fail: what is wrong and how to fix it, in one line

    def line(self) -> str:
        return f"{self.status.upper():4}  {self.check}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, check: str, status: Status, message: str) -> None:
        self.findings.append(Finding(check, status, message))

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.findings)

    @property
    def exit_code(self) -> int:
        """1 when any check failed; warnings alone exit 0."""
        return 1 if self.count("fail") else 0

    def lines(self) -> list[str]:
        tail = (
            f"doctor: {self.count('fail')} failed, {self.count('warn')} warnings "
            f"(exit {self.exit_code})"
        )
        return [f.line() for f in self.findings] + [tail]

    def as_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "failed": self.count("fail"),
            "warnings": self.count("warn"),
            "findings": [asdict(f) for f in self.findings],
            "facts": self.facts,
        }
