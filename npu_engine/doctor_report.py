"""What `npu-engine doctor` says: one `Finding` per thing checked, gathered in a `Report`."""

import json
from dataclasses import asdict, dataclass
from typing import Literal

Area = Literal["install", "devices", "store", "ollama"]
Severity = Literal["ok", "note", "fix"]


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found: `fix` is the command (or step) that fixes it, when there is one.
    A `note` is worth knowing and needs no fixing (no NPU on this machine, no Ollama server)."""

    area: Area
    severity: Severity
    message: str
    fix: str | None = None

    def line(self, arrow: str = "→") -> str:
        suffix = f" {arrow} {self.fix}" if self.fix else ""
        return f"{self.severity:<4} {self.area:<8} {self.message}{suffix}"


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)

    @property
    def needs_fixing(self) -> bool:
        return self.count("fix") > 0

    def summary(self) -> str:
        notes = self.count("note")
        counts = f"{self.count('ok')} ok, {notes} note{'' if notes == 1 else 's'}"
        fixes = self.count("fix")
        if not fixes:
            return f"nothing to fix ({counts})"
        return f"{fixes} thing{'' if fixes == 1 else 's'} to fix ({counts})"

    def to_json(self) -> str:
        return json.dumps(
            {
                "findings": [asdict(finding) for finding in self.findings],
                "fix": self.count("fix"),
                "note": self.count("note"),
                "ok": self.count("ok"),
            },
            indent=2,
        )
