"""The one placeholder engine of innominatus, with Score (score-go) semantics.

Used by the specs service (validation and render preview) and by the workflow engine.

- ``${a.b.c}`` is replaced by the value found at ``a`` → ``b`` → ``c``; a non-string value
  is JSON-encoded.
- ``\\.`` inside a placeholder is a literal dot in a key: ``${metadata.annotations.x\\.io/y}``.
- ``$$`` is a literal ``$``, so ``$${x}`` renders as the literal text ``${x}``.
- A ``$`` followed by anything else is left as it is.
- ``${`` without its ``}``, an empty ``${}`` or characters outside
  ``[A-Za-z0-9._-/\\[\\]]`` (plus ``\\.``) are malformed and raise :class:`PlaceholderError`
  (score-go leaves them untouched; we refuse them, so a typo never reaches a container).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

_TOKEN = re.compile(r"\$(\$|\{)")
_REF_CHARS = re.compile(r"(?:[A-Za-z0-9_\-/\[\]]|\\\.)+(?:\.(?:[A-Za-z0-9_\-/\[\]]|\\\.)+)*")


class PlaceholderError(ValueError):
    """A placeholder that is malformed or cannot be resolved."""

    def __init__(self, message: str, placeholder: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.placeholder = placeholder
        self.offset = offset


@dataclass(frozen=True)
class Placeholder:
    text: str  # as written, e.g. "${resources.db.host}"
    parts: tuple[str, ...]  # ("resources", "db", "host"), with \. unescaped
    start: int  # offset of "$" in the string
    end: int  # offset after "}"


def split_reference(reference: str) -> tuple[str, ...]:
    """``a.b\\.c`` → ``("a", "b.c")``."""
    parts, current, i = [], [], 0
    while i < len(reference):
        if reference.startswith("\\.", i):
            current.append(".")
            i += 2
        elif reference[i] == ".":
            parts.append("".join(current))
            current = []
            i += 1
        else:
            current.append(reference[i])
            i += 1
    parts.append("".join(current))
    return tuple(parts)


def _scan(text: str):
    """Yield (kind, start, end, payload): kind "dollar" for $$, "ref" for ${...}."""
    position = 0
    while True:
        match = _TOKEN.search(text, position)
        if match is None:
            return
        start = match.start()
        if match.group(1) == "$":
            yield "dollar", start, match.end(), None
            position = match.end()
            continue
        close = text.find("}", match.end())
        if close == -1:
            raise PlaceholderError(
                f"placeholder starting at offset {start} has no closing '}}'", text[start : start + 40], start
            )
        reference = text[match.end() : close]
        if not reference:
            raise PlaceholderError("empty placeholder '${}'", "${}", start)
        if not _REF_CHARS.fullmatch(reference):
            raise PlaceholderError(
                f"malformed placeholder '${{{reference}}}': use dot-separated keys of letters, digits, "
                "'-', '_' and '/' (escape a dot inside a key as '\\.'; write '$$' for a literal '$')",
                f"${{{reference}}}",
                start,
            )
        yield "ref", start, close + 1, reference
        position = close + 1


def find_placeholders(text: str) -> list[Placeholder]:
    """Every ``${...}`` placeholder in ``text`` (escaped ones excluded), in order."""
    return [
        Placeholder(text[start:end], split_reference(ref), start, end)
        for kind, start, end, ref in _scan(text)
        if kind == "ref"
    ]


def encode(value: Any) -> str:
    """How a resolved value appears inside a string: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


Resolver = Callable[[tuple[str, ...]], Any]


def substitute(text: str, resolve: Resolver) -> str:
    """Replace every placeholder in ``text`` with ``resolve(parts)`` (JSON-encoded when not a
    string) and every ``$$`` with ``$``. ``resolve`` raises :class:`PlaceholderError` (or
    KeyError) for what it cannot resolve."""
    out: list[str] = []
    position = 0
    for kind, start, end, ref in _scan(text):
        out.append(text[position:start])
        if kind == "dollar":
            out.append("$")
        else:
            try:
                out.append(encode(resolve(split_reference(ref))))
            except KeyError as exc:
                raise PlaceholderError(f"cannot resolve '${{{ref}}}': {exc.args[0] if exc.args else exc}",
                                       f"${{{ref}}}", start) from None
        position = end
    out.append(text[position:])
    return "".join(out)


def substitute_tree(value: Any, resolve: Resolver) -> Any:
    """:func:`substitute` applied to every string inside nested dicts and lists (keys untouched)."""
    if isinstance(value, str):
        return substitute(value, resolve)
    if isinstance(value, dict):
        return {k: substitute_tree(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_tree(v, resolve) for v in value]
    return value


def lookup(root: Any, parts: tuple[str, ...]) -> Any:
    """Walk ``parts`` through nested dicts (and lists by index); KeyError names the missing step."""
    current = root
    walked: list[str] = []
    for part in parts:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            where = ".".join(walked) or "the root"
            if isinstance(current, dict):
                known = ", ".join(sorted(map(str, current))) or "nothing"
                raise KeyError(f"'{part}' not found in {where} (available: {known})")
            raise KeyError(f"'{part}' not found: {where} is not a map")
        walked.append(part)
    return current
