"""Differences between two versions of a Score workload.

Two views of the same change, both deterministic:

- :func:`diff_documents`: a structural diff of the parsed documents, one :class:`Change`
  per added, removed or changed value, each at its JSON pointer (RFC 6901). Mapping keys
  are visited in sorted order, list items by index; a mapping or list present on both
  sides is descended into, anything else that differs (including a change of kind, e.g.
  a string that became a mapping, or ``1`` that became ``true``) is one ``changed`` entry.
- :func:`unified_diff`: ``diff -u`` of the two sources as submitted (comments and key
  order included), from :mod:`difflib`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"

# ``old``/``new`` of a Change when that side has no value (added / removed).
MISSING: Any = object()


@dataclass(frozen=True)
class Change:
    op: str  # added | removed | changed
    pointer: str  # "/containers/web/image"
    old: Any = MISSING
    new: Any = MISSING

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "pointer": self.pointer}
        if self.old is not MISSING:
            out["old"] = self.old
        if self.new is not MISSING:
            out["new"] = self.new
        return out


def escape(token: str | int) -> str:
    """One JSON pointer reference token: ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return str(token).replace("~", "~0").replace("/", "~1")


def _same(a: Any, b: Any) -> bool:
    # ``True == 1`` and ``1 == 1.0`` in Python; in a Score file they are different values.
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def diff_documents(base: Any, target: Any) -> list[Change]:
    """Every difference from ``base`` to ``target`` (parsed YAML/JSON values)."""
    changes: list[Change] = []
    _walk(base, target, "", changes)
    return changes


def _walk(base: Any, target: Any, pointer: str, out: list[Change]) -> None:
    if isinstance(base, dict) and isinstance(target, dict):
        for key in sorted(set(base) | set(target), key=str):
            child = f"{pointer}/{escape(key)}"
            if key not in target:
                out.append(Change(REMOVED, child, old=base[key]))
            elif key not in base:
                out.append(Change(ADDED, child, new=target[key]))
            else:
                _walk(base[key], target[key], child, out)
        return
    if isinstance(base, list) and isinstance(target, list):
        common = min(len(base), len(target))
        for index in range(common):
            _walk(base[index], target[index], f"{pointer}/{index}", out)
        for index in range(common, len(target)):
            out.append(Change(ADDED, f"{pointer}/{index}", new=target[index]))
        # Removed items from the end backwards, so each pointer is valid when applied in order.
        for index in range(len(base) - 1, common - 1, -1):
            out.append(Change(REMOVED, f"{pointer}/{index}", old=base[index]))
        return
    if not _same(base, target):
        out.append(Change(CHANGED, pointer, old=base, new=target))


def unified_diff(base: str, target: str, base_label: str = "base", target_label: str = "target",
                 context: int = 3) -> str:
    """``diff -u`` of two texts; empty when they are equal."""
    lines = difflib.unified_diff(
        base.splitlines(), target.splitlines(), fromfile=base_label, tofile=target_label, n=context, lineterm=""
    )
    text = "\n".join(lines)
    return text + "\n" if text else ""


__all__ = ["ADDED", "CHANGED", "MISSING", "REMOVED", "Change", "diff_documents", "escape", "unified_diff"]
