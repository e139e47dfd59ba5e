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
    RESOURCE_STATE_UPDATING: _ClassVar[ResourceState]
    RESOURCE_STATE_DEGRADED: _ClassVar[ResourceState]
    RESOURCE_STATE_DEPROVISIONING: _ClassVar[ResourceState]
RESOURCE_STATE_UNSPECIFIED: ResourceState
RESOURCE_STATE_REQUESTED: ResourceState
RESOURCE_STATE_PROVISIONING: ResourceState
RESOURCE_STATE_ACTIVE: ResourceState
RESOURCE_STATE_FAILED: ResourceState
RESOURCE_STATE_DELETED: ResourceState
RESOURCE_STATE_UPDATING: ResourceState
RESOURCE_STATE_DEGRADED: ResourceState
RESOURCE_STATE_DEPROVISIONING: ResourceState

class ResourceTransition(_message.Message):
    __slots__ = ("to", "time", "reason", "actor")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    to: ResourceState
    time: _timestamp_pb2.Timestamp
    reason: str
    actor: str
    def __init__(self, to: _Optional[_Union[ResourceState, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., **kwargs) -> None: ...

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
    __slots__ = ("name", "application", "environment", "workload", "claim", "state", "create_time", "update_time", "outputs", "secret_refs", "status_reason", "transitions", "definition", "shared_key", "workloads", "environment_type", "team")
    class SecretRefsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SECRET_REFS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    SHARED_KEY_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    name: str
    application: str
    environment: str
    workload: str
    claim: ResourceClaim
    state: ResourceState
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    outputs: _struct_pb2.Struct
    secret_refs: _containers.ScalarMap[str, str]
    status_reason: str
    transitions: _containers.RepeatedCompositeFieldContainer[ResourceTransition]
    definition: str
    shared_key: str
    workloads: _containers.RepeatedScalarFieldContainer[str]
    environment_type: str
    team: str
    def __init__(self, name: _Optional[str] = ..., application: _Optional[str] = ..., environment: _Optional[str] = ..., workload: _Optional[str] = ..., claim: _Optional[_Union[ResourceClaim, _Mapping]] = ..., state: _Optional[_Union[ResourceState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., secret_refs: _Optional[_Mapping[str, str]] = ..., status_reason: _Optional[str] = ..., transitions: _Optional[_Iterable[_Union[ResourceTransition, _Mapping]]] = ..., definition: _Optional[str] = ..., shared_key: _Optional[str] = ..., workloads: _Optional[_Iterable[str]] = ..., environment_type: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class ClaimResourcesRequest(_message.Message):
    __slots__ = ("application", "environment", "workload", "claims", "environment_type", "team")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    application: str
    environment: str
    workload: str
    claims: _containers.RepeatedCompositeFieldContainer[ResourceClaim]
    environment_type: str
    team: str
    def __init__(self, application: _Optional[str] = ..., environment: _Optional[str] = ..., workload: _Optional[str] = ..., claims: _Optional[_Iterable[_Union[ResourceClaim, _Mapping]]] = ..., environment_type: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class ClaimResourcesResponse(_message.Message):
    __slots__ = ("resources", "dropped")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    dropped: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., dropped: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

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

class ProvisionResourceRequest(_message.Message):
    __slots__ = ("name", "force", "idempotency_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    idempotency_key: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ProvisionResourceResponse(_message.Message):
    __slots__ = ("resource", "provisioned")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PROVISIONED_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    provisioned: bool
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., provisioned: _Optional[bool] = ...) -> None: ...

class DeprovisionResourceRequest(_message.Message):
    __slots__ = ("name", "force", "application", "workload")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    application: str
    workload: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., application: _Optional[str] = ..., workload: _Optional[str] = ...) -> None: ...

class DeprovisionResourceResponse(_message.Message):
    __slots__ = ("resource", "released", "remaining_claims")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    released: bool
    remaining_claims: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., released: _Optional[bool] = ..., remaining_claims: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckResourceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CheckResourceResponse(_message.Message):
    __slots__ = ("resource", "healthy", "drifted", "reason")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    healthy: bool
    drifted: bool
    reason: str
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., healthy: _Optional[bool] = ..., drifted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class RevealResourceSecretsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevealResourceSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.ScalarMap[str, str]
    def __init__(self, secrets: _Optional[_Mapping[str, str]] = ...) -> None: ...
