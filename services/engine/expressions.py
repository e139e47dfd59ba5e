"""The workflow expression language: CEL (https://cel.dev), evaluated by ``cel-python``.

Conditions (``when``/``if``/``unless``) and fan-out lists (``for_each``) are CEL expressions.
CEL has no loops, no assignment, no I/O and no access to Python objects, and ``cel-python``
interprets the parse tree itself (it never hands the text to Python's ``eval``/``exec``), so
an expression written by a workflow author cannot do anything but compute a value.

Evaluation is bounded: an expression is at most :data:`MAX_EXPRESSION_LENGTH` characters and
:data:`MAX_NESTING` brackets deep, CEL's only iteration is the comprehension macros over lists
and maps that already exist, one evaluation may visit at most :data:`MAX_EVALUATION_STEPS`
nodes and build at most :data:`MAX_EVALUATION_SIZE` characters/elements, and regular
expressions (``matches``) run on RE2 (linear time).

Activation roots (what an expression can name):

``params``     the run's bound parameters
``steps``      ``steps.<id>.outputs.<key>`` and ``steps.<id>.state`` of upstream steps
``workflow``   ``workflow.name``, ``workflow.run_id``, ... (see :data:`WORKFLOW_FIELDS`)
``vars``       ``spec.variables``
``resources``  ``resources.<name>.<key>``: outputs of the resources the workload claims
``item``       the current element, inside a ``for_each`` step (``index``: its position)
"""

from __future__ import annotations

import datetime
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import celpy
import celpy.celparser
import celpy.celtypes as ct
import lark
import lark.exceptions
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, CELUnsupportedError, Evaluator

MAX_EXPRESSION_LENGTH = 4096
MAX_NESTING = 32
# Budgets of one evaluation: parse-tree nodes visited (comprehensions visit their body once per
# element), and characters/elements of the strings, bytes, lists and maps it produces. They stop
# expressions such as `[s].map(a, a + a).map(a, a + a)...` that double a value at every stage.
MAX_EVALUATION_STEPS = 50_000
MAX_EVALUATION_SIZE = 4_000_000

