"""The OpenAPI 3.1 document of the REST API, generated from the same descriptors and
``google.api.http`` annotations as the gateway's routes (one source of truth).

Schemas follow the proto3 JSON mapping the gateway answers with: lowerCamelCase names,
64-bit integers as strings, enums by name, ``google.protobuf.Timestamp`` as an RFC 3339
string, ``Struct`` as an object.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor

from innominatus.gateway.transcoding import SCALAR_LIKE_WKT, HttpRoute, resolve_field, streamed_item_descriptor

FD = descriptor.FieldDescriptor
PROBLEM = "Problem"

_SCALARS: dict[int, dict] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64"},
    FD.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WKT: dict[str, dict] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$", "examples": ["1.5s"]},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated lowerCamelCase field paths."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
}

_ERROR_RESPONSES = {
    "400": "The request is invalid (bad JSON, unknown field, failed validation or precondition).",
    "401": "No valid credential (TOKEN_MISSING, TOKEN_EXPIRED, TOKEN_INVALID, API_KEY_REVOKED, ...).",
    "403": "Not allowed (POLICY_DENIED, POLICY_ENGINE_UNAVAILABLE, PERMISSION_DENIED).",
    "404": "Not found.",
    "413": "The request body is larger than the gateway accepts (REQUEST_TOO_LARGE).",
    "429": "Too many requests from this client (RATE_LIMITED); see Retry-After.",
    "503": "A backend service is unavailable (SERVICE_UNAVAILABLE).",
}


def schema_name(message: descriptor.Descriptor) -> str:
    return message.full_name


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


class _SchemaBuilder:
    def __init__(self) -> None:
        self.schemas: dict[str, dict] = {}

    def message_ref(self, message: descriptor.Descriptor) -> dict:
        if message.full_name in _WKT:
            return dict(_WKT[message.full_name])
        name = schema_name(message)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursion-safe
            self.schemas[name] = self._message_schema(message)
        return _ref(name)

    def _message_schema(self, message: descriptor.Descriptor) -> dict:
        properties: dict[str, Any] = {}
        for fd in message.fields:
            properties[fd.json_name] = self.field_schema(fd)
        schema: dict[str, Any] = {
            "type": "object",
            "title": message.name,
            "description": f"The proto3 JSON form of `{message.full_name}`.",
            "properties": properties,
        }
        return schema

    def _single(self, fd: descriptor.FieldDescriptor) -> dict:
        if fd.type == FD.TYPE_MESSAGE:
            return self.message_ref(fd.message_type)
        if fd.type == FD.TYPE_ENUM:
            return self.enum_ref(fd.enum_type)
        return dict(_SCALARS[fd.type])

    def enum_ref(self, enum: descriptor.EnumDescriptor) -> dict:
        name = enum.full_name
        if name not in self.schemas:
            self.schemas[name] = {
                "type": "string",
                "title": enum.name,
                "enum": [v.name for v in enum.values],
                "description": f"`{enum.full_name}`, by value name.",
            }
        return _ref(name)

    def field_schema(self, fd: descriptor.FieldDescriptor) -> dict:
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._single(value_fd)}
            if key_fd.type in (FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_SINT32,
                               FD.TYPE_SINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64, FD.TYPE_SFIXED32, FD.TYPE_SFIXED64):
                schema["propertyNames"] = {"pattern": "^-?[0-9]+$"}
            return schema
        if fd.is_repeated:
            return {"type": "array", "items": self._single(fd)}
        return self._single(fd)


def _problem_schema() -> dict:
    return {
        "type": "object",
        "description": "An RFC 7807 problem document. `reason` is the stable, machine-readable code.",
        "properties": {
            "type": {"type": "string", "format": "uri", "examples": ["https://innominatus.dev/problems/policy-denied"]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "reason": {"type": "string", "examples": ["POLICY_DENIED"]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "violations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                    "required": ["field", "description"],
                },
            },
            "requestId": {"type": "string"},
            "instance": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail", "reason", "requestId"],
    }


def _query_parameters(builder: _SchemaBuilder, route: HttpRoute, bound: set[str]) -> list[dict]:
    """Every scalar request field reachable by a dotted path that no path variable or body binds."""
    if route.body == "*":
        return []
    params: list[dict] = []
    prefix_json: dict[str, str] = {}

    def walk(message: descriptor.Descriptor, prefix: str, depth: int, seen: tuple[str, ...]) -> None:
        for fd in message.fields:
            path = prefix + fd.name
            json_path = (prefix_json[prefix] if prefix else "") + fd.json_name
            if path in bound or (not prefix and fd.name == route.body):
                continue
            is_message = fd.type == FD.TYPE_MESSAGE
            if is_message and fd.message_type.GetOptions().map_entry:
                continue
            if is_message and fd.message_type.full_name not in SCALAR_LIKE_WKT:
                if fd.is_repeated or fd.message_type.full_name in _WKT:
                    continue
                if depth < 4 and fd.message_type.full_name not in seen:
                    prefix_json[path + "."] = json_path + "."
                    walk(fd.message_type, path + ".", depth + 1, (*seen, fd.message_type.full_name))
                continue
            schema = builder.field_schema(fd)
            param: dict[str, Any] = {
                "name": json_path,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": f"Sets the request field `{path}`"
                + (f" (the proto name `{path}` is accepted too)." if path != json_path else "."),
            }
            if fd.is_repeated:
                param["style"] = "form"
                param["explode"] = True
                param["description"] += " Repeat the parameter for several values."
            params.append(param)

    walk(route.request_type.DESCRIPTOR, "", 0, (route.request_type.DESCRIPTOR.full_name,))
    return params


def build_openapi(routes: list[HttpRoute], *, title: str = "innominatus API", version: str = "v1") -> dict:
    builder = _SchemaBuilder()
    paths: dict[str, dict] = {}
    tags: dict[str, dict] = {}
    for route in sorted(routes, key=lambda r: (r.service.full_name, r.method.index, r.template.template)):
        tags.setdefault(
            route.service.name,
            {"name": route.service.name, "description": f"gRPC service `{route.service.full_name}`."},
        )
        path, path_vars = route.template.openapi_path()
        parameters: list[dict] = []
        bound: set[str] = set()
        for name, field_path, desc in path_vars:
            bound.add(field_path)
            chain = resolve_field(route.request_type.DESCRIPTOR, field_path)
            schema = builder.field_schema(chain[-1]) if chain[-1].type != FD.TYPE_MESSAGE else {"type": "string"}
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema, "description": desc})
        parameters.extend(_query_parameters(builder, route, bound))

        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "tags": [route.service.name],
            "summary": f"{route.service.name}.{route.method.name}",
            "description": (
                f"Transcoded to the gRPC method `{route.full_method}` "
                f"(http rule `{route.http_method} {route.template.template}`"
                + (f", body `{route.body}`" if route.body else "")
                + ")."
            ),
            "x-grpc-method": route.full_method,
            "x-http-template": route.template.template,
        }
        if parameters:
            operation["parameters"] = parameters
        if route.body:
            if route.body == "*":
                body_schema = builder.message_ref(route.request_type.DESCRIPTOR)
                body_desc = (
                    f"`{route.request_type.DESCRIPTOR.full_name}`; fields bound by the path are set from the path."
                )
            else:
                fd = route.request_type.DESCRIPTOR.fields_by_name[route.body]
                body_schema = builder.field_schema(fd)
                body_desc = f"The `{fd.json_name}` field of `{route.request_type.DESCRIPTOR.full_name}`."
            operation["requestBody"] = {
                "required": route.body != "*",
                "description": body_desc,
                "content": {"application/json": {"schema": body_schema}},
            }
        if route.response_body:
            fd = route.response_type.DESCRIPTOR.fields_by_name[route.response_body]
            response_schema = builder.field_schema(fd)
        elif route.server_streaming:
            response_schema = builder.message_ref(streamed_item_descriptor(route))
        else:
            response_schema = builder.message_ref(route.response_type.DESCRIPTOR)
        if route.server_streaming:
            ok = {
                "description": (
                    "A stream of newline-delimited JSON values, one per stream message. A failure after"
                    ' the first line ends the stream with a line `{"error": <problem>}`.'
                ),
                "content": {"application/x-ndjson": {"schema": response_schema}},
            }
        else:
            ok = {"description": "OK", "content": {"application/json": {"schema": response_schema}}}
        responses: dict[str, Any] = {"200": ok}
        for code in _ERROR_RESPONSES:
            responses[code] = {"$ref": f"#/components/responses/Problem{code}"}
        responses["default"] = {"$ref": "#/components/responses/ProblemDefault"}
        operation["responses"] = responses
        if route.anonymous:
            operation["security"] = [{}, {"bearer": []}]
        item = paths.setdefault(path, {})
        verb = route.http_method.lower()
        if verb in item:
            raise ValueError(f"two http rules map to {route.http_method} {path}")
        item[verb] = operation

    component_responses: dict[str, Any] = {
        f"Problem{code}": {
            "description": text,
            "content": {"application/problem+json": {"schema": _ref(PROBLEM)}},
        }
        for code, text in _ERROR_RESPONSES.items()
    }
    component_responses["ProblemDefault"] = {
        "description": "Any other error, as an RFC 7807 problem document.",
        "content": {"application/problem+json": {"schema": _ref(PROBLEM)}},
    }
    component_responses["Problem429"]["headers"] = {
        "Retry-After": {"description": "Seconds until the client may retry.", "schema": {"type": "integer"}}
    }
    schemas = dict(sorted(builder.schemas.items()))
    schemas[PROBLEM] = _problem_schema()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "REST/JSON API of innominatus, transcoded by the gateway to the platform's gRPC services "
                "from their google.api.http annotations. JSON follows the proto3 JSON mapping."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": sorted(tags.values(), key=lambda t: t["name"]),
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "responses": component_responses,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT access token, or an API key (inn_...)",
                    "description": "An access token from POST /api/v1/auth:login, or an API key starting with `inn_`.",
                }
            },
        },
    }
