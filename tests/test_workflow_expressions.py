"""The CEL expression language of workflow conditions and for_each."""

from __future__ import annotations

import datetime

import pytest

from innominatus.engine.expressions import (
    MAX_EXPRESSION_LENGTH,
    Compiled,
    ExpressionError,
    Reference,
    compile_expression,
    evaluate,
    evaluate_condition,
    evaluate_list,
)

ACTIVATION = {
    "params": {"app": "web-shop", "replicas": 3, "regions": ["eu-1", "eu-2", "us-1"], "ratio": 0.5,
               "debug": False, "owner": None, "sizes": {"small": 1, "large": 4}},
    "steps": {"build": {"outputs": {"image": "registry.test/web-shop:1", "tags": ["a", "b"]}, "state": "succeeded"},
              "create-db": {"outputs": {"id": "db-7"}, "state": "succeeded"},
              "lint": {"outputs": {}, "state": "skipped"}},
    "workflow": {"name": "deploy-app", "run_id": "r-1", "version": "1.2.0"},
    "vars": {"region": "eu-1", "limit": 10},
    "resources": {"db": {"host": "db.internal", "port": 5432}},
    "item": {"region": "eu-2", "weight": 2},
}


@pytest.mark.parametrize("text,expected", [
    # comparisons and logic
    ("params.replicas > 1", True),
    ("params.replicas >= 3 && params.replicas < 4", True),
    ("params.replicas == 3 || false", True),
    ("!params.debug", True),
    ("params.ratio < 1.0", True),
    ("params.owner == null", True),
    ("params.app != 'web-shop'", False),
    ("params.replicas > 1 ? 'many' : 'one'", "many"),
    ("vars.limit - params.replicas * 2", 4),
    ("7 / 2", 3),
    ("7 % 2", 1),
    ("double(params.replicas) * params.ratio", 1.5),
    # in
    ("'eu-1' in params.regions", True),
    ("'ap-1' in params.regions", False),
    ("'small' in params.sizes", True),
    ("'db' in resources", True),
    # size
    ("size(params.regions)", 3),
    ("size(params.app)", 8),
    ("params.regions.size() == 3", True),
    ("size(params.sizes)", 2),
    # has
    ("has(params.app)", True),
    ("has(params.missing)", False),
    ("has(steps.build.outputs.image)", True),
    ("has(steps.lint.outputs.image)", False),
    # strings
    ("params.app.startsWith('web-')", True),
    ("params.app.endsWith('shop')", True),
    ("params.app.contains('-')", True),
    ("params.app.matches('^[a-z-]+$')", True),
    ("'v' + workflow.version", "v1.2.0"),
    ("string(params.replicas) + 'x'", "3x"),
    ("int('42') + 1", 43),
    # steps, resources, item, workflow
    ("steps.build.state == 'succeeded' && steps.lint.state == 'skipped'", True),
    ("steps['create-db'].outputs.id", "db-7"),
    ("resources.db.port", 5432),
    ("item.region", "eu-2"),
    ("workflow.run_id", "r-1"),
    # lists and maps out
    ("params.regions", ["eu-1", "eu-2", "us-1"]),
    ("params.regions.filter(r, r.startsWith('eu'))", ["eu-1", "eu-2"]),
    ("params.regions.map(r, r + '-a')", ["eu-1-a", "eu-2-a", "us-1-a"]),
    ("params.regions.all(r, size(r) == 4)", True),
    ("params.regions.exists(r, r == vars.region)", True),
    ("params.regions.exists_one(r, r.startsWith('us'))", True),
    ("[1, 2] + [3]", [1, 2, 3]),
    ("steps.build.outputs.tags", ["a", "b"]),
    ("{'a': [1, 2.5, null, true], 'b': {'c': 'd'}}", {"a": [1, 2.5, None, True], "b": {"c": "d"}}),
    ("params.sizes.filter(k, params.sizes[k] > 1)", ["large"]),
    ("b'ab'", b"ab"),
    ("duration('1h') > duration('30m')", True),
    ("duration('90s')", datetime.timedelta(seconds=90)),
])
def test_evaluate(text, expected):
    result = evaluate(compile_expression(text), ACTIVATION)
    assert result == expected and type(result) is type(expected), result


@pytest.mark.parametrize("text,line,column,message", [
    ("params.replicas >", 1, 18, "unexpected end of expression"),
    ("params.replicas >> 1", 1, 18, "unexpected '>'"),
    ("params.app == 'x", 1, 15, "unterminated string"),
    ("a # b", 1, 3, "unexpected character '#'"),
    ("size(params.regions", 1, 20, "unexpected end of expression"),
    ("params.replicas > 1 &&\n  )", 2, 3, "unexpected ')'"),
    ("${params.app} == 'x'", 1, 1, "unexpected character '$'"),
    ("let x = 1", 1, 5, "unexpected 'x'"),
])
def test_syntax_errors_have_positions(text, line, column, message):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    error = caught.value
    assert (error.line, error.column) == (line, column), error
    assert message in error.message and error.message.startswith("syntax error")
    assert error.text == text and f"at {line}:{column}" in str(error)
    lines = text.split("\n")
    assert error.offset == sum(len(x) + 1 for x in lines[: line - 1]) + column - 1


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("   ", "empty"),
    ("1 + " * (MAX_EXPRESSION_LENGTH // 4) + "1", "limit is"),
    ("(" * 40 + "1" + ")" * 40, "deeper than 32"),
])
def test_limits(text, message):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert message in caught.value.message


