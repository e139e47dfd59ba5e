"""Validation of Score workloads: the same code runs in the specs service and offline in
``innominatus validate``.

Each problem becomes a :class:`Finding` with a stable code, a JSON pointer, the YAML line
and column, and a hint saying how to fix it. The steps:

1. size and encoding (SCORE-1010, SCORE-1013);
2. safe parsing with positions, refusing hostile YAML (:mod:`innominatus.specs.score.parsing`);
3. our own JSON Schema (``score_v1b1.schema.yaml``); a fast compiled validator confirms a valid
   document, and the error-collecting validator runs only when there is something to report;
4. the deprecated list forms of ``files`` and ``volumes`` are upgraded to the map form with a
   warning (:mod:`innominatus.specs.score.upgrade`);
5. the semantic checks (:mod:`innominatus.specs.checks`) on the upgraded document.
"""

from __future__ import annotations

import difflib
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jsonschema

from innominatus.specs.findings import CODES, ERROR, INFO, TOP_LEVEL_HINTS, WARNING, Finding, ValidationResult  # noqa: F401
from innominatus.specs.score import parsing, upgrade

try:
    from innominatus.specs.checks import semantic_findings as _semantic_findings
except ImportError:  # pragma: no cover - the semantic checks ship separately; without them, none run
    _semantic_findings = None

MAX_DOCUMENT_BYTES = 512 * 1024
MAX_DEPTH = parsing.MAX_DEPTH
MAX_ALIASES = parsing.MAX_ALIASES

SCHEMA_PATH = Path(__file__).with_name("score_v1b1.schema.yaml")

# Codes of the schema step; the conformance tests compare these with the official schema.
SCHEMA_CODES = frozenset({"SCORE-1001", "SCORE-1002", "SCORE-1003", "SCORE-1004", "SCORE-1005", "SCORE-1006",
                          "SCORE-1007"})
_SIZE_HINT = "split the workload or move large file contents to files.source"


@lru_cache(maxsize=1)
def _schema() -> dict:
    parsed = parsing.parse(SCHEMA_PATH.read_text(encoding="utf-8"))
    if isinstance(parsed, Finding):  # pragma: no cover - a broken schema file is a build error
        raise RuntimeError(f"{SCHEMA_PATH.name}:{parsed.line}:{parsed.column}: {parsed.message}")
    return parsed.document


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@lru_cache(maxsize=1)
def _fast_check() -> Callable[[Any], bool] | None:
    """A compiled yes/no check (fastjsonschema) that confirms a valid document quickly; None when
    fastjsonschema is not installed. Only a "valid" answer is trusted: any doubt runs jsonschema."""
    try:
        import fastjsonschema  # noqa: PLC0415
    except ImportError:
        return None
    # The keywords used are the same in draft 7, which fastjsonschema implements.
    schema = dict(_schema(), **{"$schema": "http://json-schema.org/draft-07/schema#"})
    compiled = fastjsonschema.compile(schema, formats={}, use_default=False)

    def check(document: Any) -> bool:
        try:
            compiled(document)
        except fastjsonschema.JsonSchemaException:
            return False
        except Exception:  # noqa: BLE001 - never trust the fast path on a surprise
            return False
        return True

    return check


