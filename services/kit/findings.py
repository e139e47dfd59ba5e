"""Findings: one shape for everything that validates user input against a format (Score
files, workflow definitions): a stable code, a severity, where (JSON pointer, line, column),
what is wrong and how to fix it. The CLI prints them compiler-style; the APIs return them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR, WARNING, INFO = "error", "warning", "info"


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
