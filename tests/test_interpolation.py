"""The one placeholder engine (innominatus.kit.interpolation) with score-go semantics: a table of
placeholder cases with the exact output or the exact error, resolved by the render preview's
resolver (roots `metadata` and `resources`)."""

from __future__ import annotations

import pytest

from innominatus.kit.interpolation import (
    MissingKey,
    PlaceholderError,
    encode,
    find_placeholders,
    lookup,
    split_reference,
    substitute,
    substitute_tree,
)
from innominatus.specs.render import make_resolver

DOCUMENT = {
    "apiVersion": "score.dev/v1b1",
    "metadata": {
        "name": "web",
        "annotations": {"example.com/team": "payments", "plain": "p"},
        "replicas": 3,
        "enabled": True,
        "nothing": None,
        "tags": ["a", "b"],
        "owner": {"team": "payments", "size": 4},
        "ratio": 0.5,
        "whole": 5432.0,
        "html": "<a&b>",
        "unicode": "Grüße 世界",
        "dollar": "$5",
        "self": "${metadata.name}",
    },
    "resources": {"db": {"type": "postgres"}, "cache": {"type": "redis"}, "data": {"type": "volume"}},
}
OUTPUTS = {
    "db": {"host": "db.internal", "port": 5432, "username": "app", "creds": {"user": "u", "password": "p"}},
    "data": {"source": "vol-1"},
}
RESOLVE = make_resolver(DOCUMENT, OUTPUTS)