@pytest.mark.parametrize("text,message", [
    ("params.app + 1", "no overload of '+' for (string, int)"),
    ("params.replicas > 'a'", "no overload of '>' for (int, string)"),
    ("params.replicas + 1.0", "no overload of '+' for (int, double)"),
    ("params.missing == 1", "no such key: 'missing'"),
    ("steps.nope.outputs.x", "no such key: 'nope'"),
    ("1 / 0", "divide by zero"),
    ("params.regions[7]", "invalid argument"),
    ("9223372036854775807 + 1", "overflow"),
    ("int('three')", ""),
    ("nothere", "nothere"),
])
def test_evaluation_errors(text, message):
    compiled = compile_expression(text)
    with pytest.raises(ExpressionError) as caught:
        evaluate(compiled, ACTIVATION)
    assert message in caught.value.message, caught.value.message
    assert caught.value.text == text


def test_conditions_and_lists_are_typed():
    assert evaluate_condition(compile_expression("params.replicas > 1"), ACTIVATION) is True
    with pytest.raises(ExpressionError, match="must yield a bool, not int"):
        evaluate_condition(compile_expression("params.replicas"), ACTIVATION)
    assert evaluate_list(compile_expression("params.regions.filter(r, r != 'us-1')"), ACTIVATION) == ["eu-1", "eu-2"]
    with pytest.raises(ExpressionError, match="for_each must yield a list, not string"):
        evaluate_list(compile_expression("params.app"), ACTIVATION)


def test_activation_values_are_converted_both_ways():
    when = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    got = evaluate(compile_expression("[x.t, x.d, x.b, x.l, x.n, x.f]"),
                   {"x": {"t": when, "d": datetime.timedelta(minutes=5), "b": True, "l": (1, "a"), "n": None,
                          "f": 1.25}})
    assert got == [when, datetime.timedelta(minutes=5), True, [1, "a"], None, 1.25]
    assert evaluate(compile_expression("x.t < timestamp('2026-01-01T00:00:00Z')"), {"x": {"t": when}}) is True
    with pytest.raises(ExpressionError, match="cannot be used in an expression"):
        evaluate(compile_expression("x"), {"x": object()})
    with pytest.raises(ExpressionError, match="64-bit"):
        evaluate(compile_expression("x"), {"x": 2**70})
    with pytest.raises(ExpressionError, match="not a valid activation name"):
        evaluate(compile_expression("x"), {"not-valid": 1})


def test_compiled_expressions_are_reusable_and_isolated():
    compiled = compile_expression("params.replicas * 2")
    assert isinstance(compiled, Compiled) and compiled.text == "params.replicas * 2"
    assert [evaluate(compiled, {"params": {"replicas": n}}) for n in (1, 2, 3)] == [2, 4, 6]


def test_no_python_escape():
    # CEL has no attribute access into Python objects, no imports, no eval: these are just
    # unknown names or syntax errors, never code.
    for text in ("__import__('os').system('true')", "params.__class__", "''.__class__.__mro__"):
        try:
            compiled = compile_expression(text)
        except ExpressionError:
            continue
        with pytest.raises(ExpressionError):
            evaluate(compiled, ACTIVATION)


@pytest.mark.parametrize("text,references", [
    ("params.replicas > 1", [(("params", "replicas"), 1, 1)]),
    ("size(params.regions) > 0 && vars.x", [(("params", "regions"), 1, 6), (("vars", "x"), 1, 29)]),
    ("steps['create-db'].outputs.id", [(("steps", "create-db", "outputs", "id"), 1, 1)]),
    ("steps[params.s].outputs", [(("steps",), 1, 1), (("params", "s"), 1, 7)]),
    ("params.regions.map(r, r + item.suffix)", [(("params", "regions"), 1, 1), (("item", "suffix"), 1, 27)]),
    ("params.regions.exists(r, r == vars.region)", [(("params", "regions"), 1, 1), (("vars", "region"), 1, 31)]),
    ("has(params.x) && params.app.startsWith(workflow.name)",
     [(("params", "x"), 1, 5), (("params", "app"), 1, 18), (("workflow", "name"), 1, 40)]),
    ("item", [(("item",), 1, 1)]),
    ("[1, 2].all(x, x > 0)", []),
    ("{'a': 1}.a == 1", []),
])
def test_references(text, references):
    assert compile_expression(text).references == tuple(Reference(*r) for r in references)


@pytest.mark.parametrize("text,activation,message", [
    ("['ab'].map(a, a + a)" + ".map(a, a + a)" * 40, {}, "larger than"),  # doubles a string 40 times
    ("[l].map(x, x + x)" + ".map(x, x + x)" * 30, {"l": list(range(1000))}, "larger than"),
    ("l.map(a, l.map(b, l.map(c, 1)))", {"l": list(range(1000))}, "more than 50000 steps"),
    ("l.map(a, l.filter(b, b > a))", {"l": list(range(5000))}, "more than 50000 steps"),
])
def test_evaluation_is_bounded(text, activation, message):
    with pytest.raises(ExpressionError) as caught:
        evaluate(compile_expression(text), activation)
    assert message in caught.value.message


def test_large_inputs_within_the_budget_are_fine():
    assert evaluate(compile_expression("size(s) > 0 && s == s"), {"s": "x" * 1_000_000}) is True
    assert evaluate(compile_expression("l.map(x, x * 2)"), {"l": list(range(1000))})[-1] == 1998
    assert evaluate(compile_expression("size(l)"), {"l": list(range(100_000))}) == 100_000
