"""Findings: what validation tells a user about a Score file.

Every finding has a stable code. Codes are grouped by who emits them:
SCORE-10xx parsing and schema (validation.py), SCORE-11xx semantic checks (checks.py),
SCORE-12xx placeholders and rendering (render.py), SCORE-20xx warnings about risky but
valid workloads. Never renumber or reuse a code: users grep for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from innominatus.kit.findings import ERROR, INFO, WARNING, Finding  # noqa: F401 - the Score validator's names

# Stable finding codes and what they mean (documented in docs/score.md).
CODES = {
    "SCORE-1000": "the file is not valid YAML",
    "SCORE-1001": "the document does not match the Score schema",
    "SCORE-1002": "unknown key",
    "SCORE-1003": "required key missing",
    "SCORE-1004": "value has the wrong type",
    "SCORE-1005": "value has the wrong format",
    "SCORE-1006": "unsupported apiVersion",
    "SCORE-1007": "exactly one (or at least one) of several keys must be given",
    "SCORE-1010": "document too large",
    "SCORE-1011": "more than one YAML document",
    "SCORE-1012": "document nested too deeply or uses too many aliases",
    "SCORE-1013": "file is not UTF-8 text",
    "SCORE-1014": "document is not a mapping",
    "SCORE-1015": "unsupported YAML tag (e.g. !!python/object) or a value that does not fit its tag",
    "SCORE-1016": "duplicate key in a YAML mapping",
    "SCORE-1017": "mapping key is not a string",
    "SCORE-1018": "too many values (after expanding aliases)",
    "SCORE-1019": "number is infinite or not a number",
    "SCORE-1020": "deprecated list form of files or volumes, upgraded to the map form",
    "SCORE-1021": "list form of files or volumes names the same target twice",
    "SCORE-1022": "list form item of files or volumes without a target",
    "SCORE-1101": "malformed placeholder",
    "SCORE-1102": "placeholder with an unknown root (only metadata and resources)",
    "SCORE-1103": "placeholder without a metadata key or resource name",
    "SCORE-1104": "placeholder names a resource that is not declared",
    "SCORE-1105": "placeholder names a metadata key that does not exist",
    "SCORE-1106": "resource params reference the resource's own outputs",
    "SCORE-1107": "resources depend on each other's outputs in a cycle",
    "SCORE-1110": "container `before` names an unknown container",
    "SCORE-1111": "container lists itself in `before`",
    "SCORE-1112": "containers' `before` ordering forms a cycle",
    "SCORE-1120": "file source is absolute or outside the Score file's directory",
    "SCORE-1121": "file source does not exist",
    "SCORE-1122": "file source not checked (directory of the Score file unknown)",
    "SCORE-1123": "file mode is not an octal permission from 0000 to 0777",
    "SCORE-1130": "memory is not a Kubernetes quantity",
    "SCORE-1131": "cpu is not a number of cores or millicores",
    "SCORE-1140": "workload name used twice in one application",
    "SCORE-2001": "image tag is 'latest' or missing",
    "SCORE-2002": "unknown resource type close to a well-known one",
    "SCORE-2003": "container without resource limits",
    "SCORE-2004": "container without liveness or readiness probe",
    "SCORE-2005": "two service ports target the same container port",
    "SCORE-2006": "file mode is world-writable",
    "SCORE-2007": "memory given in millibytes (suffix 'm')",
    "SCORE-2008": "resource request greater than its limit",
}

# Where keys that older tools put at the top level belong in a Score file.
TOP_LEVEL_HINTS = {
    "environment": "the target environment is chosen at deploy time (`innominatus deploy --env`); "
    "environment hints belong under metadata.annotations, e.g. innominatus.dev/environment",
    "workflows": "name the golden path in metadata.annotations: innominatus.dev/golden-path: deploy-app",
    "workflow": "name the golden path in metadata.annotations: innominatus.dev/golden-path: deploy-app",
}


@dataclass
class ValidationResult:
    findings: list[Finding] = field(default_factory=list)
    workload: str = ""
    document: dict | None = None
    # locate(path) -> (line, column) in the source, for checks that span several files.
    locate: Callable[..., tuple[int, int]] | None = field(default=None, repr=False, compare=False)

    @property
    def valid(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]


