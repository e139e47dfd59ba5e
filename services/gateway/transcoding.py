"""HTTP/JSON <-> gRPC transcoding driven by the ``google.api.http`` annotations.

The route table is read from the service descriptors, never written by hand: every RPC
with an ``option (google.api.http)`` (and each of its ``additional_bindings``) becomes one
:class:`HttpRoute`; RPCs without one are internal and not exposed. The same table feeds the
request router (:mod:`innominatus.gateway.app`) and the OpenAPI document
(:mod:`innominatus.gateway.openapi`).

Path templates follow the ``google.api.HttpRule`` grammar::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A variable's value is the whole text its segments matched, literals included
(``{name=runs/*}`` on ``/api/v1/runs/abc`` sets ``name="runs/abc"``).
"""

from __future__ import annotations

import importlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from innominatus.common.v1 import method_policy_pb2

# The services the gateway fronts, by the key of their address in Settings.addresses.
BACKENDS = ("specs", "engine", "resources", "identity", "audit")
# Proto modules each backend serves (the engine process serves two services).
_MODULES: dict[str, tuple[str, ...]] = {
    "specs": ("innominatus.specs.v1.specs_pb2",),
    "engine": ("innominatus.engine.v1.engine_pb2", "innominatus.engine.v1.golden_paths_pb2"),
    "resources": ("innominatus.resources.v1.resources_pb2", "innominatus.resources.v1.definitions_pb2"),
    "identity": ("innominatus.identity.v1.identity_pb2",),
    "audit": ("innominatus.audit.v1.audit_pb2",),
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Well-known types that have a JSON string (or scalar) form, so they can come from a
# path or query parameter.
SCALAR_LIKE_WKT = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)


class TemplateError(ValueError):
    """An http rule whose path template does not follow the grammar."""


class RequestError(Exception):
    """Bad HTTP input: becomes a 400 problem. Never a server fault."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "INVALID_ARGUMENT",
        metadata: dict[str, str] | None = None,
        violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Variable:
    field_path: str  # "name" or "parent.name"
    segments: tuple[str, ...]  # ("runs", "*")


@dataclass(frozen=True)
class PathTemplate:
    template: str  # as written in the annotation
    segments: tuple[str | Variable, ...]
    verb: str | None
    regex: re.Pattern = field(compare=False, repr=False)

    @property
    def variables(self) -> list[Variable]:
        return [s for s in self.segments if isinstance(s, Variable)]

    @property
    def literal_count(self) -> int:
        count = 0
        for seg in self.segments:
            parts = seg.segments if isinstance(seg, Variable) else (seg,)
            count += sum(1 for p in parts if p not in ("*", "**"))
        return count

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The variables bound by ``raw_path`` (still percent-encoded), or None."""
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for index, variable in enumerate(self.variables):
            raw = found.group(f"v{index}")
            # Single-segment values are fully decoded; multi-segment values keep %2F
            # (the HttpRule spec), which unquote would turn into "/", so protect it.
            if any(s == "**" for s in variable.segments):
                raw = re.sub("%2[fF]", "%252F", raw)
            values[variable.field_path] = unquote(raw)
        return values

    def openapi_path(self) -> tuple[str, list[tuple[str, str, str]]]:
        """The template as an OpenAPI path plus its parameters (name, field path, description).

        ``{name=runs/*}`` becomes ``runs/{name}``: OpenAPI path parameters are single
        segments, and rendering it as a bare ``{name}`` would make ``/api/v1/{name}`` the key
        of four different GET operations (runs, users, resources, applications).
        """
        parts: list[str] = []
        params: list[tuple[str, str, str]] = []
        for seg in self.segments:
            if not isinstance(seg, Variable):
                parts.append(seg)
                continue
            wildcards = [p for p in seg.segments if p in ("*", "**")]
            pattern = "/".join(seg.segments)
            for i, piece in enumerate(seg.segments):
                if piece not in ("*", "**"):
                    parts.append(piece)
                    continue
                name = seg.field_path if len(wildcards) == 1 else f"{seg.field_path}_{i}"
                parts.append("{" + name + "}")
                desc = (
                    f"Sets the request field `{seg.field_path}` from the path template "
                    f"`{{{seg.field_path}={pattern}}}`: the field's value is the whole matched "
                    f"text, e.g. `{_example(seg.segments)}`."
                )
                if piece == "**":
                    desc += " May span several path segments."
                params.append((name, seg.field_path, desc))
        path = "/" + "/".join(parts)
        if self.verb:
            path += ":" + self.verb
        return path, params


