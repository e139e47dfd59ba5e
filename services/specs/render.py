"""Render preview: a Score workload with every placeholder resolved from given resource outputs.

``innominatus render`` (offline) and the specs service use :func:`render_workload` so users see
exactly what their containers will receive. Substitution follows score-go through the one engine
in :mod:`innominatus.kit.interpolation`:

- roots ``metadata`` (the workload's metadata) and ``resources`` (the outputs given per resource
  name); ``$$`` is a literal ``$``; ``\\.`` escapes a dot in a key; non-string values are
  JSON-encoded as score-go encodes them;
- substituted: container ``variables``, file ``content`` (unless ``noExpand: true``), volume
  ``source`` and resource ``params`` (recursively); never ``binaryContent``, file ``source`` paths,
  keys, or anything else;
- in a volume ``source``, ``${resources.NAME}`` (no output key) stands for the volume resource
  itself and resolves to its ``source`` output, as score-compose mounts it;
- resource params may use other resources' outputs; they are resolved in dependency order and a
  cycle is a problem naming it.

Every problem is collected (not only the first) and raised together as one :class:`RenderError`,
each with the JSON pointer of the value holding the placeholder.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from innominatus.kit.interpolation import MissingKey, PlaceholderError, lookup, substitute
from innominatus.specs.checks import resource_order

__all__ = ["OutputsError", "RenderError", "RenderProblem", "load_outputs", "make_resolver", "position_of", "render_workload"]


@dataclass(frozen=True)
class RenderProblem:
    pointer: str  # JSON pointer of the value holding the placeholder, e.g. /containers/web/variables/DB
    message: str  # names the placeholder and says what is missing
    placeholder: str = ""  # as written, e.g. ${resources.db.hostname}

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class RenderError(ValueError):
    """Placeholders that cannot be resolved; ``problems`` lists every one of them."""

    def __init__(self, problems: list[RenderProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} rendering the workload:\n{lines}")


class OutputsError(ValueError):
    """The outputs file is not a map of resource names to maps of outputs."""


# -- helpers ------------------------------------------------------------------------------


def _pointer(path: tuple) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _entries(value: Any) -> Iterator[tuple[Any, Any]]:
    """(key, item) of a map, or (index, item) of the deprecated list form of files/volumes."""
    if isinstance(value, dict):
        yield from value.items()
    elif isinstance(value, list):
        yield from enumerate(value)


def _names(keys) -> str:
    return ", ".join(sorted(map(str, keys))) or "none"


def _missing(prefix: str, exc: MissingKey, kind: str) -> str:
    where = ".".join([prefix, *exc.walked])
    if exc.available is not None:
        noun = kind if not exc.walked else "key"
        plural = "outputs" if noun == "output" else "keys"
        close = difflib.get_close_matches(exc.key, exc.available, n=1)
        guess = f"; did you mean '{close[0]}'?" if close else ""
        return f"{where} has no {noun} '{exc.key}' ({plural}: {_names(exc.available)}){guess}"
    if exc.message.endswith("is a list"):
        return f"{where} is a list: placeholders look up map keys only, so '{exc.key}' cannot be found in it"
    return f"{where} is not a map, so it has no key '{exc.key}'"


class _Renderer:
    def __init__(self, document: dict, outputs: dict[str, Any]) -> None:
        self.metadata = _map(document.get("metadata"))
        self.declared = _map(document.get("resources"))
        self.outputs = outputs
        self.problems: list[RenderProblem] = []

    def resolver(self, volume_source: bool = False) -> Callable[[tuple[str, ...]], Any]:
        def resolve(parts: tuple[str, ...]) -> Any:
            root = parts[0]
            if root == "metadata":
                if len(parts) < 2:
                    raise PlaceholderError("a metadata placeholder needs a key, e.g. ${metadata.name}")
                try:
                    return lookup(self.metadata, parts[1:])
                except MissingKey as exc:
                    raise PlaceholderError(_missing("metadata", exc, "key")) from None
            if root == "resources":
                return self._resource(parts, volume_source)
            raise PlaceholderError(f"unknown placeholder root '{root}': placeholders start with 'metadata.' or "
                                   "'resources.' (write '$${' for a literal '${')")

        return resolve

    def _resource(self, parts: tuple[str, ...], volume_source: bool) -> Any:
        if len(parts) < 2:
            raise PlaceholderError("a resources placeholder needs a resource name and an output, "
                                   "e.g. ${resources.db.host}")
        name = parts[1]
        if name not in self.declared:
            raise PlaceholderError(f"resources.{name} is not declared under `resources:` in this workload "
                                   f"(declared: {_names(self.declared)})")
        if name not in self.outputs:
            raise PlaceholderError(f"no outputs were given for resources.{name}: add `{name}:` with its outputs "
                                   "to the outputs file")
        given = self.outputs[name]
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise PlaceholderError(f"the outputs given for resources.{name} are not a map of output names to values")
        keys = parts[2:]
        if not keys:
            if not volume_source:
                raise PlaceholderError(f"${{resources.{name}}} names the resource but no output: write "
                                       f"${{resources.{name}.OUTPUT}} (outputs: {_names(given)})")
            keys = ("source",)  # a volume source names the volume resource: mount its `source` output
        try:
            return lookup(given, keys)
        except MissingKey as exc:
            raise PlaceholderError(_missing(f"resources.{name}", exc, "output")) from None

    def text(self, value: str, path: tuple, volume_source: bool = False) -> str:
        errors: list[PlaceholderError] = []
        result = substitute(value, self.resolver(volume_source), errors)
        for error in errors:
            message = error.message
            if error.placeholder and error.placeholder not in message:
                message = f"cannot resolve {error.placeholder}: {message}"
            self.problems.append(RenderProblem(_pointer(path), message, error.placeholder))
        return result

    def tree(self, value: Any, path: tuple) -> Any:
        if isinstance(value, str):
            return self.text(value, path)
        if isinstance(value, dict):
            return {key: self.tree(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.tree(item, (*path, i)) for i, item in enumerate(value)]
        return value


def make_resolver(document: dict, outputs: dict[str, Any] | None = None,
                  volume_source: bool = False) -> Callable[[tuple[str, ...]], Any]:
    """The resolver :func:`render_workload` uses, for :func:`~innominatus.kit.interpolation.substitute`:
    roots ``metadata`` and ``resources``; raises :class:`PlaceholderError` saying what is missing."""
    return _Renderer(document if isinstance(document, dict) else {}, outputs or {}).resolver(volume_source)


def render_workload(document: dict, outputs: dict[str, dict] | None = None) -> dict:
    """The workload ``document`` (a plain dict, as validated) with every placeholder resolved.

    ``outputs`` maps each resource name to its outputs, e.g. ``{"db": {"host": "db.internal",
    "port": 5432}}``. Returns a new document; the given one is not modified. Raises
    :class:`RenderError` listing every problem found."""
    if not isinstance(document, dict):
        raise RenderError([RenderProblem("", "the workload is not a map of keys to values")])
    outputs = outputs or {}
    if not isinstance(outputs, dict):
        raise RenderError([RenderProblem("", "the outputs are not a map of resource names to outputs")])
    rendered = copy.deepcopy(document)
    renderer = _Renderer(document, outputs)

    for cname, container in _map(rendered.get("containers")).items():
        if not isinstance(container, dict):
            continue
        base = ("containers", cname)
        variables = container.get("variables")
        if isinstance(variables, dict):
            container["variables"] = {key: renderer.tree(value, (*base, "variables", key))
                                      for key, value in variables.items()}
        for key, spec in _entries(container.get("files")):
            if isinstance(spec, dict) and isinstance(spec.get("content"), str) and spec.get("noExpand") is not True:
                spec["content"] = renderer.text(spec["content"], (*base, "files", key, "content"))
        for key, spec in _entries(container.get("volumes")):
            if isinstance(spec, dict) and isinstance(spec.get("source"), str):
                spec["source"] = renderer.text(spec["source"], (*base, "volumes", key, "source"), volume_source=True)

    resources = _map(rendered.get("resources"))
    try:
        order = [name for name in resource_order(document) if name in resources]
    except ValueError as exc:  # a cycle: report it, still resolve what can be resolved
        first = sorted(resources)[0] if resources else ""
        cycle = getattr(exc, "cycle", None)
        if cycle:
            first = cycle[0]
        renderer.problems.append(RenderProblem(_pointer(("resources", first, "params")),
                                               f"resources depend on each other's outputs in a cycle: "
                                               f"{str(exc).split(': ', 1)[-1]}"))
        order = []
    order += [name for name in resources if name not in order]
    # Params are resolved dependencies first: a provisioner runs after those whose outputs it uses.
    for name in order:
        resource = resources[name]
        if isinstance(resource, dict) and "params" in resource:
            resource["params"] = renderer.tree(resource["params"], ("resources", name, "params"))

    if renderer.problems:
        raise RenderError(renderer.problems)
    return rendered


# -- the outputs file and positions, for the CLI ---------------------------------------------


def load_outputs(text: str) -> dict[str, dict]:
    """Parse an outputs file (YAML or JSON): a map of resource names to maps of outputs, e.g.
    ``db: {host: db.internal, port: 5432}``. Raises :class:`OutputsError` saying what is wrong."""
    from ruamel.yaml import YAML  # noqa: PLC0415
    from ruamel.yaml.error import MarkedYAMLError, YAMLError  # noqa: PLC0415

    try:
        data = YAML(typ="safe", pure=True).load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise OutputsError(f"not valid YAML{where}: {exc.problem or exc.context or 'syntax error'}") from None
    except YAMLError as exc:
        raise OutputsError(f"not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OutputsError("expected a map of resource names to their outputs, e.g. `db: {host: db.internal, "
                           f"port: 5432}}`, not a {type(data).__name__}")
    outputs: dict[str, dict] = {}
    for name, values in data.items():
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise OutputsError(f"the outputs of {name!r} must be a map of output names to values, e.g. "
                               f"`{name}: {{host: example.internal}}`, not a {type(values).__name__}")
        outputs[str(name)] = json.loads(json.dumps(values, default=str))
    return outputs


def position_of(text: str, pointer: str) -> tuple[int, int]:
    """1-based line and column of the value at ``pointer`` in the YAML ``text`` ((0, 0) when it
    cannot be found, e.g. for a deprecated list form that validation upgraded)."""
    from ruamel.yaml import YAML  # noqa: PLC0415
    from ruamel.yaml.comments import CommentedMap, CommentedSeq  # noqa: PLC0415

    try:
        node = YAML(typ="rt", pure=True).load(io.StringIO(text))
    except Exception:
        return 0, 0
    line = column = 0
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]] if pointer else []
    for part in parts:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line, column = node.lc.value(part)
                node = node[part]
            elif isinstance(node, CommentedSeq) and part.isdigit() and int(part) < len(node):
                line, column = node.lc.item(int(part))
                node = node[int(part)]
            else:
                return 0, 0
        except (AttributeError, KeyError, IndexError, TypeError):
            return 0, 0
        line, column = line + 1, column + 1
    return line, column
