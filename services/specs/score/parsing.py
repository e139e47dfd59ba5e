"""Safe YAML parsing for Score files: one pass over the parser's events builds the plain
document and the line/column of every key and value, and refuses hostile input on the way.

Why not ``yaml.safe_load`` or ruamel's loaders:

- the composers of PyYAML and ruamel recurse once per nesting level, so very deep nesting
  raises RecursionError (or overflows the C stack); here nesting is counted from the event
  stream and refused past :data:`MAX_DEPTH` before anything is built;
- aliases are shared, not copied, and every alias adds the size of what it points at to a
  budget (:data:`MAX_NODES`), so a "billion laughs" document is refused after a few events;
- tags are never constructed: only the YAML core tags are understood; anything else
  (``!!python/object``, ``!custom``) is an error;
- keys must be strings (``1: x`` and ``? [a]: b`` are errors) and must not repeat.

Plain scalars are resolved with the YAML 1.2 core schema, as score-go's YAML library does:
``yes``/``on`` stay strings, ``true``/``false`` are booleans, ``0o17`` and ``0x1f`` are
integers. Merge keys (``<<: *base``) are supported.

The events come from libyaml through PyYAML when it is installed (fast), else from
ruamel.yaml's pure-Python parser; both produce the same event classes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from innominatus.specs.findings import ERROR, Finding

try:  # libyaml through PyYAML: the fast path
    from yaml import YAMLError as _PyYAMLError
    try:
        from yaml._yaml import CParser as _EventSource  # type: ignore[attr-defined]
    except ImportError:  # PyYAML without libyaml
        from yaml import SafeLoader as _EventSource  # type: ignore[assignment]
    _ERRORS: tuple[type[BaseException], ...] = (_PyYAMLError,)
    BACKEND = "pyyaml-c" if _EventSource.__name__ == "CParser" else "pyyaml"
except ImportError:  # pragma: no cover - PyYAML missing: ruamel's pure-Python parser
    _EventSource = None  # type: ignore[assignment]
    _ERRORS = ()
    BACKEND = "ruamel"

from ruamel.yaml.error import YAMLError as _RuamelError  # noqa: E402

_ERRORS = (*_ERRORS, _RuamelError)

MAX_DEPTH = 64          # nesting levels of mappings and sequences
MAX_ALIASES = 100       # alias nodes in one document
MAX_NODES = 20_000      # values in the document, counting what every alias expands to

CORE = "tag:yaml.org,2002:"
MERGE_KEY = "<<"

_INT = re.compile(r"[-+]?[0-9]+\Z")
_INT_OCT = re.compile(r"0o[0-7]+\Z")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)\Z")
_NAN = re.compile(r"\.(nan|NaN|NAN)\Z")
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE = frozenset(("true", "True", "TRUE"))
_FALSE = frozenset(("false", "False", "FALSE"))
# first characters a non-string plain scalar can start with
_SPECIAL_START = frozenset("0123456789+-.~nNtTfF")


class _Refused(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def resolve_plain(value: str) -> Any:
    """The value of a plain (unquoted, untagged) scalar under the YAML 1.2 core schema."""
    if not value:
        return None
    if value[0] not in _SPECIAL_START:
        return value
    if value in _NULLS:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if _INT.match(value):
        return int(value, 10)
    if _INT_OCT.match(value):
        return int(value[2:], 8)
    if _INT_HEX.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value[0] == "-" else math.inf
    if _NAN.match(value):
        return math.nan
    return value


def _tagged(tag: str, value: str, line: int, col: int) -> Any:
    kind = tag[len(CORE):] if tag.startswith(CORE) else None
    if tag == "!" or kind == "str":
        return value
    try:
        if kind == "int":
            result = resolve_plain(value)
            if isinstance(result, int) and not isinstance(result, bool):
                return result
        elif kind == "float":
            result = resolve_plain(value)
            if isinstance(result, (int, float)) and not isinstance(result, bool):
                return float(result)
        elif kind == "bool":
            result = resolve_plain(value)
            if isinstance(result, bool):
                return result
        elif kind == "null":
            if value in _NULLS:
                return None
        else:
            raise _Refused(_unsupported_tag(tag, line, col))
    except ValueError:
        pass
    raise _Refused(Finding("SCORE-1015", ERROR, f"{value!r} is not a valid {tag}", "", line, col,
                           f"remove the tag {tag} or fix the value"))


def _unsupported_tag(tag: str, line: int, col: int) -> Finding:
    tag = "!!" + tag[len(CORE):] if tag.startswith(CORE) else tag
    return Finding("SCORE-1015", ERROR, f"the YAML tag {tag} is not supported", "", line, col,
                   "remove the tag: a Score file holds only plain mappings, lists, strings, numbers and booleans")


@dataclass
class Parsed:
    """A parsed document with the 1-based (line, column) of each value and each mapping key,
    keyed by path (a tuple of keys and list indexes)."""

    document: Any = None
    values: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    keys: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    aliases: int = 0


class _Frame:
    __slots__ = ("container", "path", "is_map", "key", "key_pos", "index", "size", "anchor", "start", "merges", "explicit")

    def __init__(self, container, path, is_map, anchor, start):
        self.container = container
        self.path = path
        self.is_map = is_map
        self.key = _NO_KEY      # in a mapping: the key whose value comes next
        self.key_pos = None
        self.index = 0          # in a sequence: the index of the next item
        self.size = 1           # values in this collection, aliases expanded
        self.anchor = anchor
        self.start = start      # 1-based (line, column) where the collection starts
        self.merges = None      # mappings named by merge keys (<<)
        self.explicit = None    # keys written in this mapping itself, when it has merges


_NO_KEY = object()
_MERGE = object()


def _events(text: str):
    if _EventSource is not None:
        parser = _EventSource(text)
        try:
            while True:
                event = parser.get_event()
                if event is None:
                    return
                yield event
                if type(event).__name__ == "StreamEndEvent":
                    return
        finally:
            dispose = getattr(parser, "dispose", None)
            if dispose is not None:
                dispose()
    else:  # pragma: no cover
        import io

        from ruamel.yaml import YAML

        yield from YAML(typ="safe", pure=True).parse(io.StringIO(text))


def parse(text: str) -> Parsed | Finding:
    """Parse one YAML document; a :class:`Finding` (an error) when it cannot or must not be."""
    try:
        return _parse(text)
    except _Refused as exc:
        return exc.finding
    except _ERRORS as exc:
        return yaml_error(exc, text)
    except RecursionError:  # pragma: no cover - the parsers used here are iterative
        return Finding("SCORE-1012", ERROR, "the document is nested too deeply", "", 0, 0, "flatten the structure")


def yaml_error(exc: BaseException, text: str = "") -> Finding:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    position = getattr(exc, "position", None)
    if problem is None and isinstance(position, int) and getattr(exc, "reason", None):  # the reader: a bad character
        # libyaml counts the position in bytes of UTF-8; map it back to a character offset
        offset = len(text.encode("utf-8")[:position].decode("utf-8", "ignore")) if text else position
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        character = getattr(exc, "character", None)
        shown = f"U+{ord(character):04X}" if isinstance(character, str) else (
            f"U+{character:04X}" if isinstance(character, int) else "a character")
        return Finding("SCORE-1000", ERROR, f"not valid YAML: {shown} is a control character, which YAML does not allow "
                       "in the text of a file", "", line, col, "remove it, or write it as an escape inside double quotes")
    problem = problem or str(exc) or "syntax error"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context != problem and context_mark is not None and mark is not context_mark:
        problem += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    if "nesting depth" in problem:  # libyaml's own limit (1000 levels), met before ours in flow style
        return Finding("SCORE-1012", ERROR, f"the document is nested deeper than {MAX_DEPTH} levels", "", line, col,
                       "flatten the structure")
    hint = "check indentation and quoting around this position"
    index = getattr(mark, "index", None)
    if "\t" in problem or (isinstance(index, int) and 0 <= index < len(text) and text[index] == "\t"):
        if "tab" not in problem:
            problem += " (a tab)"
        hint = "indent with spaces: YAML does not allow tabs for indentation"
    return Finding("SCORE-1000", ERROR, f"not valid YAML: {problem}", "", line, col, hint)


def _refuse(code: str, message: str, pos: tuple[int, int], hint: str, pointer: str = "") -> _Refused:
    return _Refused(Finding(code, ERROR, message, pointer, pos[0], pos[1], hint))


def _parse(text: str) -> Parsed:
    parsed = Parsed()
    values = parsed.values
    keys = parsed.keys
    anchors: dict[str, tuple[Any, int]] = {}
    stack: list[_Frame] = []
    documents = 0
    nodes = 0
    root: list[Any] = []

    def place(value: Any, pos: tuple[int, int], size: int, anchor) -> None:
        """Put a finished value into its parent (or make it the root)."""
        nonlocal nodes
        nodes += size
        if nodes > MAX_NODES:
            raise _refuse("SCORE-1018", f"the document has more than {MAX_NODES} values"
                          + (" once its aliases are expanded" if parsed.aliases else ""), pos,
                          "a Score file describes one workload: move bulk data to files.source")
        if anchor is not None:
            anchors[anchor] = (value, size)
        if not stack:
            root.append(value)
            values[()] = pos
            return
        frame = stack[-1]
        frame.size += size
        if not frame.is_map:
            path = (*frame.path, frame.index)
            values[path] = pos
            frame.index += 1
            frame.container.append(value)
            return
        key = frame.key
        frame.key = _NO_KEY
        if key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise _refuse("SCORE-1001", "a merge key (<<) must refer to a mapping or a list of mappings", pos,
                              "use `<<: *anchor` with an anchored mapping", _pointer(frame.path))
            if frame.merges is None:
                frame.merges = []
                frame.explicit = set(frame.container)
            frame.merges.extend(sources)
            return
        path = (*frame.path, key)
        keys[path] = frame.key_pos
        values[path] = pos
        if frame.explicit is not None:
            frame.explicit.add(key)
        frame.container[key] = value

    def take_key(frame: _Frame, key: Any, pos: tuple[int, int], text: str | None, merge: bool = False) -> None:
        if merge:
            frame.key = _MERGE
            frame.key_pos = pos
            return
        if not isinstance(key, str):
            shown = text if text is not None else repr(key)
            raise _refuse("SCORE-1017", f"the key {shown} is not a string", pos,
                          f"keys must be strings: quote it ('{shown}') or remove it" if text is not None
                          else "keys must be strings")
        if key in frame.container:
            raise _refuse("SCORE-1016", f"the key {key!r} appears twice", pos,
                          "remove one of them: YAML keys must be unique", _pointer((*frame.path, key)))
        frame.key = key
        frame.key_pos = pos

    for event in _events(text):
        kind = type(event).__name__
        if kind == "ScalarEvent":
            mark = event.start_mark
            pos = (mark.line + 1, mark.column + 1)
            tag = event.tag
            raw = event.value
            plain = tag is None and event.implicit[0] and not event.style
            if plain:
                value = resolve_plain(raw)
            elif tag is not None and tag != "!":
                value = _tagged(tag, raw, pos[0], pos[1])
            else:
                value = raw
            if stack and stack[-1].is_map and stack[-1].key is _NO_KEY:
                take_key(stack[-1], value, pos, raw if plain else None, merge=plain and raw == MERGE_KEY)
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
                continue
            place(value, pos, 1, event.anchor)
        elif kind == "MappingStartEvent" or kind == "SequenceStartEvent":
            mark = event.start_mark
            pos = (mark.line + 1, mark.column + 1)
            if stack and stack[-1].is_map and stack[-1].key is _NO_KEY:
                raise _refuse("SCORE-1017", "a key is a mapping or a list, not a string", pos, "keys must be strings")
            tag = event.tag
            if tag is not None and tag not in (CORE + "map", CORE + "seq", "!"):
                raise _Refused(_unsupported_tag(tag, pos[0], pos[1]))
            if len(stack) >= MAX_DEPTH:
                raise _refuse("SCORE-1012", f"the document is nested deeper than {MAX_DEPTH} levels", pos,
                              "flatten the structure")
            if stack:
                parent = stack[-1]
                path = (*parent.path, parent.key if parent.is_map else parent.index)
            else:
                path = ()
            is_map = kind == "MappingStartEvent"
            stack.append(_Frame({} if is_map else [], path, is_map, event.anchor, pos))
        elif kind == "MappingEndEvent" or kind == "SequenceEndEvent":
            frame = stack.pop()
            if frame.merges:
                for source in frame.merges:
                    for k, v in source.items():
                        if k not in frame.container:
                            frame.container[k] = v
            place(frame.container, frame.start, frame.size, frame.anchor)
        elif kind == "AliasEvent":
            mark = event.start_mark
            pos = (mark.line + 1, mark.column + 1)
            parsed.aliases += 1
            if parsed.aliases > MAX_ALIASES:
                raise _refuse("SCORE-1012", f"the document uses more than {MAX_ALIASES} YAML aliases", pos,
                              "write the values out instead of using anchors and aliases")
            if event.anchor not in anchors:
                raise _refuse("SCORE-1000", f"not valid YAML: the alias *{event.anchor} refers to no anchor", pos,
                              f"define &{event.anchor} before using it")
            value, size = anchors[event.anchor]
            if stack and stack[-1].is_map and stack[-1].key is _NO_KEY:
                take_key(stack[-1], value, pos, None)
                continue
            place(value, pos, size, None)
        elif kind == "DocumentStartEvent":
            documents += 1
            if documents > 1:
                mark = event.start_mark
                raise _refuse("SCORE-1011", "the file holds more than one YAML document",
                              (mark.line + 1, mark.column + 1), "put each workload in its own file")
    parsed.document = root[0] if root else None
    if parsed.aliases:
        parsed.document = _unshare(parsed.document)
    return parsed


def _unshare(value: Any) -> Any:
    """A copy in which no two places share a mapping or list (aliases point at one object)."""
    if isinstance(value, dict):
        return {k: _unshare(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshare(v) for v in value]
    return value


def _pointer(path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
