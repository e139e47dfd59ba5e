from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
METHOD_POLICY_FIELD_NUMBER: _ClassVar[int]
method_policy: _descriptor.FieldDescriptor

class MethodPolicy(_message.Message):
    __slots__ = ("mutation", "permission", "resource_type", "callers", "anonymous", "service_subject", "read_roles", "omit_request_from_policy")
    MUTATION_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CALLERS_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    READ_ROLES_FIELD_NUMBER: _ClassVar[int]
    OMIT_REQUEST_FROM_POLICY_FIELD_NUMBER: _ClassVar[int]
    mutation: bool
    permission: str
    resource_type: str
    callers: _containers.RepeatedScalarFieldContainer[str]
    anonymous: bool
    service_subject: bool
    read_roles: _containers.RepeatedScalarFieldContainer[str]
    omit_request_from_policy: bool
    def __init__(self, mutation: _Optional[bool] = ..., permission: _Optional[str] = ..., resource_type: _Optional[str] = ..., callers: _Optional[_Iterable[str]] = ..., anonymous: _Optional[bool] = ..., service_subject: _Optional[bool] = ..., read_roles: _Optional[_Iterable[str]] = ..., omit_request_from_policy: _Optional[bool] = ...) -> None: ...
