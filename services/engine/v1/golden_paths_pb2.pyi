import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from innominatus.common.v1 import method_policy_pb2 as _method_policy_pb2
from innominatus.engine.v1 import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GoldenPathParam(_message.Message):
    __slots__ = ("name", "type", "description", "required", "default_value", "schema")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    description: str
    required: bool
    default_value: _struct_pb2.Value
    schema: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., required: _Optional[bool] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GoldenPathStep(_message.Message):
    __slots__ = ("id", "type", "depends_on", "condition", "uses")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    condition: str
    uses: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., condition: _Optional[str] = ..., uses: _Optional[str] = ...) -> None: ...

class GoldenPathVersion(_message.Message):
    __slots__ = ("version", "content_hash", "publish_time", "origin")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    version: str
    content_hash: str
    publish_time: _timestamp_pb2.Timestamp
    origin: str
    def __init__(self, version: _Optional[str] = ..., content_hash: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., origin: _Optional[str] = ...) -> None: ...

class GoldenPath(_message.Message):
    __slots__ = ("name", "version", "description", "tags", "owner", "params", "steps", "versions", "content_hash", "source_yaml", "ephemeral")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_YAML_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    owner: str
    params: _containers.RepeatedCompositeFieldContainer[GoldenPathParam]
    steps: _containers.RepeatedCompositeFieldContainer[GoldenPathStep]
    versions: _containers.RepeatedCompositeFieldContainer[GoldenPathVersion]
    content_hash: str
    source_yaml: str
    ephemeral: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., owner: _Optional[str] = ..., params: _Optional[_Iterable[_Union[GoldenPathParam, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[GoldenPathStep, _Mapping]]] = ..., versions: _Optional[_Iterable[_Union[GoldenPathVersion, _Mapping]]] = ..., content_hash: _Optional[str] = ..., source_yaml: _Optional[str] = ..., ephemeral: _Optional[bool] = ...) -> None: ...

class InvalidGoldenPath(_message.Message):
    __slots__ = ("file", "name", "findings")
    FILE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    file: str
    name: str
    findings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, file: _Optional[str] = ..., name: _Optional[str] = ..., findings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListGoldenPathsRequest(_message.Message):
    __slots__ = ("tag",)
    TAG_FIELD_NUMBER: _ClassVar[int]
    tag: str
    def __init__(self, tag: _Optional[str] = ...) -> None: ...

class ListGoldenPathsResponse(_message.Message):
    __slots__ = ("golden_paths", "invalid")
    GOLDEN_PATHS_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    golden_paths: _containers.RepeatedCompositeFieldContainer[GoldenPath]
    invalid: _containers.RepeatedCompositeFieldContainer[InvalidGoldenPath]
    def __init__(self, golden_paths: _Optional[_Iterable[_Union[GoldenPath, _Mapping]]] = ..., invalid: _Optional[_Iterable[_Union[InvalidGoldenPath, _Mapping]]] = ...) -> None: ...

class GetGoldenPathRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetGoldenPathResponse(_message.Message):
    __slots__ = ("golden_path", "invalid")
    GOLDEN_PATH_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    golden_path: GoldenPath
    invalid: InvalidGoldenPath
    def __init__(self, golden_path: _Optional[_Union[GoldenPath, _Mapping]] = ..., invalid: _Optional[_Union[InvalidGoldenPath, _Mapping]] = ...) -> None: ...

class RunGoldenPathRequest(_message.Message):
    __slots__ = ("name", "version", "params", "param_values", "application", "environment", "request_id")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARAM_VALUES_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    params: _containers.ScalarMap[str, str]
    param_values: _struct_pb2.Struct
    application: str
    environment: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., param_values: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., application: _Optional[str] = ..., environment: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RunGoldenPathResponse(_message.Message):
    __slots__ = ("run", "version", "expire_time")
    RUN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    run: _engine_pb2.Run
    version: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, run: _Optional[_Union[_engine_pb2.Run, _Mapping]] = ..., version: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PublishGoldenPathRequest(_message.Message):
    __slots__ = ("source_yaml",)
    SOURCE_YAML_FIELD_NUMBER: _ClassVar[int]
    source_yaml: str
    def __init__(self, source_yaml: _Optional[str] = ...) -> None: ...

class PublishGoldenPathResponse(_message.Message):
    __slots__ = ("golden_path", "created")
    GOLDEN_PATH_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    golden_path: GoldenPath
    created: bool
    def __init__(self, golden_path: _Optional[_Union[GoldenPath, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...
