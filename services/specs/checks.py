"""Semantic checks on Score workloads: what the schema cannot say.

:func:`semantic_findings` runs on a document that already passed the schema, with the deprecated
list forms of ``files`` and ``volumes`` upgraded to maps keyed by target path. Every finding carries
a stable code (SCORE-11xx for errors found here, SCORE-20xx for risky but valid workloads; see
``findings.CODES``), a JSON pointer, the line and column given by ``locate``, a message naming the
thing and a hint saying how to fix it.

:func:`resource_dependencies` and :func:`resource_order` are shared with the render preview and the
resources service: a resource whose params use ``${resources.other...}`` depends on ``other``.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import re
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from innominatus.kit.interpolation import MissingKey, PlaceholderError, find_placeholders, lookup, strings_in
from innominatus.specs.findings import ERROR, INFO, WARNING, Finding

Locate = Callable[[tuple], tuple[int, int]]

ROOTS = ("metadata", "resources")

# Well-known Score resource types (score-compose and score-k8s default provisioners and common
# community ones). Score types are open: an unknown type is fine, one close to these is suspicious.
KNOWN_RESOURCE_TYPES = (
    "amqp",
    "dns",
    "elasticsearch",
    "environment",
    "kafka",
    "kafka-topic",
    "ldap",
    "mariadb",
    "memcached",
    "mongodb",
    "mssql",
    "mysql",
    "mysql-instance",
    "opensearch",
    "postgres",
    "postgres-instance",
    "rabbitmq",
    "redis",
    "route",
    "s3",
    "service",
    "service-port",
    "smtp",
    "volume",
)

_EXAMPLE_MEMORY = "a Kubernetes quantity such as 128Mi, 1Gi, 512M or 1e9 (bytes)"
_EXAMPLE_CPU = 'cores such as 0.5 or "2", or millicores such as 500m'


# ---------------------------------------------------------------------------------------------
# Helpers


def pointer(path: Iterable) -> str:
    """JSON pointer (RFC 6901) of a path of keys and list indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


@functools.lru_cache(maxsize=512)
def _close_resource_type(word: str) -> str | None:
    """Nearest well-known resource type; cached, since the same few types recur in every file."""
    return _did_you_mean(word, KNOWN_RESOURCE_TYPES, cutoff=0.75)


def _did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return close[0] if close else None


def _suggest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    close = _did_you_mean(word, candidates, cutoff)
    return f" (did you mean {close!r}?)" if close else ""


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


class _Emitter:
    """Collects findings, locating each one."""

    def __init__(self, locate: Locate) -> None:
        self.locate = locate
        self.findings: list[Finding] = []

    def add(self, code: str, severity: str, path: tuple, message: str, hint: str) -> None:
        try:
            line, column = self.locate(tuple(path))
        except Exception:  # a locator must never turn a finding into a crash
            line, column = 0, 0
        self.findings.append(Finding(code, severity, message, pointer(path), line, column, hint))


# ---------------------------------------------------------------------------------------------
# Cycles (shared by resources and containers' `before`)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on large documents)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _cycle_through(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """Shortest cycle from ``start`` back to ``start`` inside ``members`` (BFS, sorted: deterministic)."""
    previous: dict[str, str] = {}
    queue = [start]
    seen = {start}
    while queue:
        following = []
        for node in queue:
            for nxt in sorted(graph.get(node, ())):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in seen:
                    seen.add(nxt)
                    previous[nxt] = node
                    following.append(nxt)
        queue = following
    return [start, start]


def find_cycles(graph: dict[str, set[str]], self_loops: bool = True) -> list[list[str]]:
    """One cycle per strongly connected component that has one, each starting and ending at the
    component's alphabetically first member, e.g. ``["a", "b", "a"]``; sorted."""
    cycles = []
    for component in _strongly_connected(graph):
        first = component[0]
        if len(component) > 1:
            cycles.append(_cycle_through(first, graph, set(component)))
        elif self_loops and first in graph.get(first, ()):
            cycles.append([first, first])
    return sorted(cycles)