def _pointer(path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class Locator:
    """``locate(path) -> (line, column)``: the 1-based position in the original source of the value
    at a path of keys and indexes (of its key with ``key=True``), falling back to the nearest
    enclosing value. Paths into upgraded ``files``/``volumes`` entries locate the list items."""

    def __init__(self, parsed: parsing.Parsed | None, moved: dict[tuple, tuple] | None = None) -> None:
        self.values = parsed.values if parsed else {}
        self.keys = parsed.keys if parsed else {}
        self.moved = moved or {}

    def __call__(self, path, key: bool = False) -> tuple[int, int]:
        path = tuple(path)
        if self.moved and len(path) >= 4 and path[:4] in self.moved:
            original = self.moved[path[:4]]
            path = original + path[4:]
            if len(path) == 4:
                key = False  # the list item itself: its `- ` has no key
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            pos = self.values.get(path[:end])
            if pos is not None:
                return pos
        return (0, 0)


def _schema_finding(error: jsonschema.ValidationError, locate: Locator) -> Finding | list[Finding]:
    error = _most_useful(error)
    path = list(error.absolute_path)
    pointer = _pointer(path)
    where = ".".join(map(str, path)) or "the document"
    validator = error.validator
    if validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known] if isinstance(error.instance, dict) else []
        out = []
        for key in extra or ["?"]:
            hint = TOP_LEVEL_HINTS.get(key) if not path else None
            if hint is None:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else (
                    f"allowed keys here: {', '.join(known)}" if known else "remove it")
            line, col = locate((*path, key), key=True)
            inside = f" in {where}" if path else " at the top level"
            out.append(Finding("SCORE-1002", ERROR, f"unknown key {key!r}{inside}", _pointer((*path, key)), line, col, hint))
        return out
    if "propertyNames" in error.relative_schema_path:  # a key of a map has the wrong form
        key = error.instance
        line, col = locate((*path, key), key=True)
        what = {"annotations": "annotation key", "variables": "variable name"}.get(str(path[-1]) if path else "", "name")
        return Finding("SCORE-1005", ERROR, f"{where}: the {what} {key!r} is not allowed", _pointer((*path, key)),
                       line, col, _name_hint(path))
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        line, col = locate(path, key=True) if path else (1, 1)
        return Finding("SCORE-1003", ERROR, f"{where} is missing the required key {missing!r}", pointer, line, col,
                       f"add `{missing}:` under {where}")
    line, col = locate(path)
    if path == ["apiVersion"] and validator != "type":
        return Finding("SCORE-1006", ERROR, f"apiVersion {error.instance!r} is not supported", pointer, line, col,
                       "use apiVersion: score.dev/v1b1")
    if validator == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return Finding("SCORE-1004", ERROR, f"{where} must be {_article(wanted)} {wanted}, not {_type_name(error.instance)}",
                       pointer, line, col, f"use a value of type {wanted}" + (
                           "; quote it to make it a string" if wanted == "string" and not isinstance(error.instance, (dict, list)) else ""))
    if validator == "propertyNames":
        bad = _bad_name(error)
        line, col = locate((*path, bad), key=True) if bad is not None else (line, col)
        return Finding("SCORE-1005", ERROR, f"{where}: the name {bad!r} is not allowed here", _pointer((*path, bad)),
                       line, col, _name_hint(path))
    if validator == "oneOf" and all(set(s) == {"required"} for s in error.validator_value):
        choices = [s["required"][0] for s in error.validator_value]
        given = [c for c in choices if isinstance(error.instance, dict) and c in error.instance]
        said = "sets none of" if not given else "sets more than one of"
        return Finding("SCORE-1007", ERROR, f"{where} {said} {', '.join(choices)}", pointer, line, col,
                       f"give exactly one of {', '.join(choices)}")
    if validator == "anyOf" and all(set(s) == {"required"} for s in error.validator_value):
        choices = [s["required"][0] for s in error.validator_value]
        return Finding("SCORE-1007", ERROR, f"{where} sets none of {', '.join(choices)}", pointer, line, col,
                       f"give at least one of {', '.join(choices)}")
    if validator == "not" and error.validator_value == {"required": ["target"]}:
        return Finding("SCORE-1001", ERROR, f"{where} repeats the target inside the map form", pointer, line, col,
                       "remove `target:`: in the map form the key is the target")
    if validator in ("pattern", "minLength", "maxLength"):
        return Finding("SCORE-1005", ERROR, f"{where}: {error.instance!r} is not in the allowed format", pointer, line, col,
                       _format_hint(path, error))
    if validator in ("enum", "minimum", "maximum", "minProperties", "maxProperties", "format", "const"):
        return Finding("SCORE-1005", ERROR, f"{where}: {error.message}", pointer, line, col, _format_hint(path, error))
    return Finding("SCORE-1001", ERROR, f"{where}: {error.message}", pointer, line, col,
                   "see the Score specification (score.dev) for this field")


