"""Rendering of command results: json, yaml (ruamel, safe), jsonl and compact tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

FORMATS = ("table", "json", "yaml", "jsonl")

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def dump_json(data: Any, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    json.dump(data, stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def dump_jsonl(data: Any, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    items = data if isinstance(data, list) else [data]
    for item in items:
        stream.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")


def dump_yaml(data: Any, stream: TextIO | None = None) -> None:
    from ruamel.yaml import YAML

    stream = stream or sys.stdout
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.sort_base_mapping_type_on_output = False  # keep the server's field order
    yaml.dump(_plain(data), stream)


def emit(data: Any, fmt: str, table: Callable[[], None] | None = None) -> None:
    """Print `data` as json/yaml/jsonl, or call `table` for the human format."""
    if fmt == "json":
        dump_json(data)
    elif fmt == "yaml":
        dump_yaml(data)
    elif fmt == "jsonl":
        dump_jsonl(data)
    elif table is not None:
        table()
    else:
        dump_yaml(data)


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    *,
    empty: str = "No items found.",
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stdout
    if not rows:
        print(empty, file=sys.stderr)
        return
    headers = [header for header, _ in columns]
    cells = [[cell(getter(row)) for _, getter in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for line in [headers, *cells]:
        text = "  ".join(value.ljust(widths[i]) for i, value in enumerate(line))
        stream.write(text.rstrip() + "\n")


def print_fields(pairs: Iterable[tuple[str, Any]], stream: TextIO | None = None) -> None:
    """A vertical `Key: value` block for a single object."""
    stream = stream or sys.stdout
    pairs = [(k, cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in pairs), default=0) + 1
    for key, value in pairs:
        stream.write(f"{(key + ':').ljust(width)} {value}".rstrip() + "\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    return text if text else "-"


# -- field helpers used by the table layouts --------------------------------------------

ENUM_PREFIXES = ("RUN_STATE_", "STEP_STATE_", "AUDIT_OUTCOME_", "ROLE_", "SEVERITY_")


def enum(value: Any) -> str:
    """RUN_STATE_SUCCEEDED -> SUCCEEDED."""
    if not isinstance(value, str) or not value:
        return "-"
    for prefix in ENUM_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def short(name: Any) -> str:
    """runs/abc -> abc (resource name without its collection)."""
    if not isinstance(name, str) or not name:
        return "-"
    return name.split("/", 1)[1] if "/" in name else name


def when(value: Any) -> str:
    """RFC 3339 -> `YYYY-MM-DD HH:MM:SS` (UTC as sent by the server)."""
    if not isinstance(value, str) or not value:
        return "-"
    text = value.replace("T", " ")
    return text[:19]


def _plain(data: Any) -> Any:
    """Copy into plain dict/list/str so the safe dumper never meets an unknown type."""
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    return str(data)
