"""Upgrade the deprecated list forms of ``containers.*.files`` and ``containers.*.volumes``
to the map form keyed by target, as score-go does before it uses a workload.

    files:                          files:
    - target: /etc/app.conf   ->      /etc/app.conf:
      content: hello                    content: hello
"""

from __future__ import annotations

import json
from typing import Any, Callable

from innominatus.specs.findings import ERROR, WARNING, Finding

Locate = Callable[..., tuple[int, int]]
FIELDS = ("files", "volumes")


def _pointer(path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _example(field: str, items: list) -> str:
    """A one-line picture of the map form of the first item, for the hint."""
    first = next((i for i in items if isinstance(i, dict) and isinstance(i.get("target"), str)), None)
    if first is None:
        return f"{field}: {{<target>: {{...}}}}"
    inner = ", ".join(f"{k}: ..." for k in first if k != "target") or "..."
    return f"{field}: {{{json.dumps(first['target'])}: {{{inner}}}}}"


def upgrade(document: dict, locate: Locate) -> tuple[list[Finding], dict[tuple, tuple]]:
    """Rewrite the list forms in ``document`` in place.

    Returns the findings (a warning per list; errors for an item without a target or a target
    given twice) and a map from each upgraded path prefix, e.g. ``("containers", "web",
    "files", "/etc/app.conf")``, to the original one, ``("containers", "web", "files", 0)``,
    so positions can still be found in the source.
    """
    findings: list[Finding] = []
    moved: dict[tuple, tuple] = {}
    containers = document.get("containers")
    if not isinstance(containers, dict):
        return findings, moved
    for name, container in containers.items():
        if not isinstance(container, dict):
            continue
        for field in FIELDS:
            items = container.get(field)
            if not isinstance(items, list):
                continue
            base = ("containers", name, field)
            line, col = locate(base, key=True)
            findings.append(Finding(
                "SCORE-1020", WARNING,
                f"containers.{name}.{field} uses the deprecated list form; it was read as the map form keyed by target",
                _pointer(base), line, col, f"write it as a map keyed by target: {_example(field, items)}"))
            upgraded: dict[str, Any] = {}
            first_index: dict[str, int] = {}
            for index, item in enumerate(items):
                target = item.get("target") if isinstance(item, dict) else None
                if not isinstance(target, str) or not target:
                    line, col = locate((*base, index))
                    findings.append(Finding(
                        "SCORE-1022", ERROR, f"containers.{name}.{field}[{index}] has no target",
                        _pointer((*base, index)), line, col,
                        "every item of the list form needs `target:` (the path in the container)"))
                    continue
                if target in upgraded:
                    line, col = locate((*base, index, "target"))
                    findings.append(Finding(
                        "SCORE-1021", ERROR,
                        f"containers.{name}.{field}[{index}] mounts {target!r} again "
                        f"(already mounted by item {first_index[target]})",
                        _pointer((*base, index, "target")), line, col,
                        "each target may be mounted once: remove or rename one of them"))
                    continue
                upgraded[target] = {k: v for k, v in item.items() if k != "target"}
                first_index[target] = index
                moved[(*base, target)] = (*base, index)
            container[field] = upgraded
    return findings, moved