def _most_useful(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For the oneOf of files/volumes (map form or list form), the error inside the branch of the
    form actually used."""
    while error.validator == "oneOf" and error.context and not all(
            isinstance(s, dict) and set(s) == {"required"} for s in error.validator_value):
        branches = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [subs for subs in branches.values() if not any(s.validator == "type" and not s.path for s in subs)]
        if len(fitting) != 1:
            break
        error = sorted(fitting[0], key=lambda e: (-len(e.path), str(e.validator)))[0]
    return error


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _type_name(value: Any) -> str:
    if value is None:
        return "null (empty)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _bad_name(error: jsonschema.ValidationError) -> Any:
    for sub in error.context or ():
        if sub.instance is not None:
            return sub.instance
    instance = error.instance
    return next(iter(instance), None) if isinstance(instance, dict) and len(instance) == 1 else None


def _name_hint(path: list) -> str:
    last = path[-1] if path else ""
    if last == "annotations":
        return "annotation keys are an optional DNS prefix and '/', then letters, digits, '.', '_' or '-' (e.g. example.com/my-key)"
    if last == "variables":
        return "variable names must be non-empty and must not contain '='"
    return "use 2-63 lowercase letters, digits and '-', starting and ending with a letter or digit (RFC 1123 label)"


def _format_hint(path: list, error: jsonschema.ValidationError) -> str:
    last = path[-1] if path else ""
    if last == "name" and path[:1] == ["metadata"]:
        return "use 2-63 lowercase letters, digits and '-', starting and ending with a letter or digit (RFC 1123 label)"
    if last in ("port", "targetPort"):
        return "use a port number from 1 to 65535"
    if last == "mode":
        return "give the mode as an octal string, e.g. \"0644\""
    if last == "memory":
        return "use bytes with an optional suffix, e.g. 128M, 512Mi or 1.5Gi"
    if last == "cpu":
        return "use whole or fractional cores or millicores, e.g. \"2\", \"0.5\" or 250m"
    if error.validator == "enum":
        return "use one of: " + ", ".join(map(str, error.validator_value))
    if last in ("type", "class"):
        return "use 2-63 letters, digits and '-', starting and ending with a letter or digit"
    if last == "id":
        return "use dot-separated labels of lowercase letters, digits and '-', e.g. shared.main-db"
    if error.validator == "minProperties":
        return "declare at least one container"
    return "see the Score specification (score.dev) for the allowed format"


def _error(code: str, message: str, hint: str, line: int = 0, column: int = 0) -> ValidationResult:
    return ValidationResult(findings=[Finding(code, ERROR, message, "", line, column, hint)])


def _decode(text: str | bytes) -> str | ValidationResult:
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        if len(raw) > MAX_DOCUMENT_BYTES:
            return _error("SCORE-1010", f"the file is {len(raw)} bytes; the limit is {MAX_DOCUMENT_BYTES}", _SIZE_HINT)
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
            return _error("SCORE-1013", "the file is UTF-16 or UTF-32 encoded (it starts with a byte order mark)",
                          "save the file as UTF-8", 1, 1)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            return _error("SCORE-1013", f"the file is not UTF-8: invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}",
                          "save the file as UTF-8", line, column)
    elif len(text) > MAX_DOCUMENT_BYTES or (len(text) * 4 > MAX_DOCUMENT_BYTES
                                            and len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES):
        return _error("SCORE-1010", f"the file is larger than {MAX_DOCUMENT_BYTES} bytes", _SIZE_HINT)
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def validate_score(text: str | bytes, path: str | None = None, source_dir: str | Path | None = None) -> ValidationResult:
    """Validate one Score file given as text (or raw bytes).

    ``path`` is where the file was read from: ``files.source`` is resolved against its directory
    (or against ``source_dir`` when given); without either, sources are not checked.
    """
    decoded = _decode(text)
    if isinstance(decoded, ValidationResult):
        return decoded
    if source_dir is None and path not in (None, "", "-"):
        source_dir = Path(path).parent
    parsed = parsing.parse(decoded)
    if isinstance(parsed, Finding):
        return ValidationResult(findings=[parsed])
    document = parsed.document
    if not isinstance(document, dict):
        what = "empty" if document is None else f"a {_type_name(document).split(' (')[0].removeprefix('a ')}"
        line, col = parsed.values.get((), (1, 1))
        return _error("SCORE-1014", f"the document is {what}, not a mapping of keys to values",
                      "a Score file is a mapping that starts with `apiVersion: score.dev/v1b1`", line, col)
    locate = Locator(parsed)
    result = ValidationResult(document=document, locate=locate)
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    result.workload = name if isinstance(name, str) else ""
    fast = _fast_check()
    if fast is None or not fast(document):
        errors = sorted(_validator().iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
        for e in errors:
            found = _schema_finding(e, locate)
            result.findings.extend(found if isinstance(found, list) else [found])
    result.findings.extend(_non_finite_numbers(document, locate))
    if not result.errors:
        upgrades, moved = upgrade.upgrade(document, locate)
        result.findings.extend(upgrades)
        locate.moved = moved
    if not result.errors and _semantic_findings is not None:
        result.findings.extend(_semantic_findings(document, locate, Path(source_dir) if source_dir is not None else None))
    result.findings = _dedupe(result.findings)
    result.findings.sort(key=lambda f: (f.line, f.column, f.code))
    return result


def _non_finite_numbers(document, locate) -> list[Finding]:
    """`.inf`, `.nan` and numbers too large for a double are valid YAML but cannot travel as
    JSON or protobuf values; refuse them where they are."""
    out, stack = [], [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            line, col = locate(path)
            out.append(Finding("SCORE-1019", ERROR, f"{_pointer(path) or 'the document'} is {value!r}, not a finite number",
                               _pointer(path), line, col, "write a finite number, or quote it to make it a string"))
    return out


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple] = set()
    out = []
    for f in findings:
        key = (f.code, f.pointer, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
