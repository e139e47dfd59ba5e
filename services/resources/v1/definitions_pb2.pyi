import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from innominatus.common.v1 import method_policy_pb2 as _method_policy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MatchingCriteria(_message.Message):
    __slots__ = ("env_type", "environment", "application", "team")
    ENV_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    env_type: str
    environment: str
    application: str
    team: str
    def __init__(self, env_type: _Optional[str] = ..., environment: _Optional[str] = ..., application: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class Provisioner(_message.Message):
    __slots__ = ("kind", "driver", "template", "command", "config", "timeout_seconds")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    driver: str
    template: str
    command: _containers.RepeatedScalarFieldContainer[str]
    config: _struct_pb2.Struct
    timeout_seconds: int
    def __init__(self, kind: _Optional[str] = ..., driver: _Optional[str] = ..., template: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ResourceDefinition(_message.Message):
    __slots__ = ("name", "version", "type", "id", "criteria", "provisioner", "params_schema", "outputs", "secret_outputs", "description", "etag", "builtin", "creator", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    PROVISIONER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SECRET_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    type: str
    id: str
    criteria: MatchingCriteria
    provisioner: Provisioner
    params_schema: _struct_pb2.Struct
    outputs: _containers.RepeatedScalarFieldContainer[str]
    secret_outputs: _containers.RepeatedScalarFieldContainer[str]
    description: str
    etag: str
    builtin: bool
    creator: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., type: _Optional[str] = ..., id: _Optional[str] = ..., criteria: _Optional[_Union[MatchingCriteria, _Mapping]] = ..., provisioner: _Optional[_Union[Provisioner, _Mapping]] = ..., params_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outputs: _Optional[_Iterable[str]] = ..., secret_outputs: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., etag: _Optional[str] = ..., builtin: _Optional[bool] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class CreateResourceDefinitionRequest(_message.Message):
    __slots__ = ("resource_definition", "resource_definition_id")
    RESOURCE_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    resource_definition: ResourceDefinition
    resource_definition_id: str
    def __init__(self, resource_definition: _Optional[_Union[ResourceDefinition, _Mapping]] = ..., resource_definition_id: _Optional[str] = ...) -> None: ...

class CreateResourceDefinitionResponse(_message.Message):
    __slots__ = ("resource_definition",)
    RESOURCE_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    resource_definition: ResourceDefinition
    def __init__(self, resource_definition: _Optional[_Union[ResourceDefinition, _Mapping]] = ...) -> None: ...

class UpdateResourceDefinitionRequest(_message.Message):
    __slots__ = ("resource_definition",)
    RESOURCE_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    resource_definition: ResourceDefinition
    def __init__(self, resource_definition: _Optional[_Union[ResourceDefinition, _Mapping]] = ...) -> None: ...

class UpdateResourceDefinitionResponse(_message.Message):
    __slots__ = ("resource_definition",)
    RESOURCE_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    resource_definition: ResourceDefinition
    def __init__(self, resource_definition: _Optional[_Union[ResourceDefinition, _Mapping]] = ...) -> None: ...

class GetResourceDefinitionRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetResourceDefinitionResponse(_message.Message):
    __slots__ = ("resource_definition", "versions")
    RESOURCE_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    resource_definition: ResourceDefinition
    versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, resource_definition: _Optional[_Union[ResourceDefinition, _Mapping]] = ..., versions: _Optional[_Iterable[int]] = ...) -> None: ...

class ListResourceDefinitionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "type")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    type: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class ListResourceDefinitionsResponse(_message.Message):
    __slots__ = ("resource_definitions", "next_page_token")
    RESOURCE_DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resource_definitions: _containers.RepeatedCompositeFieldContainer[ResourceDefinition]
    next_page_token: str
    def __init__(self, resource_definitions: _Optional[_Iterable[_Union[ResourceDefinition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteResourceDefinitionRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteResourceDefinitionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProvisionerDriver(_message.Message):
    __slots__ = ("name", "description", "types")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., types: _Optional[_Iterable[str]] = ...) -> None: ...

class ProvisionerKind(_message.Message):
    __slots__ = ("kind", "description")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    description: str
    def __init__(self, kind: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListProvisionersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProvisionersResponse(_message.Message):
    __slots__ = ("drivers", "kinds")
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    drivers: _containers.RepeatedCompositeFieldContainer[ProvisionerDriver]
    kinds: _containers.RepeatedCompositeFieldContainer[ProvisionerKind]
    def __init__(self, drivers: _Optional[_Iterable[_Union[ProvisionerDriver, _Mapping]]] = ..., kinds: _Optional[_Iterable[_Union[ProvisionerKind, _Mapping]]] = ...) -> None: ...
