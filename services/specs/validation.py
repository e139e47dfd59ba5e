"""Validation of Score workloads: the same code runs in the specs service and offline in
``innominatus validate``.

Each problem becomes a :class:`Finding` with a stable code, a JSON pointer, the YAML line
and column, and a hint saying how to fix it.
"""

from __future__ import annotations

import difflib
import io
import json
from functools import lru_cache
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, DocumentStartEvent

from innominatus.specs.findings import CODES, ERROR, INFO, TOP_LEVEL_HINTS, WARNING, Finding, ValidationResult  # noqa: F401

MAX_DOCUMENT_BYTES = 512 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 50

@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    path = Path(__file__).with_name("score_v1b1.schema.yaml")
    schema = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _pointer(path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _position(root, path, key_of_last: bool = False) -> tuple[int, int]:
    """1-based line and column of the node at ``path`` in the ruamel tree (0, 0 if unknown)."""
    node = root
    line = col = 0
    if isinstance(root, (CommentedMap, CommentedSeq)) and hasattr(root, "lc"):
        line, col = root.lc.line + 1, root.lc.col + 1
    for i, part in enumerate(path):
        last = i == len(path) - 1
        try:
            if isinstance(node, CommentedMap) and part in node:
                pos = node.lc.key(part) if (last and key_of_last) else node.lc.value(part)
                line, col = pos[0] + 1, pos[1] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                pos = node.lc.item(part)
                line, col = pos[0] + 1, pos[1] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line, col


def _plain(node):
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _scan(text: str) -> Finding | None:
    """Refuse documents that are hostile before building them: several documents, deep
    nesting and alias bombs."""
    depth = aliases = documents = 0
    try:
        for event in YAML(typ="safe", pure=True).parse(io.StringIO(text)):
            if isinstance(event, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    return Finding("SCORE-1011", ERROR, "the file holds more than one YAML document", "", line, 1,
                                   "put each workload in its own file")
            elif isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    m = event.start_mark
                    return Finding("SCORE-1012", ERROR, f"the document is nested deeper than {MAX_DEPTH} levels", "",
                                   m.line + 1, m.column + 1, "flatten the structure")
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            elif isinstance(event, AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    m = event.start_mark
                    return Finding("SCORE-1012", ERROR, f"the document uses more than {MAX_ALIASES} YAML aliases", "",
                                   m.line + 1, m.column + 1, "write the values out instead of using anchors and aliases")
    except MarkedYAMLError as exc:
        return _yaml_error(exc)
    except YAMLError as exc:
        return Finding("SCORE-1000", ERROR, f"not valid YAML: {exc}", "", 0, 0, "check the YAML syntax")
    return None


def _yaml_error(exc: MarkedYAMLError) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = exc.problem or exc.context or "syntax error"
    return Finding("SCORE-1000", ERROR, f"not valid YAML: {problem}", "", line, col,
                   "check indentation and quoting around this position")


def _schema_finding(error: jsonschema.ValidationError, tree) -> Finding:
    path = list(error.absolute_path)
    pointer = _pointer(path)
    where = pointer or "the document"
    if error.validator == "additionalProperties":
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})] if isinstance(error.instance, dict) else []
        key = extra[0] if extra else "?"
        known = list(error.schema.get("properties", {}))
        hint = TOP_LEVEL_HINTS.get(key) if not path else None
        if hint is None:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed keys here: {', '.join(known)}" if known else "remove it")
        line, col = _position(tree, [*path, key], key_of_last=True)
        return Finding("SCORE-1002", ERROR, f"unknown key {key!r} in {where}", _pointer([*path, key]), line, col, hint)
    line, col = _position(tree, path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return Finding("SCORE-1003", ERROR, f"{where} is missing the required key {missing!r}", pointer, line, col,
                       f"add `{missing}:` under {where}")
    if error.validator == "type":
        return Finding("SCORE-1004", ERROR, f"{where}: {error.message}", pointer, line, col,
                       f"use a value of type {error.validator_value}")
    if error.validator == "const" and path == ["apiVersion"]:
        return Finding("SCORE-1006", ERROR, f"apiVersion {error.instance!r} is not supported", pointer, line, col,
                       "use apiVersion: score.dev/v1b1")
    if error.validator in ("pattern", "minLength", "maxLength", "enum", "minimum", "maximum", "format", "propertyNames"):
        return Finding("SCORE-1005", ERROR, f"{where}: {error.message}", pointer, line, col,
                       "see the Score specification for the allowed format")
    return Finding("SCORE-1001", ERROR, f"{where}: {error.message}", pointer, line, col, "")


def _warnings(document: dict, tree) -> list[Finding]:
    out = []
    for name, container in (document.get("containers") or {}).items():
        image = container.get("image", "") if isinstance(container, dict) else ""
        if not isinstance(image, str) or image == "." or "@" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if tag in ("", "latest"):
            path = ["containers", name, "image"]
            line, col = _position(tree, path)
            out.append(Finding("SCORE-2001", WARNING, f"container {name!r} uses image {image!r} without a pinned tag",
                               _pointer(path), line, col, "pin a version tag or a digest so deployments are repeatable"))
    return out


def validate_score(text: str | bytes, path: str | None = None) -> ValidationResult:
    """Validate one Score file given as text (or raw bytes)."""
    result = ValidationResult()
    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            result.findings.append(Finding("SCORE-1010", ERROR, f"the file is {len(text)} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                                           hint="split the workload or move large file contents to files.source"))
            return result
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.findings.append(Finding("SCORE-1013", ERROR, f"the file is not UTF-8: invalid byte at offset {exc.start}",
                                           hint="save the file as UTF-8"))
            return result
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        result.findings.append(Finding("SCORE-1010", ERROR, f"the file is larger than {MAX_DOCUMENT_BYTES} bytes",
                                       hint="split the workload or move large file contents to files.source"))
        return result
    hostile = _scan(text)
    if hostile is not None:
        result.findings.append(hostile)
        return result
    yaml = YAML(typ="rt", pure=True)
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        result.findings.append(_yaml_error(exc))
        return result
    except YAMLError as exc:
        result.findings.append(Finding("SCORE-1000", ERROR, f"not valid YAML: {exc}", hint="check the YAML syntax"))
        return result
    if not isinstance(tree, dict):
        result.findings.append(Finding("SCORE-1014", ERROR, "the document is not a mapping of keys to values", "", 1, 1,
                                       "a Score file starts with `apiVersion: score.dev/v1b1`"))
        return result
    document = json.loads(json.dumps(_plain(tree), default=str))
    result.document = document
    name = (document.get("metadata") or {}).get("name") if isinstance(document.get("metadata"), dict) else None
    result.workload = name if isinstance(name, str) else ""
    errors = sorted(_validator().iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    result.findings.extend(_schema_finding(e, tree) for e in errors)
    if not result.errors:
        result.findings.extend(_warnings(document, tree))
    result.findings.sort(key=lambda f: (f.line, f.column, f.code))
    return result