def _example(segments: tuple[str, ...]) -> str:
    return "/".join("abc" if s == "*" else ("a/b" if s == "**" else s) for s in segments)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL = re.compile(r"[^/{}:*=]+")


def parse_template(template: str) -> PathTemplate:
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    text = template[1:]
    segments: list[str | Variable] = []
    verb: str | None = None
    pos = 0

    def parse_plain(stop_chars: str) -> str:
        nonlocal pos
        if text.startswith("**", pos):
            pos += 2
            return "**"
        if text.startswith("*", pos):
            pos += 1
            return "*"
        found = _LITERAL.match(text, pos)
        if not found:
            raise TemplateError(f"path template {template!r}: expected a segment at offset {pos + 1}")
        pos = found.end()
        return found.group(0)

    while True:
        if text.startswith("{", pos):
            end = text.find("}", pos)
            if end < 0:
                raise TemplateError(f"path template {template!r}: unclosed '{{'")
            body = text[pos + 1 : end]
            field_path, _, pattern = body.partition("=")
            if not _IDENT.fullmatch(field_path):
                raise TemplateError(f"path template {template!r}: bad field path {field_path!r}")
            inner = tuple(pattern.split("/")) if pattern else ("*",)
            for piece in inner:
                if piece not in ("*", "**") and not _LITERAL.fullmatch(piece):
                    raise TemplateError(f"path template {template!r}: bad segment {piece!r} in {body!r}")
            segments.append(Variable(field_path, inner))
            pos = end + 1
        else:
            segments.append(parse_plain("/:"))
        if pos >= len(text):
            break
        if text[pos] == "/":
            pos += 1
            continue
        if text[pos] == ":":
            verb = text[pos + 1 :]
            if not _LITERAL.fullmatch(verb or ""):
                raise TemplateError(f"path template {template!r}: bad verb {verb!r}")
            break
        raise TemplateError(f"path template {template!r}: unexpected {text[pos]!r} at offset {pos + 1}")

    if sum(1 for s in segments for p in (s.segments if isinstance(s, Variable) else (s,)) if p == "**") > 1:
        raise TemplateError(f"path template {template!r}: at most one '**'")

    regex_parts: list[str] = []
    index = 0
    for seg in segments:
        if isinstance(seg, Variable):
            inner = "/".join(_piece_regex(p) for p in seg.segments)
            regex_parts.append(f"(?P<v{index}>{inner})")
            index += 1
        else:
            regex_parts.append(_piece_regex(seg))
    regex = "/" + "/".join(regex_parts) + (re.escape(":" + verb) if verb else "")
    return PathTemplate(template, tuple(segments), verb, re.compile(regex))