# (input, expected output) — exact.
CASES = [
    ("", ""),
    ("plain text", "plain text"),
    ("$$", "$"),
    ("a $$ b", "a $ b"),
    ("$${x}", "${x}"),
    ("$$${metadata.name}", "$web"),
    ("$$$${x}", "$${x}"),
    ("$${metadata.name}", "${metadata.name}"),
    ("$${unterminated", "${unterminated"),
    ("$${a b *(^&}", "${a b *(^&}"),
    ("$", "$"),
    ("$x", "$x"),
    ("a$", "a$"),
    ("$HOME and $1", "$HOME and $1"),
    ("${metadata.name}", "web"),
    ("name=${metadata.name}!", "name=web!"),
    ("${metadata.annotations.example\\.com/team}", "payments"),
    ("${metadata.annotations.plain}", "p"),
    ("${metadata.owner.team}", "payments"),
    # non-strings are JSON-encoded as Go's json.Marshal does
    ("${metadata.replicas}", "3"),
    ("${metadata.enabled}", "true"),
    ("${metadata.nothing}", "null"),
    ("${metadata.tags}", '["a","b"]'),
    ("${metadata.owner}", '{"size":4,"team":"payments"}'),
    ("${metadata.ratio}", "0.5"),
    ("${metadata.whole}", "5432"),
    ("${resources.db.port}", "5432"),
    ("${resources.db.creds}", '{"password":"p","user":"u"}'),
    # strings are inserted as they are, unicode and all; a resolved value is not substituted again
    ("${metadata.unicode}", "Grüße 世界"),
    ("${metadata.html}", "<a&b>"),
    ("${metadata.dollar}", "$5"),
    ("${metadata.self}", "${metadata.name}"),
    ("ünï ${metadata.name} ✓", "ünï web ✓"),
    # several, adjacent, at the start and at the end
    ("${resources.db.host}:${resources.db.port}", "db.internal:5432"),
    ("${metadata.name}${metadata.name}", "webweb"),
    ("${metadata.name}-suffix", "web-suffix"),
    ("prefix-${metadata.name}", "prefix-web"),
    (
        "postgres://${resources.db.username}@${resources.db.host}:${resources.db.port}/${metadata.name}",
        "postgres://app@db.internal:5432/web",
    ),
    ("${resources.db.creds.user}", "u"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_substitute(text, expected):
    assert substitute(text, RESOLVE) == expected


# (input, exact error message).
ERRORS = [
    ("${nope.x}", "unknown placeholder root 'nope': placeholders start with 'metadata.' or 'resources.' "
                  "(write '$${' for a literal '${')"),
    ("${name}", "unknown placeholder root 'name': placeholders start with 'metadata.' or 'resources.' "
                "(write '$${' for a literal '${')"),
    ("$$$${x}${x}", "unknown placeholder root 'x': placeholders start with 'metadata.' or 'resources.' "
                    "(write '$${' for a literal '${')"),
    ("${metadata}", "a metadata placeholder needs a key, e.g. ${metadata.name}"),
    ("${resources}", "a resources placeholder needs a resource name and an output, e.g. ${resources.db.host}"),
    ("${metadata.nmae}", "metadata has no key 'nmae' (keys: annotations, dollar, enabled, html, name, nothing, "
                         "owner, ratio, replicas, self, tags, unicode, whole); did you mean 'name'?"),
    ("${metadata.owner.teem}", "metadata.owner has no key 'teem' (keys: size, team); did you mean 'team'?"),
    ("${metadata.name.first}", "metadata.name is not a map, so it has no key 'first'"),
    ("${metadata.tags.0}", "metadata.tags is a list: placeholders look up map keys only, so '0' cannot be "
                           "found in it"),
    ("${metadata.annotations.example.com/team}", "metadata.annotations has no key 'example' (keys: "
                                                 "example.com/team, plain); did you mean 'example.com/team'?"),
    ("${resources.db.hostname}", "resources.db has no output 'hostname' (outputs: creds, host, port, username); "
                                 "did you mean 'host'?"),
    ("${resources.db.creds.token}", "resources.db.creds has no key 'token' (keys: password, user)"),
    ("${resources.db}", "${resources.db} names the resource but no output: write ${resources.db.OUTPUT} "
                        "(outputs: creds, host, port, username)"),
    ("${resources.cache.host}", "no outputs were given for resources.cache: add `cache:` with its outputs to the "
                                "outputs file"),
    ("${resources.queue.url}", "resources.queue is not declared under `resources:` in this workload "
                               "(declared: cache, data, db)"),
    # malformed: refused by the engine itself
    ("${a", "unterminated placeholder '${a': '${' has no closing '}' (write '$${' for a literal '${')"),
    ("x ${metadata.name", "unterminated placeholder '${metadata.name': '${' has no closing '}' "
                          "(write '$${' for a literal '${')"),
    ("${}", "empty placeholder '${}' (write '$${}' for a literal '${}')"),
    ("${a b}", "malformed placeholder '${a b}': use dot-separated keys of letters, digits, '-', '_' and '/' "
               "(escape a dot inside a key as '\\.'; write '$$' for a literal '$')"),
    ("${metadata.name }", "malformed placeholder '${metadata.name }': use dot-separated keys of letters, digits, "
                          "'-', '_' and '/' (escape a dot inside a key as '\\.'; write '$$' for a literal '$')"),
    ("${a..b}", "malformed placeholder '${a..b}': empty key (a dot at the start or end, or two dots in a row); "
                "escape a dot inside a key as '\\.'"),
    ("${.a}", "malformed placeholder '${.a}': empty key (a dot at the start or end, or two dots in a row); "
              "escape a dot inside a key as '\\.'"),
    ("${metadata.}", "malformed placeholder '${metadata.}': empty key (a dot at the start or end, or two dots "
                     "in a row); escape a dot inside a key as '\\.'"),
    ("${a${b}}", "malformed placeholder '${a${b}': use dot-separated keys of letters, digits, '-', '_' and '/' "
                 "(escape a dot inside a key as '\\.'; write '$$' for a literal '$')"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[c[0] for c in ERRORS])
def test_substitute_errors(text, message):
    with pytest.raises(PlaceholderError) as caught:
        substitute(text, RESOLVE)
    assert caught.value.message == message
    assert str(caught.value) == message


def test_error_carries_placeholder_and_offset():
    with pytest.raises(PlaceholderError) as caught:
        substitute("host=${resources.db.hostname}", RESOLVE)
    assert caught.value.placeholder == "${resources.db.hostname}"
    assert caught.value.offset == 5


def test_collecting_errors_reports_every_problem_and_keeps_going():
    errors: list[PlaceholderError] = []
    text = "${resources.db.host} ${resources.db.nope} ${a b} ${metadata.name} ${x.y} ${tail"
    result = substitute(text, RESOLVE, errors)
    assert result == "db.internal ${resources.db.nope} ${a b} web ${x.y} ${tail"
    assert [(e.placeholder, e.offset) for e in errors] == [
        ("${resources.db.nope}", 21),
        ("${a b}", 42),
        ("${x.y}", 66),
        ("${tail", 73),
    ]


def test_keyerror_from_a_resolver_becomes_a_placeholder_error():
    def resolve(parts):
        raise KeyError("gone")

    with pytest.raises(PlaceholderError, match=r"^cannot resolve '\$\{a\.b\}': gone$"):
        substitute("${a.b}", resolve)


def test_volume_source_names_the_volume_resource():
    resolve = make_resolver(DOCUMENT, OUTPUTS, volume_source=True)
    assert substitute("${resources.data}", resolve) == "vol-1"
    assert substitute("${resources.data.source}/sub", resolve) == "vol-1/sub"


def test_substitute_tree_leaves_keys_and_non_strings_untouched():
    tree = {
        "${metadata.name}": "${metadata.name}",
        "list": ["${resources.db.port}", 7, None, True, {"deep": ["x-${metadata.name}", "$${keep}"]}],
        "n": 1.5,
    }
    assert substitute_tree(tree, RESOLVE) == {
        "${metadata.name}": "web",
        "list": ["5432", 7, None, True, {"deep": ["x-web", "${keep}"]}],
        "n": 1.5,
    }
    assert tree["list"][4]["deep"][0] == "x-${metadata.name}"  # the input is not modified


def test_substitute_tree_collects_errors():
    errors: list[PlaceholderError] = []
    result = substitute_tree({"a": ["${metadata.x}", {"b": "${y.z}"}]}, RESOLVE, errors)
    assert result == {"a": ["${metadata.x}", {"b": "${y.z}"}]}
    assert [e.placeholder for e in errors] == ["${metadata.x}", "${y.z}"]


def test_find_placeholders():
    found = find_placeholders("$${no} ${metadata.annotations.a\\.b/c} $$ ${resources.db.host}")
    assert [(p.text, p.parts, p.start, p.end) for p in found] == [
        ("${metadata.annotations.a\\.b/c}", ("metadata", "annotations", "a.b/c"), 7, 37),
        ("${resources.db.host}", ("resources", "db", "host"), 41, 61),
    ]
    assert find_placeholders("no placeholders, $x, $$ and $${y}") == []
    with pytest.raises(PlaceholderError, match="empty placeholder"):
        find_placeholders("ok ${metadata.name} then ${}")


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("a", ("a",)),
        ("a.b.c", ("a", "b", "c")),
        ("a\\.b", ("a.b",)),
        ("x.example\\.com/team.y", ("x", "example.com/team", "y")),
        ("a..b", ("a", "", "b")),
    ],
)
def test_split_reference(reference, parts):
    assert split_reference(reference) == parts


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("text", "text"),
        (5432, "5432"),
        (-1, "-1"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (0.5, "0.5"),
        (5432.0, "5432"),
        (-0.0, "-0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        ([1, "a", None], '[1,"a",null]'),
        ({"b": 1, "a": [True]}, '{"a":[true],"b":1}'),
        ({"k": "Grüße"}, '{"k":"Grüße"}'),
        ({"k": "<a&b>"}, '{"k":"\\u003ca\\u0026b\\u003e"}'),
        ({"k": 'q"\n\t'}, '{"k":"q\\"\\n\\t"}'),
        ({"k": "\u2028"}, '{"k":"\\u2028"}'),
        ({}, "{}"),
        ([], "[]"),
    ],
)
def test_encode_like_go_json_marshal(value, encoded):
    assert encode(value) == encoded


def test_encode_refuses_nan():
    with pytest.raises(PlaceholderError):
        encode(float("nan"))


def test_lookup():
    root = {"a": {"b": [10, {"c": 1}]}}
    assert lookup(root, ("a", "b")) == [10, {"c": 1}]
    assert lookup(root, ("a", "b", "1", "c"), allow_index=True) == 1
    with pytest.raises(MissingKey) as caught:
        lookup(root, ("a", "x"))
    assert (caught.value.key, caught.value.walked, caught.value.available) == ("x", ("a",), ["b"])
    assert str(caught.value) == "'x' not found in a (available: b)"
    with pytest.raises(MissingKey) as caught:
        lookup(root, ("a", "b", "0"))  # score-go walks maps only
    assert caught.value.available is None
    with pytest.raises(KeyError):
        lookup(root, ("a", "b", "5"), allow_index=True)
