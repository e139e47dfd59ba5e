"""The one placeholder engine of innominatus, with Score (score-go) semantics.

Used by the specs service (validation and render preview) and by the workflow engine.

- ``${a.b.c}`` is replaced by the value found at ``a`` → ``b`` → ``c``; a non-string value
  is JSON-encoded exactly as score-go does it (Go's ``json.Marshal``: compact, map keys
  sorted, UTF-8 kept as is, ``<``, ``>`` and ``&`` written as ``\\u003c``, ``\\u003e`` and
  ``\\u0026``, whole floats without ``.0``).
- ``\\.`` inside a placeholder is a literal dot in a key: ``${metadata.annotations.x\\.io/y}``.
- ``$$`` is a literal ``$``, so ``$${x}`` renders as the literal text ``${x}`` and
  ``$$$${x}`` as ``$${x}``.
- A ``$`` followed by anything else (``$x``, a trailing ``$``) is left as it is.
- Lookups walk maps only, as score-go's do: ``lookup`` refuses to index into a list unless
  asked to (``allow_index=True``, for the workflow engine's own contexts).
- ``${`` without its ``}``, an empty ``${}``, an empty key (``${a..b}``, ``${a.}``) or
  characters outside ``[A-Za-z0-9._-/\\[\\]]`` (plus ``\\.``) are malformed and raise
  :class:`PlaceholderError`. score-go leaves an unterminated ``${`` untouched and reports the
  others only when resolving; we refuse them all, so a typo never reaches a container.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

_TOKEN = re.compile(r"\$(\$|\{)")
_KEY = r"(?:[A-Za-z0-9_\-/\[\]]|\\\.)+"
_REF_CHARS = re.compile(rf"{_KEY}(?:\.{_KEY})*")
_ALLOWED = re.compile(r"(?:[A-Za-z0-9_\-/\[\].]|\\\.)*")
_HINT = ("use dot-separated keys of letters, digits, '-', '_' and '/' (escape a dot inside a key as '\\.'; "
         "write '$$' for a literal '$')")


class PlaceholderError(ValueError):
    """A placeholder that is malformed or cannot be resolved."""

    def __init__(self, message: str, placeholder: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.placeholder = placeholder
        self.offset = offset


class MissingKey(KeyError):
    """Raised by :func:`lookup`: ``key`` is not found after walking ``walked``; ``available`` lists
    the keys of the map that was searched (``None`` when the value there is not a map)."""

    def __init__(self, message: str, key: str, walked: tuple[str, ...], available: list[str] | None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.walked = walked
        self.available = available

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


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


def _malformed(reference: str, start: int) -> PlaceholderError:
    text = f"${{{reference}}}"
    if _ALLOWED.fullmatch(reference):  # only allowed characters: the dots are wrong
        return PlaceholderError(f"malformed placeholder '{text}': empty key (a dot at the start or end, or two dots "
                                "in a row); escape a dot inside a key as '\\.'", text, start)
    return PlaceholderError(f"malformed placeholder '{text}': {_HINT}", text, start)


def _scan(text: str):
    """Yield (kind, start, end, payload): kind "dollar" for $$, "ref" for ${...} (payload: the
    reference), "bad" for a malformed placeholder (payload: its PlaceholderError)."""
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
            snippet = text[start : start + 40]
            yield "bad", start, len(text), PlaceholderError(
                f"unterminated placeholder '{snippet}': '${{' has no closing '}}' (write '$${{' for a literal '${{')",
                snippet, start)
            return
        reference = text[match.end() : close]
        if not reference:
            yield "bad", start, close + 1, PlaceholderError(
                "empty placeholder '${}' (write '$${}' for a literal '${}')", "${}", start)
        elif not _REF_CHARS.fullmatch(reference):
            yield "bad", start, close + 1, _malformed(reference, start)
        else:
            yield "ref", start, close + 1, reference
        position = close + 1


def find_placeholders(text: str) -> list[Placeholder]:
    """Every ``${...}`` placeholder in ``text`` (escaped ones excluded), in order. Raises
    :class:`PlaceholderError` for the first malformed one."""
    found = []
    for kind, start, end, payload in _scan(text):
        if kind == "bad":
            raise payload
        if kind == "ref":
            found.append(Placeholder(text[start:end], split_reference(payload), start, end))
    return found


# -- JSON encoding as Go's encoding/json does it ------------------------------------------

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def _go_string(value: str) -> str:
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], json.dumps(value, ensure_ascii=False))


def _go_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise PlaceholderError(f"cannot encode {value!r} as JSON")
    short = repr(value)  # the shortest text that reads back as the same float, like Go's
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, exponent = short.split("e") if "e" in short else (short, "+00")
        sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = digits.rjust(2, "0")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}e{sign}{digits}"
    text = format(Decimal(short), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _go_json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_go_string(k)}:{_go_json(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    return _go_string(str(value))


def encode(value: Any) -> str:
    """How a resolved value appears inside a string: strings as they are, the rest as JSON
    encoded byte for byte as score-go (Go's ``json.Marshal``) encodes it."""
    if isinstance(value, str):
        return value
    return _go_json(value)


# -- substitution -----------------------------------------------------------------------

Resolver = Callable[[tuple[str, ...]], Any]


def substitute(text: str, resolve: Resolver, errors: list[PlaceholderError] | None = None) -> str:
    """Replace every placeholder in ``text`` with ``resolve(parts)`` (JSON-encoded when not a
    string) and every ``$$`` with ``$``. ``resolve`` raises :class:`PlaceholderError` (or
    KeyError) for what it cannot resolve.

    Without ``errors`` the first problem is raised. With a list, every problem is appended to
    it (each with its ``offset`` in ``text``), the placeholder is left as written and
    substitution goes on, so a caller can report all problems at once."""
    out: list[str] = []
    position = 0
    for kind, start, end, payload in _scan(text):
        out.append(text[position:start])
        position = end
        if kind == "dollar":
            out.append("$")
            continue
        if kind == "bad":
            if errors is None:
                raise payload
            errors.append(payload)
            out.append(text[start:end])
            continue
        try:
            out.append(encode(resolve(split_reference(payload))))
        except PlaceholderError as exc:
            if exc.offset < 0:
                exc.offset = start
            if not exc.placeholder:
                exc.placeholder = text[start:end]
            if errors is None:
                raise
            errors.append(exc)
            out.append(text[start:end])
        except KeyError as exc:
            detail = exc.args[0] if exc.args else exc
            problem = PlaceholderError(f"cannot resolve '{text[start:end]}': {detail}", text[start:end], start)
            if errors is None:
                raise problem from None
            errors.append(problem)
            out.append(text[start:end])
    out.append(text[position:])
    return "".join(out)


def substitute_tree(value: Any, resolve: Resolver, errors: list[PlaceholderError] | None = None) -> Any:
    """:func:`substitute` applied to every string inside nested dicts and lists (keys untouched);
    returns a new structure."""
    if isinstance(value, str):
        return substitute(value, resolve, errors)
    if isinstance(value, dict):
        return {k: substitute_tree(v, resolve, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_tree(v, resolve, errors) for v in value]
    return value


def strings_in(value: Any, path: tuple = ()):
    """Every string inside nested dicts and lists with its path (keys are never substituted)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings_in(item, (*path, i))


def lookup(root: Any, parts: tuple[str, ...], *, allow_index: bool = False) -> Any:
    """Walk ``parts`` through nested maps, as score-go does; with ``allow_index`` a digit
    part also indexes a list. Raises :class:`MissingKey` (a KeyError) naming the missing step
    and the keys that were there."""
    current = root
    walked: list[str] = []
    for part in parts:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif allow_index and isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            where = ".".join(walked) or "the root"
            if isinstance(current, dict):
                known = sorted(map(str, current))
                raise MissingKey(f"'{part}' not found in {where} (available: {', '.join(known) or 'nothing'})",
                                 part, tuple(walked), known)
            kind = "a list" if isinstance(current, list) else "not a map"
            raise MissingKey(f"'{part}' not found: {where} is {kind}", part, tuple(walked), None)
        walked.append(part)
    return current
