"""Workflow definitions: load YAML, validate it, build :class:`WorkflowDef`.

:func:`load_workflow` never raises for a bad definition: it returns ``(None, findings)``, each
finding with a stable ``WF-`` code, a JSON pointer, the YAML line and column and a hint, like
the Score validator (``innominatus.specs.validation``). A definition with no error findings
becomes a :class:`WorkflowDef` whose durations are seconds and whose conditions compiled.

Codes (documented in docs/workflows.md; never renumber or reuse one):
WF-10xx parsing and schema, WF-11xx structure (steps, dependencies, params, durations),
WF-12xx expressions and placeholders.
"""

from __future__ import annotations

import difflib
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, DocumentStartEvent
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from innominatus.engine.executors.shell import script_has_placeholder
from innominatus.engine.expressions import WORKFLOW_FIELDS, ExpressionError, compile_expression
from innominatus.engine.model import WORKFLOW_API_VERSION, ParamDef, RetryPolicy, StepDef, WorkflowDef
from innominatus.kit.errors import FieldViolation, InvalidArgument
from innominatus.kit.interpolation import PlaceholderError, find_placeholders
from innominatus.kit.findings import ERROR, Finding  # one finding shape for every validator

MAX_DOCUMENT_BYTES = 512 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 50
SCHEMA_PATH = Path(__file__).with_name("workflow_v1.schema.yaml")

# Step types the engine knows when the caller passes no registry: the executors of the
# durable engine plus the built-ins of the first (sequential) engine.
KNOWN_STEP_TYPES: tuple[str, ...] = (
    "shell", "http", "git", "policy", "approval", "wait", "workflow", "resource", "ansible",
    "kubectl", "terraform", "tofu", "helm",
    "workload.check", "resources.note", "render.kubernetes", "release.write",
    # The undeploy-app golden path's plan step (specs' PlanUndeploy; workflows.plan_undeploy).
    "undeploy.plan",
)

CODES = {
    "WF-1000": "the file is not valid YAML",
    "WF-1001": "the document does not match the workflow schema",
    "WF-1002": "unknown key",
    "WF-1003": "required key missing",
    "WF-1004": "value has the wrong type",
    "WF-1005": "value has the wrong format",
    "WF-1006": "unsupported apiVersion or kind",
    "WF-1010": "document too large",
    "WF-1011": "more than one YAML document",
    "WF-1012": "document nested too deeply or uses too many aliases",
    "WF-1013": "file is not UTF-8 text",
    "WF-1014": "document is not a mapping",
    "WF-1100": "duplicate step id",
    "WF-1101": "depends_on names an unknown step",
    "WF-1102": "dependency cycle",
    "WF-1103": "unknown step type",
    "WF-1104": "`type: workflow` without `uses`, or `uses` on another type",
    "WF-1105": "`type: approval` without `approval`, or `approval` on another type",
    "WF-1106": "`uses` names an unknown workflow (or the workflow itself)",
    "WF-1107": "invalid duration",
    "WF-1108": "a param's JSON schema is invalid",
    "WF-1109": "a param's default does not match its schema",
    "WF-1110": "both `when` and `if` on one step",
    "WF-1111": "key not allowed in a compensation (on_failure) step",
    "WF-1200": "expression is not valid CEL",
    "WF-1201": "malformed placeholder",
    "WF-1202": "unknown root, or a root not available here",
    "WF-1203": "unknown param",
    "WF-1204": "step is unknown or not upstream",
    "WF-1205": "unknown variable",
    "WF-1206": "unknown workflow field",
    "WF-1207": "incomplete step reference",
    "WF-1208": "placeholder in spec.variables (variables are constants)",
    "WF-1209": "placeholder in a shell step's script (values go in through env)",
}

# Where keys from other workflow formats belong in ours.
_KEY_HINTS = {
    "needs": "use depends_on: [...]",
    "dependsOn": "use depends_on: [...]",
    "condition": "use when: '<CEL expression>'",
    "inputs": "step inputs go under with:",
    "args": "step inputs go under with:",
    "parameters": "use params:",
    "vars": "use variables:",
    "name": "a step is named by its id:",
    "retries": "use retry: {max_attempts: N}",
    "compensate": "use on_failure: [steps]",
    "workflow": "use type: workflow with uses: <name>",
}

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)|((?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+))$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass
class WorkflowFinding(Finding):
    """A :class:`Finding` (the shape the Score validator uses) that also names its file."""

    file: str = ""

    def __str__(self) -> str:
        where = ":".join(str(x) for x in (self.file or "<workflow>", self.line, self.column) if x != 0)
        text = f"{where}: {self.severity} {self.code}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ParamsError(InvalidArgument):
    """Params given to a run that do not match the workflow's declaration. ``problems`` is
    ``[(param name, what is wrong), ...]``, every problem at once."""

    default_reason = "WORKFLOW_PARAMS_INVALID"

    def __init__(self, workflow: str, problems: list[tuple[str, str]]) -> None:
        lines = "; ".join(f"{name}: {problem}" for name, problem in problems)
        super().__init__(
            f"invalid params for workflow {workflow!r}: {lines}",
            violations=[FieldViolation(f"params.{name}", problem) for name, problem in problems],
        )
        self.problems = problems