def _piece_regex(piece: str) -> str:
    if piece == "*":
        return "[^/]+"
    if piece == "**":
        return ".+"
    return re.escape(piece)


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class HttpRoute:
    backend: str  # key into Settings.addresses: "engine"
    service: descriptor.ServiceDescriptor
    method: descriptor.MethodDescriptor
    http_method: str  # "GET"
    template: PathTemplate
    body: str  # "", "*" or a top-level field name
    response_body: str
    request_type: type[Message]
    response_type: type[Message]
    server_streaming: bool
    anonymous: bool

    @property
    def full_method(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        return f"{self.service.name}_{self.method.name}"


def service_descriptors() -> list[tuple[str, descriptor.ServiceDescriptor]]:
    found = []
    for backend in BACKENDS:
        for name in _MODULES[backend]:
            module = importlib.import_module(name)
            for service in module.DESCRIPTOR.services_by_name.values():
                found.append((backend, service))
    return found


def _rule_bindings(rule: http_pb2.HttpRule):
    yield rule
    for extra in rule.additional_bindings:
        yield extra


def _rule_pattern(rule: http_pb2.HttpRule) -> tuple[str, str] | None:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return None
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), getattr(rule, kind)


def build_routes(services: list[tuple[str, descriptor.ServiceDescriptor]] | None = None) -> list[HttpRoute]:
    """Every annotated RPC as HTTP routes, most specific template first."""
    routes: list[HttpRoute] = []
    for backend, service in services if services is not None else service_descriptors():
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            policy = options.Extensions[method_policy_pb2.method_policy]
            request_type = message_factory.GetMessageClass(method.input_type)
            response_type = message_factory.GetMessageClass(method.output_type)
            for binding in _rule_bindings(rule):
                pattern = _rule_pattern(binding)
                if pattern is None:
                    continue
                http_method, path = pattern
                template = parse_template(path)
                _check_binding(method, template, binding.body)
                routes.append(
                    HttpRoute(
                        backend=backend,
                        service=service,
                        method=method,
                        http_method=http_method,
                        template=template,
                        body=binding.body,
                        response_body=binding.response_body,
                        request_type=request_type,
                        response_type=response_type,
                        server_streaming=method.server_streaming,
                        anonymous=policy.anonymous,
                    )
                )
    # Literal-rich templates and templates with a verb win over looser ones.
    routes.sort(key=lambda r: (r.template.verb is None, -r.template.literal_count, r.template.template))
    return routes


def _check_binding(method: descriptor.MethodDescriptor, template: PathTemplate, body: str) -> None:
    for variable in template.variables:
        resolve_field(method.input_type, variable.field_path)  # raises on a typo in the proto
    if body not in ("", "*"):
        if body not in method.input_type.fields_by_name:
            raise TemplateError(f"{method.full_name}: body field {body!r} is not a field of {method.input_type.name}")


def resolve_field(message: descriptor.Descriptor, path: str) -> list[descriptor.FieldDescriptor]:
    """The chain of fields a dotted path (proto or JSON names) walks, or KeyError."""
    chain: list[descriptor.FieldDescriptor] = []
    current: descriptor.Descriptor | None = message
    for part in path.split("."):
        if current is None:
            raise KeyError(path)
        fd = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
        if fd is None:
            raise KeyError(path)
        chain.append(fd)
        current = fd.message_type if fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE else None
        if current is not None and current.GetOptions().map_entry:
            current = None
    return chain


@dataclass(frozen=True)
class RouteMatch:
    route: HttpRoute
    path_params: dict[str, str]


class Router:
    def __init__(self, routes: list[HttpRoute]) -> None:
        self.routes = routes

    def match(self, http_method: str, raw_path: str) -> tuple[RouteMatch | None, list[str]]:
        """The route for ``http_method raw_path``; else None and the methods the path allows."""
        allowed: list[str] = []
        for route in self.routes:
            params = route.template.match(raw_path)
            if params is None:
                continue
            if route.http_method == http_method:
                return RouteMatch(route, params), []
            if route.http_method not in allowed:
                allowed.append(route.http_method)
        return None, allowed


# --------------------------------------------------------------------------- requests


