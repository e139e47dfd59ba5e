import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from innominatus.common.v1 import method_policy_pb2 as _method_policy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_STATE_UNSPECIFIED: _ClassVar[ResourceState]
    RESOURCE_STATE_REQUESTED: _ClassVar[ResourceState]
    RESOURCE_STATE_PROVISIONING: _ClassVar[ResourceState]
    RESOURCE_STATE_ACTIVE: _ClassVar[ResourceState]
    RESOURCE_STATE_FAILED: _ClassVar[ResourceState]
    RESOURCE_STATE_DELETED: _ClassVar[ResourceState]
RESOURCE_STATE_UNSPECIFIED: ResourceState
RESOURCE_STATE_REQUESTED: ResourceState
RESOURCE_STATE_PROVISIONING: ResourceState
RESOURCE_STATE_ACTIVE: ResourceState
RESOURCE_STATE_FAILED: ResourceState
RESOURCE_STATE_DELETED: ResourceState

class ResourceClaim(_message.Message):
    __slots__ = ("ref", "type", "id", "params")
    REF_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    type: str
    id: str
    params: _struct_pb2.Struct
    def __init__(self, ref: _Optional[str] = ..., type: _Optional[str] = ..., id: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., **kwargs) -> None: ...

class Resource(_message.Message):
    __slots__ = ("name", "application", "environment", "workload", "claim", "state", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    application: str
    environment: str
    workload: str
    claim: ResourceClaim
    state: ResourceState
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., application: _Optional[str] = ..., environment: _Optional[str] = ..., workload: _Optional[str] = ..., claim: _Optional[_Union[ResourceClaim, _Mapping]] = ..., state: _Optional[_Union[ResourceState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClaimResourcesRequest(_message.Message):
    __slots__ = ("application", "environment", "workload", "claims")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    application: str
    environment: str
    workload: str
    claims: _containers.RepeatedCompositeFieldContainer[ResourceClaim]
    def __init__(self, application: _Optional[str] = ..., environment: _Optional[str] = ..., workload: _Optional[str] = ..., claims: _Optional[_Iterable[_Union[ResourceClaim, _Mapping]]] = ...) -> None: ...

class ClaimResourcesResponse(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "application", "environment")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    application: str
    environment: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., application: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "next_page_token")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    next_page_token: str
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetResourceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetResourceResponse(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...