def cycle_text(cycle: list[str]) -> str:
    return " → ".join(cycle)


# ---------------------------------------------------------------------------------------------
# Resource dependencies


class ResourceCycleError(ValueError):
    """Resources whose params reference each other's outputs in a cycle."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(f"resource dependency cycle: {cycle_text(cycle)}")


# Every string inside nested dicts and lists with its path (one walker for the platform).
_strings = strings_in


def resource_dependencies(document: dict) -> dict[str, set[str]]:
    """For each declared resource, the declared resources whose outputs its params use.

    A resource referencing itself is listed (it is a cycle of one); references to undeclared
    resources and malformed placeholders are left out (validation reports them)."""
    resources = _map(document.get("resources"))
    graph: dict[str, set[str]] = {}
    for name, resource in resources.items():
        needs: set[str] = set()
        for _, text in _strings(_map(resource).get("params"), ()):
            if "${" not in text:
                continue
            try:
                placeholders = find_placeholders(text)
            except PlaceholderError:
                continue
            for placeholder in placeholders:
                parts = placeholder.parts
                if len(parts) >= 2 and parts[0] == "resources" and parts[1] in resources:
                    needs.add(parts[1])
        graph[name] = needs
    return graph


def resource_order(document: dict) -> list[str]:
    """Declared resources, dependencies first; among the ready ones alphabetical.

    Raises :class:`ResourceCycleError` (a ``ValueError``) naming the cycle, e.g. ``a → b → a``."""
    graph = resource_dependencies(document)
    waiting = {name: set(needs) for name, needs in graph.items()}
    dependents: dict[str, set[str]] = {name: set() for name in graph}
    for name, needs in graph.items():
        for need in needs:
            dependents[need].add(name)
    ready = [name for name, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent].discard(name)
            if not waiting[dependent]:
                heapq.heappush(ready, dependent)
    if len(order) < len(graph):
        remaining = set(graph) - set(order)
        left = {name: graph[name] & remaining for name in remaining}
        cycles = find_cycles(left)
        raise ResourceCycleError(cycles[0] if cycles else sorted(left))
    return order


# ---------------------------------------------------------------------------------------------
# Kubernetes quantities


class QuantityError(ValueError):
    pass


_QUANTITY = re.compile(
    r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?"
)
_SUFFIX = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_MAX_EXPONENT = 100


def parse_quantity(text: str) -> tuple[Fraction, str]:
    """A Kubernetes quantity (``128Mi``, ``1G``, ``0.5Gi``, ``1e3``, ``500m``, ``42``) as its exact
    value and the suffix written (``""`` for plain numbers and exponents). Raises QuantityError."""
    if not isinstance(text, str):
        text = str(text)
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity")
    sign, number, suffix, exponent = match.groups()
    value = Fraction(number if not number.endswith(".") else number[:-1] or "0")
    if exponent is not None:
        power = int(exponent)
        if abs(power) > _MAX_EXPONENT:
            raise QuantityError(f"{text!r} is out of range")
        value *= Fraction(10) ** power
        suffix = ""
    value *= _SUFFIX[suffix or ""]
    return (-value if sign == "-" else value), (suffix or "")


def parse_memory(text: str) -> Fraction:
    """Bytes; negative amounts are refused."""
    value, _ = parse_quantity(text)
    if value < 0:
        raise QuantityError(f"{text!r} is negative")
    return value


def parse_cpu(text: str) -> Fraction:
    """Cores: a number (``0.5``, ``"2"``, ``1e-1``) or millicores (``500m``)."""
    value, suffix = parse_quantity(text)
    if suffix not in ("", "m"):
        raise QuantityError(f"{text!r} is not a number of cores or millicores")
    if value < 0:
        raise QuantityError(f"{text!r} is negative")
    return value


# ---------------------------------------------------------------------------------------------
# The checks


def _check_placeholders(emit: _Emitter, document: dict, path: tuple, text: str, where: str,
                        resource: str | None = None) -> None:
    if "${" not in text:
        return
    try:
        placeholders = find_placeholders(text)
    except PlaceholderError as exc:
        emit.add("SCORE-1101", ERROR, path, f"{where}: {exc.message}",
                 "write placeholders as ${metadata.KEY} or ${resources.NAME.OUTPUT}; "
                 "write '$$' for a literal '$' (e.g. $${HOME} for a shell variable)")
        return
    resources = _map(document.get("resources"))
    metadata = _map(document.get("metadata"))
    for placeholder in placeholders:
        parts, shown = placeholder.parts, placeholder.text
        root = parts[0]
        if root not in ROOTS:
            close = _did_you_mean(root, ROOTS)
            rest = ".".join(p.replace(".", "\\.") for p in parts[1:]) or "..."
            hint = (f"write ${{{close}.{rest}}}" if close else
                    "placeholders start with 'metadata.' or 'resources.'; for a literal '${' "
                    f"(e.g. a shell variable) write '${shown}'")
            emit.add("SCORE-1102", ERROR, path,
                     f"{where}: placeholder {shown!r} has the unknown root {root!r}"
                     + (f" (did you mean {close!r}?)" if close else ""), hint)
            continue
        if len(parts) < 2:
            what = "a metadata key" if root == "metadata" else "a resource name"
            example = "${metadata.name}" if root == "metadata" else "${resources.db.host}"
            emit.add("SCORE-1103", ERROR, path, f"{where}: placeholder {shown!r} needs {what} after {root!r}",
                     f"name {what}, e.g. {example}")
            continue
        if root == "resources":
            name = parts[1]
            if name not in resources:
                declared = sorted(map(str, resources))
                hint = (f"declare {name!r} under `resources:` or use a declared resource: {', '.join(declared)}"
                        if declared else f"declare it under `resources:`, e.g. resources: {{{name}: {{type: ...}}}}")
                emit.add("SCORE-1104", ERROR, path,
                         f"{where}: placeholder {shown!r} names the resource {name!r}, which is not declared"
                         + _suggest(name, declared), hint)
            elif resource is not None and name == resource:
                emit.add("SCORE-1106", ERROR, path,
                         f"{where}: placeholder {shown!r} makes resource {name!r} depend on its own outputs",
                         "a resource's outputs exist only after it is provisioned; pass the value directly")
            continue
        try:  # the same walk as rendering: maps only, as score-go
            lookup(metadata, parts[1:])
        except MissingKey as exc:
            at = ".".join(("metadata", *exc.walked))
            if exc.available is None:
                emit.add("SCORE-1105", ERROR, path,
                         f"{where}: placeholder {shown!r} looks up {exc.key!r} in {at}, which is not a map",
                         f"placeholders walk maps only; refer to {at} itself or make it a map")
                continue
            keys = exc.available
            emit.add("SCORE-1105", ERROR, path,
                     f"{where}: placeholder {shown!r} refers to {exc.key!r}, which is not in {at}"
                     + _suggest(exc.key, keys),
                     f"add {exc.key!r} to {at} or use one of its keys: {', '.join(keys) or 'nothing'}"
                     + (" (escape a dot inside a key as '\\.')" if "." in "".join(keys) else ""))


def _placeholder_checks(emit: _Emitter, document: dict) -> None:
    for cname, container in _map(document.get("containers")).items():
        container = _map(container)
        for var, value in _map(container.get("variables")).items():
            if isinstance(value, str):
                _check_placeholders(emit, document, ("containers", cname, "variables", var), value,
                                    f"variable {var!r} of container {cname!r}")
        for target, spec in _map(container.get("files")).items():
            spec = _map(spec)
            if isinstance(spec.get("content"), str) and spec.get("noExpand") is not True:
                _check_placeholders(emit, document, ("containers", cname, "files", target, "content"),
                                    spec["content"], f"content of file {target!r} in container {cname!r}")
        for target, spec in _map(container.get("volumes")).items():
            spec = _map(spec)
            if isinstance(spec.get("source"), str):
                _check_placeholders(emit, document, ("containers", cname, "volumes", target, "source"),
                                    spec["source"], f"source of volume {target!r} in container {cname!r}")
    for rname, resource in _map(document.get("resources")).items():
        params = _map(resource).get("params")
        for path, text in _strings(params, ("resources", rname, "params")):
            dotted = ".".join(map(str, path[2:]))
            _check_placeholders(emit, document, path, text, f"{dotted} of resource {rname!r}", resource=rname)


def _resource_cycle_checks(emit: _Emitter, document: dict) -> None:
    graph = resource_dependencies(document)
    for cycle in find_cycles(graph, self_loops=False):  # self-references are SCORE-1106
        emit.add("SCORE-1107", ERROR, ("resources", cycle[0], "params"),
                 f"resources depend on each other's outputs in a cycle: {cycle_text(cycle)}",
                 "break the cycle: a resource's params cannot use the outputs of a resource that "
                 "needs its own outputs; pass one of the values directly")


def _before_names(before: Any) -> list[tuple[Any, str]]:
    """(path key, container name) of a `before` list (our schema) or map (official schema)."""
    if isinstance(before, list):
        return [(i, name) for i, name in enumerate(before) if isinstance(name, str)]
    if isinstance(before, dict):
        return [(name, name) for name in before if isinstance(name, str)]
    return []


def _before_checks(emit: _Emitter, document: dict) -> None:
    containers = _map(document.get("containers"))
    graph: dict[str, set[str]] = {}
    for cname, container in containers.items():
        graph[cname] = set()
        for key, other in _before_names(_map(container).get("before")):
            path = ("containers", cname, "before", key)
            if other == cname:
                emit.add("SCORE-1111", ERROR, path, f"container {cname!r} lists itself in `before`",
                         f"remove {cname!r} from its own `before`")
            elif other not in containers:
                others = sorted(c for c in containers if c != cname)
                emit.add("SCORE-1110", ERROR, path,
                         f"container {cname!r} lists the unknown container {other!r} in `before`"
                         + _suggest(other, others),
                         f"name a container of this workload: {', '.join(others)}" if others
                         else "this workload has no other container; remove the entry")
            else:
                graph[cname].add(other)
    for cycle in find_cycles(graph, self_loops=False):
        emit.add("SCORE-1112", ERROR, ("containers", cycle[0], "before"),
                 f"containers' `before` ordering forms a cycle: {cycle_text(cycle)}",
                 "remove one of these `before` entries so the containers can start in some order")


_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _escapes(source: str) -> bool:
    depth = 0
    for part in re.split(r"[\\/]+", source):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _file_checks(emit: _Emitter, document: dict, source_dir: Path | None) -> None:
    for cname, container in _map(document.get("containers")).items():
        for target, spec in _map(_map(container).get("files")).items():
            spec = _map(spec)
            base = ("containers", cname, "files", target)
            thing = f"file {target!r} in container {cname!r}"
            source = spec.get("source")
            if isinstance(source, str):
                path = (*base, "source")
                if source.startswith(("/", "\\")) or _DRIVE.match(source):
                    emit.add("SCORE-1120", ERROR, path, f"{thing} has the absolute source {source!r}",
                             "give the source relative to the Score file's directory, e.g. config/app.conf")
                elif _escapes(source):
                    emit.add("SCORE-1120", ERROR, path, f"{thing} has the source {source!r}, which is outside "
                             "the Score file's directory",
                             "move the file next to the Score file (or below it) and refer to it relative to it")
                elif source_dir is None:
                    emit.add("SCORE-1122", INFO, path, f"{thing}: source {source!r} was not checked "
                             "(the Score file's directory is unknown)",
                             "validate the file from disk (innominatus validate FILE) to check that it exists")
                else:
                    root = Path(source_dir)
                    candidate = root / PurePosixPath(source.replace("\\", "/"))
                    try:
                        inside = candidate.resolve().is_relative_to(root.resolve())
                    except OSError:
                        inside = False
                    if not inside:
                        emit.add("SCORE-1120", ERROR, path, f"{thing} has the source {source!r}, which leads "
                                 "outside the Score file's directory (through a symbolic link)",
                                 "copy the file into the Score file's directory instead of linking to it")
                    elif not candidate.is_file():
                        what = "is a directory, not a file" if candidate.is_dir() else "does not exist"
                        emit.add("SCORE-1121", ERROR, path,
                                 f"{thing} has the source {source!r}, which {what} next to the Score file",
                                 "create the file or fix the path; it is relative to the Score file's directory")
            mode = spec.get("mode")
            if isinstance(mode, str):
                path = (*base, "mode")
                if not re.fullmatch(r"[0-7]{1,4}", mode) or int(mode, 8) > 0o777:
                    emit.add("SCORE-1123", ERROR, path, f"{thing} has the mode {mode!r}, which is not an octal "
                             "permission from 0000 to 0777", "write the mode as an octal string, e.g. \"0644\"")
                elif int(mode, 8) & 0o002:
                    emit.add("SCORE-2006", WARNING, path, f"{thing} has the mode {mode!r}, which lets anyone "
                             "write to it", "use \"0644\" (or \"0600\" for secrets) unless other users must write it")


def _quantity_checks(emit: _Emitter, document: dict) -> None:
    parsers = {"memory": (parse_memory, "SCORE-1130", _EXAMPLE_MEMORY),
               "cpu": (parse_cpu, "SCORE-1131", _EXAMPLE_CPU)}
    for cname, container in _map(document.get("containers")).items():
        spec = _map(_map(container).get("resources"))
        parsed: dict[tuple[str, str], Fraction] = {}
        for kind in ("limits", "requests"):
            for key, (parse, code, example) in parsers.items():
                raw = _map(spec.get(kind)).get(key)
                if raw is None:
                    continue
                path = ("containers", cname, "resources", kind, key)
                try:
                    parsed[(kind, key)] = parse(raw)
                except QuantityError as exc:
                    emit.add(code, ERROR, path, f"container {cname!r}: {kind}.{key} {exc}",
                             f"use {example}")
                    continue
                if key == "memory" and isinstance(raw, str) and raw.endswith("m"):
                    emit.add("SCORE-2007", WARNING, path,
                             f"container {cname!r}: {kind}.memory {raw!r} is in millibytes (thousandths of a byte)",
                             f"write {raw[:-1]}Mi (mebibytes) or {raw[:-1]}M (megabytes)")
        for key in parsers:
            limit, request = parsed.get(("limits", key)), parsed.get(("requests", key))
            if limit is not None and request is not None and request > limit:
                # A warning, not an error: the official sample score-full.yaml does this and Score
                # tools accept it; Kubernetes and Docker refuse it at deploy time.
                emit.add("SCORE-2008", WARNING, ("containers", cname, "resources", "requests", key),
                         f"container {cname!r} requests {spec['requests'][key]!r} of {key}, more than its limit "
                         f"{spec['limits'][key]!r}",
                         f"lower requests.{key} or raise limits.{key}: Kubernetes and Docker refuse a request "
                         "above its limit")


def _type_checks(emit: _Emitter, document: dict) -> None:
    known = set(KNOWN_RESOURCE_TYPES)
    for rname, resource in _map(document.get("resources")).items():
        rtype = _map(resource).get("type")
        if not isinstance(rtype, str) or rtype in known:
            continue
        base = rtype.split("#", 1)[0]
        if base in known:
            continue
        close = base.lower() if base.lower() in known else _close_resource_type(base.lower())
        if close:
            emit.add("SCORE-2002", WARNING, ("resources", rname, "type"),
                     f"resource {rname!r} has the unknown resource type {rtype!r} (did you mean {close!r}?)",
                     f"write type: {close} if you meant it; an unusual type needs a provisioner for it")


def _image_tag(image: str) -> str | None:
    """The tag of an image reference; None when it needs no warning (digest or '.')."""
    if image == "." or "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def _container_warnings(emit: _Emitter, document: dict) -> None:
    for cname, container in _map(document.get("containers")).items():
        container = _map(container)
        image = container.get("image")
        if isinstance(image, str):
            tag = _image_tag(image)
            if tag in ("", "latest"):
                how = "has no tag" if tag == "" else "uses the tag 'latest'"
                emit.add("SCORE-2001", WARNING, ("containers", cname, "image"),
                         f"container {cname!r} runs image {image!r}, which {how}: not a pinned version",
                         "pin a version tag or a digest (image:1.2.3 or image@sha256:...) so deployments "
                         "are repeatable")
        spec = container.get("resources")
        if not _map(spec).get("limits"):
            path = ("containers", cname, "resources") if isinstance(spec, dict) else ("containers", cname)
            emit.add("SCORE-2003", WARNING, path, f"container {cname!r} has no resource limits",
                     "set resources.limits.memory and resources.limits.cpu, e.g. 256Mi and 500m, so one "
                     "container cannot starve the others")
        missing = [probe for probe in ("livenessProbe", "readinessProbe") if probe not in container]
        if missing:
            emit.add("SCORE-2004", INFO, ("containers", cname),
                     f"container {cname!r} has no {' or '.join(missing)}",
                     "add an httpGet or exec probe so the platform can restart a stuck container and "
                     "route traffic only when it is ready")


def _port_warnings(emit: _Emitter, document: dict) -> None:
    first: dict[tuple[int, str], str] = {}
    for pname, port in _map(_map(document.get("service")).get("ports")).items():
        port = _map(port)
        target = port.get("targetPort", port.get("port"))
        if not isinstance(target, int):
            continue
        key = (target, str(port.get("protocol", "TCP")))
        if key in first:
            path = ("service", "ports", pname, "targetPort" if "targetPort" in port else "port")
            emit.add("SCORE-2005", WARNING, path,
                     f"service port {pname!r} targets container port {target}/{key[1]}, like port {first[key]!r}",
                     "give each service port its own targetPort, or remove the duplicate port")
        else:
            first[key] = pname


def semantic_findings(document: dict, locate: Locate, source_dir: Path | None) -> list[Finding]:
    """Findings beyond the schema for one workload (map form, already schema-valid)."""
    emit = _Emitter(locate)
    if not isinstance(document, dict):
        return []
    _placeholder_checks(emit, document)
    _resource_cycle_checks(emit, document)
    _before_checks(emit, document)
    _file_checks(emit, document, source_dir)
    _quantity_checks(emit, document)
    _type_checks(emit, document)
    _container_warnings(emit, document)
    _port_warnings(emit, document)
    return emit.findings


def validate_application(results: list[tuple]) -> list[tuple[str, Finding]]:
    """Checks across the workloads of one application, given as ``(path, document)`` pairs (or
    ``(path, document, locate)``): a ``metadata.name`` used twice is an error on the second and
    later files, naming the first."""
    out: list[tuple[str, Finding]] = []
    first: dict[str, str] = {}
    for item in results:
        path, document = item[0], item[1]
        locate: Locate = item[2] if len(item) > 2 and item[2] is not None else (lambda _p: (0, 0))
        name = _map(_map(document).get("metadata")).get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            emit = _Emitter(locate)
            emit.add("SCORE-1140", ERROR, ("metadata", "name"),
                     f"workload name {name!r} is already used by {first[name]}",
                     "give each workload of the application its own metadata.name")
            out.extend((path, finding) for finding in emit.findings)
        else:
            first[name] = path
    return out
