"""Hostile input is refused fast, with a clear error finding and no crash.

Each case is bounded in time (2 s) and in peak memory measured by tracemalloc (50 MB). The bounds
are a safety net, not a benchmark: real refusals take well under a millisecond."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from innominatus.specs.validation import MAX_DOCUMENT_BYTES, validate_score

SECONDS = 2.0
PEAK_BYTES = 50 * 1024 * 1024

VALID = "apiVersion: score.dev/v1b1\nmetadata:\n  name: web\ncontainers:\n  main:\n    image: nginx:1.27\n"


def _laughs(levels: int, fanout: int) -> str:
    lines = ["apiVersion: score.dev/v1b1", "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def _doubling(levels: int) -> str:
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# name: (input, expected code, expected (line, column) or None when not checked, message fragment)
CASES = {
    "not YAML": ("apiVersion: [unclosed\n  : : :", "SCORE-1000", (2, 3), "not valid YAML"),
    "binary junk": (bytes(range(1, 32)) * 10, "SCORE-1000", (1, 1), "control character"),
    "several documents": (VALID + "---\n" + VALID, "SCORE-1011", (7, 1), "more than one YAML document"),
    "billion laughs": (_laughs(9, 10), "SCORE-1018", None, "once its aliases are expanded"),
    "too many aliases": ("a: &a x\nb: [" + ", ".join(["*a"] * 200) + "]\n", "SCORE-1012", None, "aliases"),
    "doubling aliases": (_doubling(40), "SCORE-1018", None, "once its aliases are expanded"),
    "10,000 levels of [": ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", "SCORE-1012", None, "nested deeper"),
    "10,000 levels of {": ("a: " + "{a: " * 10_000 + "}" * 10_000 + "\n", "SCORE-1012", None, "nested deeper"),
    "deep block mappings": ("".join("  " * i + f"k{i}:\n" for i in range(200)), "SCORE-1012", (65, 129),
                            "nested deeper"),
    "10 MB string": ("a: " + "x" * 10_000_000, "SCORE-1010", None, "larger than"),
    "10 MB bytes": (b"a: " + b"x" * 10_000_000, "SCORE-1010", None, "the limit is"),
    "just over the limit": ("a: " + "x" * MAX_DOCUMENT_BYTES, "SCORE-1010", None, "larger than"),
    "multibyte over the limit": ("a: " + "é" * (MAX_DOCUMENT_BYTES // 2 + 1), "SCORE-1010", None, "larger than"),
    "many values": ("a: [" + ",".join(["1"] * 60_000) + "]\n", "SCORE-1018", None, "more than"),
    "non-UTF-8 bytes": (b"apiVersion: score.dev/v1b1\nmetadata:\n  name: \xff\xfeweb\n", "SCORE-1013", (3, 9),
                        "not UTF-8"),
    "Latin-1 file": ("apiVersion: score.dev/v1b1\nmetadata:\n  name: caf\u00e9\n".encode("latin-1"), "SCORE-1013",
                     (3, 12), "0xe9"),
    "UTF-16 with BOM": (VALID.encode("utf-16"), "SCORE-1013", (1, 1), "UTF-16"),
    "UTF-16 big endian": (b"\xfe\xff" + VALID.encode("utf-16-be"), "SCORE-1013", (1, 1), "UTF-16"),
    "tab indentation": ("apiVersion: score.dev/v1b1\nmetadata:\n\tname: web\n", "SCORE-1000", (3, 1), "tab"),
    "a list": ("- apiVersion: score.dev/v1b1\n", "SCORE-1014", (1, 1), "a list"),
    "a scalar": ("score.dev/v1b1\n", "SCORE-1014", (1, 1), "a string"),
    "a number": ("42\n", "SCORE-1014", (1, 1), "a number"),
    "empty": ("", "SCORE-1014", (1, 1), "empty"),
    "only a comment": ("# nothing here\n", "SCORE-1014", (1, 1), "empty"),
    "integer key": (VALID + "1: x\n", "SCORE-1017", (7, 1), "not a string"),
    "boolean key": (VALID + "true: x\n", "SCORE-1017", (7, 1), "not a string"),
    "null key": (VALID + "~: x\n", "SCORE-1017", (7, 1), "not a string"),
    "list as key": ("? [a]\n: b\n", "SCORE-1017", (1, 3), "not a string"),
    "flow mapping as key": ("{[a]: b}\n", "SCORE-1017", (1, 2), "not a string"),
    "python object tag": ("!!python/object/apply:os.system ['echo pwned']\n", "SCORE-1015", (1, 1),
                          "!!python/object/apply:os.system"),
    "python tag on a value": (VALID + "x: !!python/object:builtins.dict {}\n", "SCORE-1015", (7, 4),
                              "!!python/object:builtins.dict"),
    "python name tag": ("a: !!python/name:os.system ''\n", "SCORE-1015", (1, 4), "!!python/name"),
    "local tag": ("a: !secret x\n", "SCORE-1015", (1, 4), "!secret"),
    "binary tag": ("a: !!binary aGVsbG8=\n", "SCORE-1015", (1, 4), "!!binary"),
    "wrong core tag value": ("a: !!int twelve\n", "SCORE-1015", (1, 4), "not a valid"),
    "undefined alias": ("a: *nowhere\n", "SCORE-1000", (1, 4), "refers to no anchor"),
    "duplicate key": ("a: 1\nb: 2\na: 3\n", "SCORE-1016", (3, 1), "appears twice"),
    "control character": ("a: b\x07c\n", "SCORE-1000", (1, 5), "U+0007"),
    "NUL byte": (b"a: b\x00c\n", "SCORE-1000", (1, 5), "U+0000"),
}


def _measure(data):
    tracemalloc.start()
    try:
        started = time.perf_counter()
        result = validate_score(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, elapsed, peak


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    validate_score(VALID)  # compile the validators once, outside the measured calls


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_clearly_and_quickly(name):
    data, code, position, fragment = CASES[name]
    result, elapsed, peak = _measure(data)
    assert not result.valid
    first = result.errors[0]
    assert first.code == code, result.findings
    assert fragment in first.message, first
    assert first.hint, first
    if position is not None:
        assert (first.line, first.column) == position, first
    assert elapsed < SECONDS, f"{name} took {elapsed:.2f} s"
    assert peak < PEAK_BYTES, f"{name} peaked at {peak / 1e6:.1f} MB"


def test_tags_are_never_constructed(monkeypatch):
    import os

    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    for text in ("!!python/object/apply:os.system ['true']\n", "a: !!python/object/apply:os.system ['true']\n",
                 "a: !!python/object/new:os.system ['true']\n"):
        assert validate_score(text).errors[0].code == "SCORE-1015"
    assert calls == []


def test_aliases_within_limits_are_expanded_and_unshared():
    text = ("apiVersion: score.dev/v1b1\nmetadata:\n  name: web\ncontainers:\n"
            "  one: &base\n    image: nginx:1.27\n    variables: &vars\n      A: a\n"
            "  two:\n    <<: *base\n    variables: *vars\n")
    result = validate_score(text)
    assert result.valid, result.findings
    one, two = result.document["containers"]["one"], result.document["containers"]["two"]
    assert one == two == {"image": "nginx:1.27", "variables": {"A": "a"}}
    assert one["variables"] is not two["variables"]


def test_yaml_1_2_core_scalars():
    """Plain scalars resolve as in YAML 1.2 (score-go): yes/no/on stay strings."""
    text = ("apiVersion: score.dev/v1b1\nmetadata:\n  name: web\ncontainers:\n  main:\n    image: nginx:1.27\n"
            "    variables:\n      A: yes\n      B: off\n      C: 2024-01-01\n")
    result = validate_score(text)
    assert result.valid, result.findings
    assert result.document["containers"]["main"]["variables"] == {"A": "yes", "B": "off", "C": "2024-01-01"}
    bad = validate_score(text.replace("A: yes", "A: true"))
    assert [f.code for f in bad.errors] == ["SCORE-1004"]
    assert "quote it" in bad.errors[0].hint


def test_utf8_bom_is_accepted():
    assert validate_score(b"\xef\xbb\xbf" + VALID.encode()).valid
    assert validate_score("\ufeff" + VALID).valid


def test_deep_but_legal_nesting_is_accepted():
    params = "".join("  " * (i + 3) + f"k{i}:\n" for i in range(40)) + "  " * 43 + "leaf: 1\n"
    text = VALID + "resources:\n  db:\n    type: postgres\n    params:\n" + params.replace("  " * 3, "      ", 1)
    result = validate_score(text)
    assert not [f for f in result.errors if f.code.startswith("SCORE-10")], result.findings