ROOTS = ("params", "steps", "workflow", "vars", "resources", "item", "index")
# What the scheduler puts under `workflow` (the definition checks ${workflow.x} against it).
WORKFLOW_FIELDS = ("name", "version", "run_id", "application", "environment", "creator")
# Comprehension macros: their first argument names a variable bound in the rest.
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class ExpressionError(ValueError):
    """A CEL expression that does not compile or cannot be evaluated.

    ``line`` and ``column`` are 1-based within the expression text (0 when unknown);
    ``offset`` is the 0-based character offset they denote (-1 when unknown)."""

    def __init__(self, message: str, text: str = "", line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.line = line
        self.column = column
        self.offset = _offset(text, line, column)

    def __str__(self) -> str:
        if self.line:
            return f"{self.message} (at {self.line}:{self.column} in {self.text!r})"
        return self.message


@dataclass(frozen=True)
class Reference:
    """A variable path an expression reads, e.g. ``params.replicas`` → ``("params", "replicas")``.

    Only the statically known prefix is kept: ``steps['build'].outputs[k]`` → ``("steps", "build",
    "outputs")``. ``line``/``column`` are 1-based within the expression."""

    parts: tuple[str, ...]
    line: int
    column: int


@dataclass(frozen=True)
class Compiled:
    text: str
    references: tuple[Reference, ...]
    _program: Any = field(repr=False, compare=False)


class _BudgetExceeded(Exception):
    pass


class _Budget:
    def __init__(self) -> None:
        self.steps = MAX_EVALUATION_STEPS
        self.size = MAX_EVALUATION_SIZE
        self.counted: dict[int, Any] = {}  # id -> object, kept alive so ids are not reused


class _BoundedEvaluator(Evaluator):
    """celpy's tree-walking evaluator, with the step and size budgets of one evaluation."""

    def __init__(self, ast: lark.Tree, activation: Any, budget: _Budget | None = None) -> None:
        super().__init__(ast, activation=activation)
        self.budget = budget or _Budget()

    def _visit_tree(self, tree: lark.Tree) -> Any:  # lark's Interpreter sends every node through here
        budget = self.budget
        budget.steps -= 1
        if budget.steps < 0:
            raise _BudgetExceeded(f"the evaluation took more than {MAX_EVALUATION_STEPS} steps")
        result = super()._visit_tree(tree)
        if isinstance(result, (str, bytes, list, dict)) and id(result) not in budget.counted:
            budget.counted[id(result)] = result
            budget.size -= len(result)
            if budget.size < 0:
                raise _BudgetExceeded(f"the evaluation built values larger than {MAX_EVALUATION_SIZE} elements")
        return result

    def sub_evaluator(self, ast: lark.Tree) -> Evaluator:
        return _BoundedEvaluator(ast, self.activation, self.budget)


class _BoundedRunner(celpy.InterpretedRunner):
    def evaluate(self, context: Any) -> Any:
        return _BoundedEvaluator(self.ast, self.new_activation()).evaluate(context)


_lock = threading.Lock()
_environment: celpy.Environment | None = None


def _env() -> celpy.Environment:
    global _environment
    if _environment is None:
        _environment = celpy.Environment(runner_class=_BoundedRunner)
    return _environment


def _offset(text: str, line: int, column: int) -> int:
    if not line or not text:
        return -1
    lines = text.split("\n")
    if line > len(lines):
        return -1
    return sum(len(x) + 1 for x in lines[: line - 1]) + max(column - 1, 0)


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _check_nesting(text: str) -> None:
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            i += 2
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                line, column = _position(text, i)
                raise ExpressionError(f"the expression nests brackets deeper than {MAX_NESTING} levels", text, line, column)
        elif ch in ")]}":
            depth -= 1
        i += 1


def _syntax_message(text: str) -> str:
    """What the parser tripped over, in words (celpy keeps only a caret picture)."""
    parser = getattr(celpy.celparser.CELParser, "CEL_PARSER", None)
    try:
        if parser is not None:
            parser.parse(text)
    except lark.exceptions.UnexpectedToken as exc:
        if exc.token.type == "$END":
            return "syntax error: unexpected end of expression"
        return f"syntax error: unexpected {str(exc.token)!r}"
    except lark.exceptions.UnexpectedCharacters as exc:
        if exc.char in "\"'":
            return "syntax error: unterminated string"
        return f"syntax error: unexpected character {exc.char!r}"
    except Exception:  # noqa: BLE001 - only the wording depends on it
        pass
    return "syntax error"


def compile_expression(text: str) -> Compiled:
    """Parse ``text`` as CEL. Raises :class:`ExpressionError` (with line and column) when it is
    not a valid expression."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("the expression is empty", text)
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}", text)
    _check_nesting(text)
    try:
        with _lock:
            env = _env()
            ast = env.compile(text)
            program = env.program(ast)
    except CELParseError as exc:
        line, column = exc.line or 0, exc.column or 0
        if not line:  # a lexer error without a position: point at the end
            line, column = _position(text, len(text))
        with _lock:
            message = _syntax_message(text)
        if message.endswith("end of expression"):
            line, column = _position(text, len(text.rstrip()))
        raise ExpressionError(message, text, line, column) from None
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply", text) from None
    return Compiled(text, tuple(_references(ast)), program)


# --- static analysis: which variables does an expression read? ------------------------------


def _ident(tree: lark.Tree) -> lark.Token | None:
    """The IDENT token of an ``expr`` that is a bare identifier (a macro's variable)."""
    node = tree
    while isinstance(node, lark.Tree):
        if node.data == "ident":
            return node.children[0]
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return None


def _string_literal(tree: lark.Tree) -> str | None:
    node = tree
    while isinstance(node, lark.Tree):
        if node.data == "literal":
            token = node.children[0]
            if token.type == "STRING_LIT" and not token.startswith(("r", "R")):
                raw = str(token)[1:-1]
                return raw if "\\" not in raw else None
            return None
        if len(node.children) != 1:
            return None
        node = node.children[0]
    return None


def _chain(member: lark.Tree) -> tuple[list[str], lark.Token | None, list[lark.Tree]]:
    """Flatten ``a.b['c'].d`` into (["a", "b", "c", "d"], token of a, [other subtrees to visit]).

    The path stops at the first part that is not static (a computed index or a method call)."""
    suffix: list[str | None] = []
    extra: list[lark.Tree] = []
    node = member
    while True:
        if node.data == "member" and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
            node = node.children[0]
        elif node.data == "member_dot":
            suffix.append(str(node.children[1]))
            node = node.children[0]
        elif node.data == "member_index":
            key = _string_literal(node.children[1])
            suffix.append(key)
            if key is None:
                extra.append(node.children[1])
            node = node.children[0]
        elif node.data == "primary":
            child = node.children[0]
            if isinstance(child, lark.Tree) and child.data in ("ident", "dot_ident"):
                token = child.children[0]
                parts = [str(token)]
                for part in reversed(suffix):
                    if part is None:
                        break
                    parts.append(part)
                return parts, token, extra
            extra.append(child)
            return [], None, extra
        else:
            extra.append(node)
            return [], None, extra


def _references(ast: lark.Tree) -> list[Reference]:
    out: list[Reference] = []

    def visit(node: Any, bound: frozenset[str]) -> None:
        if not isinstance(node, lark.Tree):
            return
        if node.data == "member" and len(node.children) == 1 and isinstance(node.children[0], lark.Tree) \
                and node.children[0].data in ("member_dot", "member_index", "primary"):
            parts, token, extra = _chain(node)
            if token is not None and parts[0] not in bound:
                out.append(Reference(tuple(parts), token.line, token.column))
            for sub in extra:
                visit(sub, bound)
            return
        if node.data == "member_dot_arg":
            target, method = node.children[0], str(node.children[1])
            args = node.children[2] if len(node.children) > 2 else None
            visit(target, bound)
            if method in _MACROS and isinstance(args, lark.Tree) and args.children:
                variable = _ident(args.children[0])
                inner = bound | {str(variable)} if variable is not None else bound
                for sub in args.children[1:]:
                    visit(sub, inner)
            else:
                visit(args, bound)
            return
        if node.data in ("ident_arg", "dot_ident_arg"):
            for child in node.children[1:]:
                visit(child, bound)
            return
        if node.data == "member_object":
            for child in node.children[1:]:
                visit(child, bound)
            return
        if node.data == "fieldinits":  # IDENT ":" expr pairs: only the expressions read variables
            for child in node.children:
                visit(child, bound)
            return
        if node.data in ("ident", "dot_ident"):
            token = node.children[0]
            if str(token) not in bound:
                out.append(Reference((str(token),), token.line, token.column))
            return
        for child in node.children:
            visit(child, bound)

    visit(ast, frozenset())
    return out


# --- evaluation ------------------------------------------------------------------------------


def to_cel(value: Any) -> Any:
    """Python (JSON-like) value → CEL value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ExpressionError(f"the integer {value} does not fit CEL's 64-bit int")
        return ct.IntType(value)
    if isinstance(value, float):
        return ct.DoubleType(value)
    if isinstance(value, str):
        return ct.StringType(value)
    if isinstance(value, (bytes, bytearray)):
        return ct.BytesType(bytes(value))
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return ct.TimestampType(value)
    if isinstance(value, datetime.timedelta):
        return ct.DurationType(value)
    if isinstance(value, Mapping):
        out = ct.MapType()
        for k, v in value.items():
            if not isinstance(k, (str, int, bool)):
                raise ExpressionError(f"a map key must be a string, integer or boolean, not {type(k).__name__}")
            out[to_cel(k)] = to_cel(v)
        return out
    if isinstance(value, (list, tuple)):
        return ct.ListType([to_cel(v) for v in value])
    raise ExpressionError(f"a value of type {type(value).__name__} cannot be used in an expression")


def from_cel(value: Any) -> Any:
    """CEL value → plain Python (bool, int, float, str, bytes, list, dict, None, datetime, timedelta)."""
    if isinstance(value, CELEvalError):
        raise value
    if value is None or isinstance(value, ct.NullType):
        return None
    if isinstance(value, ct.BoolType):
        return bool(value)
    if isinstance(value, (ct.IntType, ct.UintType)):
        return int(value)
    if isinstance(value, ct.DoubleType):
        return float(value)
    if isinstance(value, ct.StringType):
        return str(value)
    if isinstance(value, ct.BytesType):
        return bytes(value)
    if isinstance(value, ct.TimestampType):
        return datetime.datetime.fromtimestamp(value.timestamp(), tz=datetime.timezone.utc)
    if isinstance(value, ct.DurationType):
        return datetime.timedelta(seconds=value.total_seconds())
    if isinstance(value, ct.MapType):
        return {from_cel(k): from_cel(v) for k, v in value.items()}
    if isinstance(value, (ct.ListType, list, tuple)):
        return [from_cel(v) for v in value]
    if isinstance(value, dict):
        return {from_cel(k): from_cel(v) for k, v in value.items()}
    if isinstance(value, (ct.TypeType, type)):
        return _type_name(value)
    if isinstance(value, (bool, int, float, str, bytes)):
        return value
    raise ExpressionError(f"the expression produced a value of type {type(value).__name__}, which has no plain form")


_TYPE_NAMES = {
    "BoolType": "bool", "IntType": "int", "UintType": "uint", "DoubleType": "double", "StringType": "string",
    "BytesType": "bytes", "ListType": "list", "MapType": "map", "NullType": "null_type", "NoneType": "null_type",
    "TimestampType": "google.protobuf.Timestamp", "DurationType": "google.protobuf.Duration", "TypeType": "type",
}
_OPERATORS = {
    "addition_add": "+", "addition_sub": "-", "multiplication_mul": "*", "multiplication_div": "/",
    "multiplication_mod": "%", "relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=",
    "relation_eq": "==", "relation_ne": "!=", "relation_in": "in", "unary_neg": "-", "unary_not": "!",
}


def _type_name(value: Any) -> str:
    name = getattr(value, "__name__", None) or type(value).__name__
    return _TYPE_NAMES.get(name, name)


def _eval_message(exc: CELEvalError) -> str:
    message = str(exc.args[0]) if exc.args else "evaluation failed"
    match = re.match(r"found no matching overload for (?:Token\('RULE', '(\w+)'\)|'?(\w+)'?) applied to '\((.*)\)'", message)
    if match:
        operator = match.group(1) or match.group(2)
        types = [_TYPE_NAMES.get(t, t) for t in re.findall(r"celtypes\.(\w+)|<class '(?:builtins\.)?(\w+)'>", match.group(3))
                 for t in t if t]
        shown = _OPERATORS.get(operator, operator)
        return f"type error: no overload of {shown!r} for ({', '.join(types)})"
    if message == "invalid_argument":
        return "invalid argument (an index out of range or a value of the wrong kind)"
    if message.startswith("no such member"):
        return message.replace("no such member in mapping", "no such key")
    return message


def evaluate(compiled: Compiled, activation: Mapping[str, Any]) -> Any:
    """Evaluate ``compiled`` with the given roots (plain Python values) and return a plain
    Python value. Raises :class:`ExpressionError` for a missing key, a type error, an
    overflow, a division by zero, ..."""
    context = {}
    for name, value in activation.items():
        if not isinstance(name, str) or not re.fullmatch(r"[_a-zA-Z][_a-zA-Z0-9]*", name):
            raise ExpressionError(f"{name!r} is not a valid activation name")
        context[name] = to_cel(value)
    try:
        result = compiled._program.evaluate(context)
        return from_cel(result)
    except CELEvalError as exc:
        raise ExpressionError(_eval_message(exc), compiled.text, getattr(exc, "line", 0) or 0,
                              getattr(exc, "column", 0) or 0) from None
    except CELUnsupportedError as exc:
        raise ExpressionError(f"unsupported: {exc}", compiled.text) from None
    except _BudgetExceeded as exc:
        raise ExpressionError(str(exc), compiled.text) from None
    except RecursionError:
        raise ExpressionError("the expression recursed too deeply", compiled.text) from None
    except ExpressionError:
        raise
    except (TypeError, ValueError, KeyError, ArithmeticError, IndexError) as exc:
        raise ExpressionError(f"evaluation failed: {exc}", compiled.text) from None


def evaluate_condition(compiled: Compiled, activation: Mapping[str, Any]) -> bool:
    """Evaluate a ``when``/``if``/``unless`` condition; anything but a boolean is an error."""
    value = evaluate(compiled, activation)
    if not isinstance(value, bool):
        raise ExpressionError(f"a condition must yield a bool, not {_python_type(value)} ({value!r})", compiled.text)
    return value


def evaluate_list(compiled: Compiled, activation: Mapping[str, Any]) -> list[Any]:
    """Evaluate a ``for_each`` expression; anything but a list is an error."""
    value = evaluate(compiled, activation)
    if not isinstance(value, list):
        raise ExpressionError(f"for_each must yield a list, not {_python_type(value)} ({value!r})", compiled.text)
    return value


def _python_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "double", str: "string", dict: "map", list: "list",
            type(None): "null", bytes: "bytes"}.get(type(value), type(value).__name__)