def decode_json_body(raw: bytes) -> Any:
    """Parse a request body, or raise a MALFORMED_JSON RequestError with the position."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"request body is not valid UTF-8 (byte {exc.start})",
            reason="MALFORMED_JSON",
            metadata={"position": str(exc.start)},
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            reason="MALFORMED_JSON",
            metadata={"line": str(exc.lineno), "column": str(exc.colno), "position": str(exc.pos)},
        ) from None
    except ValueError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", reason="MALFORMED_JSON") from None
    except RecursionError:
        raise RequestError("request body is not valid JSON: nested too deeply", reason="MALFORMED_JSON") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    # 1e400 parses to infinity, which no protobuf JSON field can carry back out.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)" at "([^"]+)"')


def _parse_error(exc: Exception, prefix: str = "") -> RequestError:
    message = str(exc).split("\n", 1)[0].rstrip(".")
    found = _UNKNOWN_FIELD.search(message)
    if found:
        unknown, where = found.groups()
        parent = where.split(".", 1)[1] if "." in where else ""
        name = f"{prefix}{parent + '.' if parent else ''}{unknown}"
        return RequestError(
            f"unknown field {name!r} in the request",
            violations=[(name, f"{where.split('.', 1)[0]} has no field named {unknown!r}")],
        )
    return RequestError(f"invalid request: {message}")


def _parse_into(payload: dict, message: Message, prefix: str = "") -> None:
    try:
        json_format.ParseDict(payload, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise _parse_error(exc, prefix) from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise RequestError(f"invalid request: {exc}") from None


def _nest(chain: list[descriptor.FieldDescriptor], value: Any) -> dict:
    payload: Any = value
    for fd in reversed(chain):
        payload = {fd.name: payload}
    return payload


def _set_from_strings(request: Message, path: str, values: list[str], *, source: str) -> None:
    try:
        chain = resolve_field(request.DESCRIPTOR, path)
    except KeyError:
        raise RequestError(
            f"unknown {source} {path!r}: {request.DESCRIPTOR.name} has no such field",
            violations=[(path, f"{request.DESCRIPTOR.name} has no field {path!r}")],
        ) from None
    leaf = chain[-1]
    for fd in chain[:-1]:
        if fd.is_repeated:
            raise RequestError(
                f"{source} {path!r} cannot address a field inside a repeated field", violations=[(path, "not settable")]
            )
    if leaf.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        if leaf.message_type.GetOptions().map_entry or leaf.message_type.full_name not in SCALAR_LIKE_WKT:
            raise RequestError(
                f"{source} {path!r} names a message field; set it in a JSON body or through its sub-fields",
                violations=[(path, "not a scalar field")],
            )
    repeated = leaf.is_repeated
    if not repeated and len(values) > 1:
        raise RequestError(
            f"{source} {path!r} given {len(values)} times but the field is not repeated",
            violations=[(path, "singular field given more than once")],
        )
    converted = [_from_string(leaf, v, source, path) for v in values]
    value: Any = converted if repeated else converted[0]
    partial = type(request)()
    try:
        json_format.ParseDict(_nest(chain, value), partial, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        detail = str(exc).split("\n", 1)[0]
        raise RequestError(
            f"invalid value for {source} {path!r}: {detail}", violations=[(path, detail)]
        ) from None
    request.MergeFrom(partial)


_TRUE = frozenset({"true", "1", "t", "yes"})
_FALSE = frozenset({"false", "0", "f", "no"})


def _from_string(fd: descriptor.FieldDescriptor, value: str, source: str, path: str) -> Any:
    """A path/query string as the JSON value ParseDict expects for ``fd`` (bools are not strings)."""
    is_bool = fd.type == descriptor.FieldDescriptor.TYPE_BOOL or (
        fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE and fd.message_type.full_name == "google.protobuf.BoolValue"
    )
    if not is_bool:
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise RequestError(f"invalid value for {source} {path!r}: expected true or false", violations=[(path, "not a boolean")])


def build_request(
    route: HttpRoute,
    path_params: dict[str, str],
    query: list[tuple[str, str]],
    body: bytes | None,
) -> Message:
    """The gRPC request for an HTTP call: body first, then query parameters, then the path."""
    request = route.request_type()
    if route.body:
        raw = body or b""
        if raw.strip():
            payload = decode_json_body(raw)
            if route.body == "*":
                if not isinstance(payload, dict):
                    raise RequestError(
                        f"request body must be a JSON object, not {_json_kind(payload)}",
                        reason="INVALID_ARGUMENT",
                    )
                _parse_into(payload, request)
            else:
                fd = route.request_type.DESCRIPTOR.fields_by_name[route.body]
                if (
                    fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE
                    and not fd.is_repeated
                    and fd.message_type.full_name not in SCALAR_LIKE_WKT
                    and fd.message_type.full_name not in ("google.protobuf.Value", "google.protobuf.ListValue")
                    and not isinstance(payload, dict)
                ):
                    raise RequestError(f"request body must be a JSON object (the {fd.json_name!r} field), not {_json_kind(payload)}")
                _parse_into({fd.name: payload}, request)
    if query:
        if route.body == "*":
            names = sorted({k for k, _ in query})
            raise RequestError(
                f"query parameters are not accepted by {route.http_method} {route.template.template} "
                f"(the JSON body carries the whole request): {', '.join(names)}",
                violations=[(n, "not accepted as a query parameter") for n in names],
            )
        grouped: dict[str, list[str]] = {}
        for key, value in query:
            grouped.setdefault(key, []).append(value)
        for key, values in grouped.items():
            if route.body and key.split(".")[0] in (route.body, _json_name(route, route.body)):
                raise RequestError(
                    f"query parameter {key!r} is bound to the request body", violations=[(key, "bound to the body")]
                )
            _set_from_strings(request, key, values, source="query parameter")
    for field_path, value in path_params.items():
        chain = resolve_field(request.DESCRIPTOR, field_path)
        # Path values replace whatever the body or query said for the same field.
        _clear(request, chain)
        _set_from_strings(request, field_path, [value], source="path parameter")
    return request


def _json_name(route: HttpRoute, name: str) -> str:
    fd = route.request_type.DESCRIPTOR.fields_by_name.get(name)
    return fd.json_name if fd else name


def _clear(message: Message, chain: list[descriptor.FieldDescriptor]) -> None:
    for fd in chain[:-1]:
        if not message.HasField(fd.name):
            return
        message = getattr(message, fd.name)
    message.ClearField(chain[-1].name)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


def _unwrapped_stream_field(route: HttpRoute) -> descriptor.FieldDescriptor | None:
    if not route.server_streaming or route.response_body:
        return None
    fields = route.response_type.DESCRIPTOR.fields
    if len(fields) == 1 and fields[0].type == descriptor.FieldDescriptor.TYPE_MESSAGE and not fields[0].is_repeated:
        return fields[0]
    return None


def response_payload(route: HttpRoute, response: Message) -> Any:
    """The JSON of a response (or stream message), honouring ``response_body``.

    A streamed message with a single message field (``ExportRecordsResponse.record``) is
    unwrapped, so each NDJSON line is the record itself.
    """
    if route.response_body:
        fd = response.DESCRIPTOR.fields_by_name[route.response_body]
        if fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE and not fd.is_repeated:
            return json_format.MessageToDict(getattr(response, fd.name), preserving_proto_field_name=False)
        whole = json_format.MessageToDict(
            response, preserving_proto_field_name=False, always_print_fields_with_no_presence=True
        )
        return whole.get(fd.json_name)
    unwrap = _unwrapped_stream_field(route)
    target = getattr(response, unwrap.name) if unwrap is not None else response
    return json_format.MessageToDict(target, preserving_proto_field_name=False)


def streamed_item_descriptor(route: HttpRoute) -> descriptor.Descriptor:
    """The message each NDJSON line of a streaming route holds (without ``response_body``)."""
    unwrap = _unwrapped_stream_field(route)
    return unwrap.message_type if unwrap is not None else route.response_type.DESCRIPTOR
