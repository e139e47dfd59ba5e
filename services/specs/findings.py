"""Findings: what validation tells a user about a Score file.

Every finding has a stable code. Codes are grouped by who emits them:
SCORE-10xx parsing and schema (validation.py), SCORE-11xx semantic checks (checks.py),
SCORE-12xx placeholders and rendering (render.py), SCORE-20xx warnings about risky but
valid workloads. Never renumber or reuse a code: users grep for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ERROR, WARNING, INFO = "error", "warning", "info"

# Stable finding codes and what they mean (documented in docs/score.md).
CODES = {
    "SCORE-1000": "the file is not valid YAML",
    "SCORE-1001": "the document does not match the Score schema",
    "SCORE-1002": "unknown key",
    "SCORE-1003": "required key missing",
    "SCORE-1004": "value has the wrong type",
    "SCORE-1005": "value has the wrong format",
    "SCORE-1006": "unsupported apiVersion",
    "SCORE-1010": "document too large",
    "SCORE-1011": "more than one YAML document",
    "SCORE-1012": "document nested too deeply or uses too many aliases",
    "SCORE-1013": "file is not UTF-8 text",
    "SCORE-1014": "document is not a mapping",
    "SCORE-2001": "image tag is 'latest' or missing",
}

# Where keys that older tools put at the top level belong in a Score file.
TOP_LEVEL_HINTS = {
    "environment": "the target environment is chosen at deploy time (`innominatus deploy --env`); "
    "environment hints belong under metadata.annotations, e.g. innominatus.dev/environment",
    "workflows": "name the golden path in metadata.annotations: innominatus.dev/golden-path: deploy-app",
    "workflow": "name the golden path in metadata.annotations: innominatus.dev/golden-path: deploy-app",
}


@dataclass
class Finding:
    code: str
    severity: str
    message: str
    pointer: str = ""
    line: int = 0
    column: int = 0
    hint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ValidationResult:
    findings: list[Finding] = field(default_factory=list)
    workload: str = ""
    document: dict | None = None

    @property
    def valid(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]