# --- durations -------------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """``10s``/``5m``/``1h``/``1h30m``/``250ms``/``2d``/``"90"``/``90`` → seconds. ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"a duration is a number of seconds or a string like '10s', not {type(value).__name__}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration: write seconds (90) or units ms, s, m, h, d (1h30m)")
        if match.group(1) is not None:
            seconds = float(match.group(1))
        else:
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(match.group(2)))
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a duration: it must be a finite number of seconds, not negative")
    return seconds


# --- YAML helpers ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def workflow_schema() -> dict:
    """The published JSON schema of the format (workflow_v1.schema.yaml) as a dict."""
    schema = YAML(typ="safe", pure=True).load(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(workflow_schema())


def _pointer(path: Iterable[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


class _Locator:
    """Line and column (1-based) of nodes of the ruamel round-trip tree."""

    def __init__(self, tree: Any, text: str) -> None:
        self.tree = tree
        self.lines = text.splitlines()

    def node(self, path: list[Any]) -> tuple[Any, tuple[int, int]]:
        node = self.tree
        line, col = (node.lc.line + 1, node.lc.col + 1) if hasattr(node, "lc") else (1, 1)
        for part in path:
            try:
                if isinstance(node, CommentedMap) and part in node:
                    pos = node.lc.value(part)
                elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                    pos = node.lc.item(part)
                else:
                    return None, (line, col)
                line, col = pos[0] + 1, pos[1] + 1
                node = node[part]
            except (KeyError, IndexError, TypeError, AttributeError):
                return None, (line, col)
        return node, (line, col)

    def at(self, path: list[Any], key: bool = False) -> tuple[int, int]:
        if key and path:
            parent, where = self.node(path[:-1])
            if isinstance(parent, CommentedMap) and path[-1] in parent:
                try:
                    pos = parent.lc.key(path[-1])
                    return pos[0] + 1, pos[1] + 1
                except (KeyError, AttributeError):
                    return where
            return where
        return self.node(path)[1]

    def inside(self, path: list[Any], offset: int) -> tuple[int, int]:
        """Position of character ``offset`` of the string scalar at ``path`` (best effort: the
        scalar's own position when its layout is not simple)."""
        node, (line, col) = self.node(path)
        if not isinstance(node, str) or offset < 0:
            return line, col
        before = node[:offset]
        row, column = before.count("\n"), offset - (before.rfind("\n") + 1)
        if isinstance(node, LiteralScalarString):
            content = node.split("\n")
            first = next((i for i, x in enumerate(content) if x.strip()), 0)
            source_row = line + first  # `line` holds the `|` indicator; content starts below it
            if source_row < len(self.lines):
                src = self.lines[source_row]  # 0-based index of the first content line
                indent = len(src) - len(src.lstrip(" "))
                return line + 1 + row, indent + column + 1
            return line, col
        if isinstance(node, FoldedScalarString) or "\n" in node:
            return line, col
        quote = 1 if isinstance(node, (DoubleQuotedScalarString, SingleQuotedScalarString)) else 0
        return line, col + quote + column


# --- the parts a schema cannot check -----------------------------------------------------------


def _scan(text: str) -> WorkflowFinding | None:
    depth = aliases = documents = 0
    try:
        for event in YAML(typ="safe", pure=True).parse(io.StringIO(text)):
            if isinstance(event, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    line = event.start_mark.line + 1 if event.start_mark else 0
                    return WorkflowFinding("WF-1011", ERROR, "the file holds more than one YAML document", "", line, 1,
                                    "put each workflow in its own file")
            elif isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    m = event.start_mark
                    return WorkflowFinding("WF-1012", ERROR, f"the document is nested deeper than {MAX_DEPTH} levels", "",
                                    m.line + 1, m.column + 1, "flatten the structure")
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            elif isinstance(event, AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    m = event.start_mark
                    return WorkflowFinding("WF-1012", ERROR, f"the document uses more than {MAX_ALIASES} YAML aliases", "",
                                    m.line + 1, m.column + 1, "write the values out instead of using aliases")
    except MarkedYAMLError as exc:
        return _yaml_error(exc)
    except YAMLError as exc:
        return WorkflowFinding("WF-1000", ERROR, f"not valid YAML: {exc}", "", 0, 0, "check the YAML syntax")
    return None


def _yaml_error(exc: MarkedYAMLError) -> WorkflowFinding:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = exc.problem or exc.context or "syntax error"
    return WorkflowFinding("WF-1000", ERROR, f"not valid YAML: {problem}", "", line, col,
                    "check indentation and quoting around this position")


def _schema_finding(error: jsonschema.ValidationError, at: _Locator) -> WorkflowFinding:
    path = list(error.absolute_path)
    pointer = _pointer(path)
    where = pointer or "the document"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known] or ["?"]
        key = extra[0]
        hint = _did_you_mean(key, known) or _KEY_HINTS.get(key) or \
            (f"allowed keys here: {', '.join(known)}" if known else "remove it")
        line, col = at.at([*path, key], key=True)
        return WorkflowFinding("WF-1002", ERROR, f"unknown key {key!r} in {where}", _pointer([*path, key]), line, col, hint)
    line, col = at.at(path)
    if error.schema.get("title") == "duration" or (error.validator == "$ref" and "duration" in str(error.validator_value)):
        return WorkflowFinding("WF-1107", ERROR, f"{where}: {error.instance!r} is not a duration", pointer, line, col,
                        "write seconds (90) or a number with a unit: 250ms, 10s, 5m, 1h, 1h30m, 2d")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return WorkflowFinding("WF-1003", ERROR, f"{where} is missing the required key {missing!r}", pointer, line, col,
                        f"add `{missing}:` under {where}")
    if error.validator == "const" and path in (["apiVersion"], ["kind"]):
        expected = error.validator_value
        return WorkflowFinding("WF-1006", ERROR, f"{path[0]} {error.instance!r} is not supported", pointer, line, col,
                        f"use {path[0]}: {expected}")
    if error.validator == "type":
        hint = f"use a value of type {error.validator_value}"
        if path and path[-1] == "version" and isinstance(error.instance, (int, float)):
            hint = 'quote the version: version: "1.2.0"'
        elif path and path[-1] == "depends_on" and isinstance(error.instance, str):
            hint = f"write a list: depends_on: [{error.instance}]"
        return WorkflowFinding("WF-1004", ERROR, f"{where}: {error.message}", pointer, line, col, hint)
    if error.validator in ("pattern", "minLength", "maxLength", "enum", "minimum", "maximum", "format",
                           "propertyNames", "uniqueItems", "minItems", "exclusiveMinimum"):
        hint = "see docs/workflows.md for the allowed format"
        if error.validator == "pattern" and path and path[-1] in ("id", "depends_on") or (
                len(path) >= 2 and path[-2] == "depends_on"):
            hint = "a step id starts with a letter and holds letters, digits, '_' and '-'"
        elif error.validator == "pattern" and len(path) >= 2 and path[-2] in ("params", "variables", "outputs"):
            hint = "use letters, digits and '_' so expressions can name it (params.my_param)"
        return WorkflowFinding("WF-1005", ERROR, f"{where}: {error.message}", pointer, line, col, hint)
    return WorkflowFinding("WF-1001", ERROR, f"{where}: {error.message}", pointer, line, col, "")


# --- semantic checks -----------------------------------------------------------------------------



@dataclass
class _Scope:
    """What a placeholder or expression may name at one place of the definition."""

    params: Collection[str]
    variables: Collection[str]
    all_steps: Collection[str]
    visible: Collection[str] | None  # steps whose outputs are readable; None = no `steps` at all
    item: bool = False
    result: bool = False
    resources: bool = True

    def roots(self) -> list[str]:
        out = ["params", "workflow", "vars"]
        if self.visible is not None:
            out.append("steps")
        if self.resources:
            out.append("resources")
        if self.item:
            out.extend(("item", "index"))
        if self.result:
            out.append("result")
        return out


def _check_reference(parts: tuple[str, ...], scope: _Scope, what: str, step: str) -> tuple[str, str, str] | None:
    """(code, message, hint) when ``parts`` cannot be resolved in ``scope``; None when fine."""
    root = parts[0]
    allowed = scope.roots()
    if root not in allowed:
        if root in ("item", "index"):
            return "WF-1202", f"{what} uses {root!r} outside a for_each step", f"add for_each to the step, or remove {root}"
        if root == "result":
            return "WF-1202", f"{what} uses 'result', which only outputs: can read", \
                "read another step's outputs with steps.<id>.outputs.<key>"
        if root == "steps":
            return "WF-1202", f"{what} reads step outputs where no step has run yet", "use params, vars or workflow here"
        hint = _did_you_mean(root, allowed) or f"the roots here are: {', '.join(allowed)}"
        return "WF-1202", f"{what} names {root!r}, which is not a known root", hint
    if len(parts) < 2:
        return None
    key = parts[1]
    if root == "params" and key not in scope.params:
        declared = ", ".join(sorted(scope.params)) or "none"
        return "WF-1203", f"{what} names the param {key!r}, which the workflow does not declare", \
            _did_you_mean(key, scope.params) or f"declare it under spec.params (declared: {declared})"
    if root == "vars" and key not in scope.variables:
        declared = ", ".join(sorted(scope.variables)) or "none"
        return "WF-1205", f"{what} names the variable {key!r}, which spec.variables does not define", \
            _did_you_mean(key, scope.variables) or f"define it under spec.variables (defined: {declared})"
    if root == "workflow" and key not in WORKFLOW_FIELDS:
        return "WF-1206", f"{what} names workflow.{key}, which is not a workflow field", \
            _did_you_mean(key, WORKFLOW_FIELDS) or f"workflow fields: {', '.join(WORKFLOW_FIELDS)}"
    if root == "steps":
        assert scope.visible is not None
        if key not in scope.all_steps:
            return "WF-1204", f"{what} reads the outputs of {key!r}, which is not a step of this workflow", \
                _did_you_mean(key, scope.all_steps) or "name a step id"
        if key not in scope.visible:
            if key == step:
                return "WF-1204", f"{what} reads the outputs of its own step {key!r}", \
                    "outputs: maps ${result.<key>} to a name; other steps read it as steps.<id>.outputs.<name>"
            return "WF-1204", f"{what} reads the outputs of {key!r}, which step {step!r} does not depend on", \
                f"add {key!r} to the depends_on of {step!r}"
        if len(parts) >= 3 and parts[2] not in ("outputs", "state"):
            return "WF-1207", f"{what} reads steps.{key}.{parts[2]}; a step has only outputs and state", \
                f"write steps.{key}.outputs.{parts[2]}"
    return None


class _Checker:
    def __init__(self, document: dict, at: _Locator, step_types: Collection[str], workflows: Collection[str] | None,
                 file: str) -> None:
        self.doc = document
        self.at = at
        self.step_types = step_types
        self.workflows = workflows
        self.file = file
        self.findings: list[WorkflowFinding] = []
        spec = document["spec"]
        self.name = document["metadata"]["name"]
        self.params = list((spec.get("params") or {}).keys())
        self.variables = list((spec.get("variables") or {}).keys())
        self.steps: list[tuple[list[Any], dict]] = [(["spec", "steps", i], s) for i, s in enumerate(spec["steps"])]
        self.compensations: list[tuple[list[Any], dict, dict, int]] = [
            ([*path, "on_failure", j], c, s, j)
            for path, s in self.steps for j, c in enumerate(s.get("on_failure") or [])
        ]
        self.main_ids = [s["id"] for _, s in self.steps]
        self.all_ids = self.main_ids + [c["id"] for _, c, _, _ in self.compensations]
        self.compiled: dict[tuple, Any] = {}

    def add(self, code: str, message: str, path: list[Any], hint: str = "", *, key: bool = False,
            position: tuple[int, int] | None = None) -> None:
        line, col = position or self.at.at(path, key=key)
        self.findings.append(WorkflowFinding(code, ERROR, message, _pointer(path), line, col, hint, self.file))

    def run(self) -> list[WorkflowFinding]:
        self.check_ids()
        self.check_dependencies()
        cyclic = self.check_cycles()
        self.ancestors = self.compute_ancestors()
        self.check_params()
        self.check_variables()
        if self.doc["spec"].get("deadline") is not None:
            self.check_duration(["spec", "deadline"], self.doc["spec"]["deadline"], positive=True)
        self.check_concurrency_group()
        for path, step in self.steps:
            self.check_step(path, step, compensation=False)
            visible = None if cyclic else self.ancestors.get(step["id"], set())
            self.check_references(path, step, visible)
        for path, comp, owner, index in self.compensations:
            self.check_step(path, comp, compensation=True)
            visible = set() if cyclic else set(self.ancestors.get(owner["id"], set()))
            visible.add(owner["id"])
            visible.update(c["id"] for c in (owner.get("on_failure") or [])[:index])
            self.check_references(path, comp, visible)
        return self.findings

    # ids and the graph

    def check_ids(self) -> None:
        seen: dict[str, list[Any]] = {}
        for path, step in [(p, s) for p, s in self.steps] + [(p, c) for p, c, _, _ in self.compensations]:
            if step["id"] in seen:
                first = self.at.at([*seen[step["id"]], "id"])
                self.add("WF-1100", f"step id {step['id']!r} is used twice (first at line {first[0]})",
                         [*path, "id"], "give every step, compensation steps included, its own id")
            else:
                seen[step["id"]] = path

    def check_dependencies(self) -> None:
        for path, step in self.steps:
            for j, dep in enumerate(step.get("depends_on") or []):
                if dep == step["id"]:
                    self.add("WF-1102", f"step {dep!r} depends on itself", [*path, "depends_on", j],
                             "remove it from its own depends_on")
                elif dep not in self.main_ids:
                    hint = _did_you_mean(dep, self.main_ids)
                    if not hint and dep in self.all_ids:
                        hint = "compensation (on_failure) steps cannot be depended on"
                    self.add("WF-1101", f"step {step['id']!r} depends on {dep!r}, which is not a step of this workflow",
                             [*path, "depends_on", j], hint or f"steps: {', '.join(self.main_ids)}")

    def _edges(self) -> dict[str, list[str]]:
        edges: dict[str, list[str]] = {}
        for _, step in self.steps:
            edges.setdefault(step["id"], [])
            for dep in step.get("depends_on") or []:
                if dep in self.main_ids and dep != step["id"] and dep not in edges[step["id"]]:
                    edges[step["id"]].append(dep)
        return edges

    def check_cycles(self) -> bool:
        """Report each dependency cycle once, named in full, at the depends_on entry closing it."""
        edges = self._edges()
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        components: list[list[str]] = []
        counter = [0]

        def strongconnect(v: str) -> None:  # Tarjan, iterative enough for 64 levels of YAML
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            for w in edges.get(v, []):
                if w not in index:
                    strongconnect(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                components.append(component)

        for v in edges:
            if v not in index:
                strongconnect(v)
        order = {sid: i for i, sid in enumerate(self.main_ids)}
        found = False
        for component in components:
            if len(component) < 2:
                continue
            found = True
            members = set(component)
            start = min(component, key=lambda s: order[s])
            path = self._cycle_through(start, edges, members)
            cycle = " → ".join([*path, start])
            last = path[-1]
            step_index = order[last]
            dep_index = (self.steps[step_index][1].get("depends_on") or []).index(start)
            self.add("WF-1102", f"dependency cycle: {cycle} (each step depends on the next)",
                     ["spec", "steps", step_index, "depends_on", dep_index],
                     "a step cannot (transitively) depend on itself; remove one of these dependencies")
        return found

    @staticmethod
    def _cycle_through(start: str, edges: dict[str, list[str]], members: set[str]) -> list[str]:
        previous: dict[str, str | None] = {start: None}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in edges[v]:
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])  # type: ignore[arg-type]
                    return list(reversed(path))
                if w not in previous:
                    previous[w] = v
                    queue.append(w)
        return [start]

    def compute_ancestors(self) -> dict[str, set[str]]:
        edges = self._edges()
        memo: dict[str, set[str]] = {}

        def walk(v: str, active: set[str]) -> set[str]:
            if v in memo:
                return memo[v]
            out: set[str] = set()
            active = active | {v}
            for w in edges.get(v, []):
                if w in active:
                    continue
                out.add(w)
                out |= walk(w, active)
            memo[v] = out
            return out

        return {v: walk(v, set()) for v in edges}

    # params, variables, durations

    def check_params(self) -> None:
        for name, raw in (self.doc["spec"].get("params") or {}).items():
            path = ["spec", "params", name]
            schema = _param_schema(raw)
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                where = list(exc.path)
                self.add("WF-1108", f"param {name!r}: invalid JSON schema: {exc.message}", [*path, *where],
                         "see https://json-schema.org/understanding-json-schema/ for the keywords")
                continue
            if "default" in raw:
                errors = sorted(_param_validator(schema).iter_errors(raw["default"]), key=lambda e: list(e.path))
                if errors:
                    self.add("WF-1109", f"param {name!r}: the default {raw['default']!r} does not match the schema: "
                             f"{errors[0].message}", [*path, "default"], "fix the default or the schema")

    def check_variables(self, value: Any = None, path: list[Any] | None = None) -> None:
        """Variables are constants: the engine substitutes nothing in them."""
        if path is None:
            path, value = ["spec", "variables"], self.doc["spec"].get("variables") or {}
        if isinstance(value, dict):
            for k, v in value.items():
                self.check_variables(v, [*path, k])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_variables(v, [*path, i])
        elif isinstance(value, str):
            try:
                placeholders = find_placeholders(value)
            except PlaceholderError as exc:
                placeholders, offset = [None], exc.offset
            else:
                offset = placeholders[0].start if placeholders else -1
            if placeholders:
                self.add("WF-1208", f"variable {_pointer(path[2:])[1:]!r} holds a placeholder; variables are constants",
                         path, "write the value out, or use ${params.x} in the step's with: (write $$ for a literal $)",
                         position=self.at.inside(path, offset))

    def check_duration(self, path: list[Any], value: Any, positive: bool = False) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.add("WF-1107", str(exc), path, "write seconds (90) or a number with a unit: 250ms, 10s, 5m, 1h, 1h30m")
            return None
        if positive and seconds <= 0:
            self.add("WF-1107", f"{_pointer(path)} must be longer than 0 seconds", path, "give a positive duration")
            return None
        return seconds

    def check_concurrency_group(self) -> None:
        """The group is resolved when the run starts, before any step ran: only params, vars and
        workflow fields can be named (no steps, resources or items)."""
        group = self.doc["spec"].get("concurrency_group")
        if not isinstance(group, str):
            return
        scope = _Scope(self.params, self.variables, self.all_ids, None, resources=False)
        self.check_placeholders(["spec", "concurrency_group"], group, scope, "spec.concurrency_group", "")

    # steps

    def check_step(self, path: list[Any], step: dict, compensation: bool) -> None:
        sid, stype = step["id"], step["type"]
        if stype not in self.step_types:
            hint = _did_you_mean(stype, self.step_types) or f"known types: {', '.join(sorted(self.step_types))}"
            self.add("WF-1103", f"step {sid!r} has the unknown type {stype!r}", [*path, "type"], hint)
        if stype == "workflow" and "uses" not in step:
            self.add("WF-1104", f"step {sid!r} is of type workflow but does not say which: `uses` is missing", path,
                     "add uses: <workflow name>")
        elif "uses" in step and stype != "workflow":
            self.add("WF-1104", f"step {sid!r} has `uses` but is of type {stype!r}", [*path, "uses"], key=True,
                     hint="uses: is for steps of type workflow")
        if "uses" in step and stype == "workflow":
            if step["uses"] == self.name:
                self.add("WF-1106", f"step {sid!r} uses the workflow {self.name!r} itself", [*path, "uses"],
                         "a workflow cannot run itself")
            elif self.workflows is not None and step["uses"] not in self.workflows:
                self.add("WF-1106", f"step {sid!r} uses the workflow {step['uses']!r}, which the catalog does not hold",
                         [*path, "uses"], _did_you_mean(step["uses"], self.workflows) or
                         f"workflows: {', '.join(sorted(self.workflows)) or 'none'}")
        if stype == "approval" and "approval" not in step:
            self.add("WF-1105", f"step {sid!r} is an approval gate without `approval` settings", path,
                     "add approval: {approvers: [<role or user>], timeout: 24h}")
        elif "approval" in step and stype != "approval":
            self.add("WF-1105", f"step {sid!r} has `approval` settings but is of type {stype!r}", [*path, "approval"],
                     key=True, hint="approval: is for steps of type approval")
        if "when" in step and "if" in step:
            self.add("WF-1110", f"step {sid!r} has both `when` and `if`; `if` is another name for `when`",
                     [*path, "if"], key=True, hint="keep one of them (combine the conditions with &&)")
        if compensation:
            for key in ("depends_on", "on_failure"):
                if key in step:
                    self.add("WF-1111", f"compensation step {sid!r} cannot have {key!r}", [*path, key], key=True,
                             hint="compensation steps run one after the other in the order written")
        with_ = step.get("with")
        if stype == "shell" and isinstance(with_, dict) and isinstance(with_.get("script"), str) \
                and script_has_placeholder(with_["script"]):
            # The script runs under /bin/sh -c: a spliced value would be shell code (injection).
            self.add("WF-1209", f"step {sid!r} has a ${{...}} placeholder in its shell script; values spliced "
                     "into a script become shell code", [*path, "with", "script"],
                     'pass values to the script through `env:` and refer to them as "$NAME"')
        if "timeout" in step:
            self.check_duration([*path, "timeout"], step["timeout"], positive=True)
        for key in ("initial_interval", "max_interval"):
            if key in (step.get("retry") or {}):
                self.check_duration([*path, "retry", key], step["retry"][key])
        if "timeout" in (step.get("approval") or {}):
            self.check_duration([*path, "approval", "timeout"], step["approval"]["timeout"], positive=True)

    def check_references(self, path: list[Any], step: dict, visible: set[str] | None) -> None:
        sid = step["id"]
        fan_out = "for_each" in step
        visible_steps: Collection[str] = visible if visible is not None else set(self.all_ids)
        scope = _Scope(self.params, self.variables, self.all_ids, visible_steps, item=fan_out)
        for key in ("when", "if", "unless", "for_each"):
            value = step.get(key)
            if not isinstance(value, str):
                continue
            expr_scope = _Scope(self.params, self.variables, self.all_ids, visible_steps, item=fan_out and key != "for_each")
            self.check_expression([*path, key], value, expr_scope, f"step {sid!r} {key}", sid)
        self.check_placeholders([*path, "with"], step.get("with") or {}, scope, f"step {sid!r} with", sid)
        out_scope = _Scope(self.params, self.variables, self.all_ids, visible_steps, item=fan_out, result=True)
        for name, value in (step.get("outputs") or {}).items():
            if "${" in value:  # placeholders over the result; otherwise a CEL expression
                self.check_placeholders([*path, "outputs", name], value, out_scope, f"step {sid!r} outputs", sid)
            else:
                self.check_expression([*path, "outputs", name], value, out_scope, f"step {sid!r} outputs.{name}", sid)
        approval = {k: v for k, v in (step.get("approval") or {}).items() if k != "timeout"}
        self.check_placeholders([*path, "approval"], approval, scope, f"step {sid!r} approval", sid)

    def check_expression(self, path: list[Any], text: str, scope: _Scope, what: str, sid: str) -> None:
        try:
            compiled = compile_expression(text)
        except ExpressionError as exc:
            hint = "see docs/workflows.md#expressions for the CEL syntax"
            if "${" in text:
                hint = "expressions name values directly: write params.x, not ${params.x}"
            position = self.at.inside(path, exc.offset) if exc.offset >= 0 else None
            self.add("WF-1200", f"{what}: {exc.message}", path, hint, position=position)
            return
        self.compiled[tuple(path)] = compiled
        for ref in compiled.references:
            problem = _check_reference(ref.parts, scope, f"{what} expression", sid)
            if problem:
                code, message, hint = problem
                offset = sum(len(x) + 1 for x in text.split("\n")[: ref.line - 1]) + ref.column - 1
                self.add(code, message, path, hint, position=self.at.inside(path, offset))

    def check_placeholders(self, path: list[Any], value: Any, scope: _Scope, what: str, sid: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self.check_placeholders([*path, k], v, scope, what, sid)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.check_placeholders([*path, i], v, scope, what, sid)
        elif isinstance(value, str):
            try:
                placeholders = find_placeholders(value)
            except PlaceholderError as exc:
                self.add("WF-1201", f"{what}: {exc.message}", path,
                         "write ${root.key}, e.g. ${params.app}; write $$ for a literal $",
                         position=self.at.inside(path, exc.offset))
                return
            for placeholder in placeholders:
                problem = _check_reference(placeholder.parts, scope, f"{what} placeholder {placeholder.text}", sid)
                if problem:
                    code, message, hint = problem
                    self.add(code, message, path, hint, position=self.at.inside(path, placeholder.start))


def _param_schema(raw: dict) -> dict:
    """The JSON schema of a param: its mapping without the param-level keys."""
    return {k: v for k, v in raw.items()
            if k not in ("default", "description") and not (k == "required" and isinstance(v, bool))}


def _param_validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


# --- building the model ----------------------------------------------------------------------------


def _condition(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _build_step(step: dict, at: _Locator, path: list[Any]) -> StepDef:
    line, col = at.at(path)
    retry = step.get("retry") or {}
    defaults = RetryPolicy()
    policy = RetryPolicy(
        max_attempts=int(retry.get("max_attempts", defaults.max_attempts)),
        initial_interval=parse_duration(retry.get("initial_interval", defaults.initial_interval)),
        multiplier=float(retry.get("multiplier", defaults.multiplier)),
        max_interval=parse_duration(retry.get("max_interval", defaults.max_interval)),
        jitter=float(retry.get("jitter", defaults.jitter)),
        non_retryable=tuple(retry.get("non_retryable", defaults.non_retryable)),
    )
    approval = None
    if "approval" in step:
        approval = dict(step["approval"])
        if "timeout" in approval:
            approval["timeout"] = parse_duration(approval["timeout"])
    for_each = step.get("for_each")
    if isinstance(for_each, list):  # a literal list: the equivalent CEL list literal
        for_each = json.dumps(for_each, ensure_ascii=False)
    when = step["when"] if "when" in step else step.get("if")
    return StepDef(
        id=step["id"],
        type=step["type"],
        with_=dict(step.get("with") or {}),
        depends_on=tuple(step.get("depends_on") or ()),
        when=_condition(when),
        unless=_condition(step.get("unless")),
        retry=policy,
        timeout=parse_duration(step["timeout"]) if "timeout" in step else None,
        outputs=dict(step.get("outputs") or {}),
        for_each=for_each,
        uses=step.get("uses"),
        on_failure=tuple(_build_step(c, at, [*path, "on_failure", j]) for j, c in enumerate(step.get("on_failure") or [])),
        approval=approval,
        line=line,
        column=col,
    )


def _build(document: dict, at: _Locator, text: str) -> WorkflowDef:
    metadata, spec = document["metadata"], document["spec"]
    params = tuple(
        ParamDef(
            name=name,
            schema=_param_schema(raw),
            default=raw.get("default"),
            required=raw.get("required") is True,
            description=raw.get("description", ""),
        )
        for name, raw in (spec.get("params") or {}).items()
    )
    return WorkflowDef(
        name=metadata["name"],
        version=metadata["version"],
        steps=tuple(_build_step(s, at, ["spec", "steps", i]) for i, s in enumerate(spec["steps"])),
        params=params,
        variables=dict(spec.get("variables") or {}),
        concurrency=int(spec.get("concurrency", 0)),
        concurrency_group=spec.get("concurrency_group", ""),
        deadline=parse_duration(spec["deadline"]) if "deadline" in spec else None,
        description=metadata.get("description", ""),
        source=text,
        tags=tuple(metadata.get("tags") or ()),
        owner=metadata.get("owner", ""),
    )


# --- public API --------------------------------------------------------------------------------


def load_workflow(
    text: str | bytes,
    path: str | None = None,
    *,
    step_types: Collection[str] | None = None,
    workflows: Collection[str] | None = None,
) -> tuple[WorkflowDef | None, list[Finding]]:
    """Parse and validate one workflow definition.

    ``path`` names the file in the findings (``WorkflowFinding.file``); ``step_types`` is the
    executor registry (default :data:`KNOWN_STEP_TYPES`); ``workflows``, when given, is the
    catalog of workflow names ``uses`` may name. Returns the workflow and no error findings,
    or ``None`` and at least one error finding, sorted by position."""
    file = path or ""

    def fail(code: str, message: str, hint: str, line: int = 0, col: int = 0) -> tuple[None, list[Finding]]:
        return None, [WorkflowFinding(code, ERROR, message, "", line, col, hint, file)]

    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            return fail("WF-1010", f"the file is {len(text)} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                        "split the workflow into sub-workflows (type: workflow)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return fail("WF-1013", f"the file is not UTF-8: invalid byte at offset {exc.start}", "save the file as UTF-8")
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        return fail("WF-1010", f"the file is larger than {MAX_DOCUMENT_BYTES} bytes",
                    "split the workflow into sub-workflows (type: workflow)")
    hostile = _scan(text)
    if hostile is not None:
        hostile.file = file
        return None, [hostile]
    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        finding = _yaml_error(exc)
        finding.file = file
        return None, [finding]
    except YAMLError as exc:
        return fail("WF-1000", f"not valid YAML: {exc}", "check the YAML syntax")
    if not isinstance(tree, dict):
        return fail("WF-1014", "the document is not a mapping of keys to values",
                    f"a workflow starts with `apiVersion: {WORKFLOW_API_VERSION}`", 1, 1)
    document = json.loads(json.dumps(_plain(tree), default=str))
    at = _Locator(tree, text)
    errors = sorted(_validator().iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    findings: list[WorkflowFinding] = []
    for error in errors:
        finding = _schema_finding(error, at)
        finding.file = file
        findings.append(finding)
    if not findings:
        types = KNOWN_STEP_TYPES if step_types is None else tuple(step_types)
        findings = _Checker(document, at, types, workflows, file).run()
    findings = _dedupe(findings)
    findings.sort(key=lambda f: (f.line, f.column, f.code))
    if any(f.severity == ERROR for f in findings):
        return None, list(findings)
    return _build(document, at, text), list(findings)


def _dedupe(findings: list[WorkflowFinding]) -> list[WorkflowFinding]:
    seen, out = set(), []
    for f in findings:
        key = (f.code, f.line, f.column, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def bind_params(workflow: WorkflowDef, given: Mapping[str, Any] | None, *, coerce: bool = False) -> dict[str, Any]:
    """The params of a run: ``given`` plus defaults, each checked against its JSON schema.

    Unknown params, missing required params and values that do not match their schema are
    all reported at once in one :class:`ParamsError`. With ``coerce``, string values (from a
    command line ``--param k=v``) are read as YAML scalars when the schema wants another type."""
    given = dict(given or {})
    declared = {p.name: p for p in workflow.params}
    problems: list[tuple[str, str]] = []
    for name in given:
        if name not in declared:
            hint = _did_you_mean(name, declared)
            known = ", ".join(declared) or "none"
            problems.append((name, f"unknown param{'; ' + hint if hint else ''} (declared: {known})"))
    bound: dict[str, Any] = {}
    for name, param in declared.items():
        if name in given:
            value = given[name]
            if coerce and isinstance(value, str):
                value = _coerce(value, param.schema)
        elif param.default is not None:
            value = param.default
        elif param.required:
            problems.append((name, "required param is missing"))
            continue
        else:
            continue
        errors = sorted(_param_validator(param.schema).iter_errors(value), key=lambda e: list(e.path))
        for error in errors:
            where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            problems.append((f"{name}{where}", error.message))
        bound[name] = value
    if problems:
        raise ParamsError(workflow.name, problems)
    return bound


def _coerce(value: str, schema: dict) -> Any:
    wanted = schema.get("type")
    types = set(wanted) if isinstance(wanted, list) else {wanted}
    if "string" in types or wanted is None:
        return value
    try:
        parsed = YAML(typ="safe", pure=True).load(value)
    except YAMLError:
        return value
    return value if parsed is None and value.strip() not in ("null", "~", "") else parsed
