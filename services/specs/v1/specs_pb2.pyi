import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from innominatus.common.v1 import method_policy_pb2 as _method_policy_pb2
from innominatus.engine.v1 import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]

class EnvironmentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENVIRONMENT_TYPE_UNSPECIFIED: _ClassVar[EnvironmentType]
    ENVIRONMENT_TYPE_DEVELOPMENT: _ClassVar[EnvironmentType]
    ENVIRONMENT_TYPE_STAGING: _ClassVar[EnvironmentType]
    ENVIRONMENT_TYPE_PRODUCTION: _ClassVar[EnvironmentType]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_ERROR: Severity
SEVERITY_WARNING: Severity
SEVERITY_INFO: Severity
ENVIRONMENT_TYPE_UNSPECIFIED: EnvironmentType
ENVIRONMENT_TYPE_DEVELOPMENT: EnvironmentType
ENVIRONMENT_TYPE_STAGING: EnvironmentType
ENVIRONMENT_TYPE_PRODUCTION: EnvironmentType

class Finding(_message.Message):
    __slots__ = ("code", "severity", "message", "pointer", "line", "column", "hint")
    CODE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POINTER_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    code: str
    severity: Severity
    message: str
    pointer: str
    line: int
    column: int
    hint: str
    def __init__(self, code: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ..., message: _Optional[str] = ..., pointer: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., hint: _Optional[str] = ...) -> None: ...

class ValidateWorkloadRequest(_message.Message):
    __slots__ = ("score_yaml",)
    SCORE_YAML_FIELD_NUMBER: _ClassVar[int]
    score_yaml: str
    def __init__(self, score_yaml: _Optional[str] = ...) -> None: ...

class ValidateWorkloadResponse(_message.Message):
    __slots__ = ("valid", "findings", "workload")
    VALID_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    workload: str
    def __init__(self, valid: _Optional[bool] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., workload: _Optional[str] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("name", "application", "environment", "workload", "workload_version", "content_hash", "run", "creator", "create_time", "resources", "set_hash", "gitops_commit", "rollback_of", "removed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SET_HASH_FIELD_NUMBER: _ClassVar[int]
    GITOPS_COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_OF_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    name: str
    application: str
    environment: str
    workload: str
    workload_version: int
    content_hash: str
    run: str
    creator: str
    create_time: _timestamp_pb2.Timestamp
    resources: _containers.RepeatedScalarFieldContainer[str]
    set_hash: str
    gitops_commit: str
    rollback_of: str
    removed: bool
    def __init__(self, name: _Optional[str] = ..., application: _Optional[str] = ..., environment: _Optional[str] = ..., workload: _Optional[str] = ..., workload_version: _Optional[int] = ..., content_hash: _Optional[str] = ..., run: _Optional[str] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resources: _Optional[_Iterable[str]] = ..., set_hash: _Optional[str] = ..., gitops_commit: _Optional[str] = ..., rollback_of: _Optional[str] = ..., removed: _Optional[bool] = ...) -> None: ...

class FinalizeDeploymentRequest(_message.Message):
    __slots__ = ("name", "resource_outputs", "run")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    name: str
    resource_outputs: _struct_pb2.Struct
    run: str
    def __init__(self, name: _Optional[str] = ..., resource_outputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., run: _Optional[str] = ...) -> None: ...

class FinalizeDeploymentResponse(_message.Message):
    __slots__ = ("set_hash", "commit", "workload", "manifest", "deployment")
    SET_HASH_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    set_hash: str
    commit: str
    workload: _struct_pb2.Struct
    manifest: str
    deployment: Deployment
    def __init__(self, set_hash: _Optional[str] = ..., commit: _Optional[str] = ..., workload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., manifest: _Optional[str] = ..., deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class CreateDeploymentRequest(_message.Message):
    __slots__ = ("score_yaml", "environment", "application", "request_id", "team")
    SCORE_YAML_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    score_yaml: str
    environment: str
    application: str
    request_id: str
    team: str
    def __init__(self, score_yaml: _Optional[str] = ..., environment: _Optional[str] = ..., application: _Optional[str] = ..., request_id: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class CreateDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "run", "findings", "team")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    run: _engine_pb2.Run
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    team: str
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., run: _Optional[_Union[_engine_pb2.Run, _Mapping]] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., team: _Optional[str] = ...) -> None: ...

class Application(_message.Message):
    __slots__ = ("name", "workloads", "environments", "latest_deployment", "create_time", "update_time", "etag", "team")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    LATEST_DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    name: str
    workloads: _containers.RepeatedScalarFieldContainer[str]
    environments: _containers.RepeatedScalarFieldContainer[str]
    latest_deployment: Deployment
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    team: str
    def __init__(self, name: _Optional[str] = ..., workloads: _Optional[_Iterable[str]] = ..., environments: _Optional[_Iterable[str]] = ..., latest_deployment: _Optional[_Union[Deployment, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., team: _Optional[str] = ...) -> None: ...

class ListApplicationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApplicationsResponse(_message.Message):
    __slots__ = ("applications", "next_page_token")
    APPLICATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    applications: _containers.RepeatedCompositeFieldContainer[Application]
    next_page_token: str
    def __init__(self, applications: _Optional[_Iterable[_Union[Application, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetApplicationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetApplicationResponse(_message.Message):
    __slots__ = ("application", "deployments")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    application: Application
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    def __init__(self, application: _Optional[_Union[Application, _Mapping]] = ..., deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("name", "latest_version", "latest_content_hash", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    latest_version: int
    latest_content_hash: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., latest_version: _Optional[int] = ..., latest_content_hash: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkloadVersion(_message.Message):
    __slots__ = ("name", "version", "content_hash", "creator", "create_time", "score_yaml")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SCORE_YAML_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    content_hash: str
    creator: str
    create_time: _timestamp_pb2.Timestamp
    score_yaml: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., content_hash: _Optional[str] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., score_yaml: _Optional[str] = ...) -> None: ...

class ListWorkloadsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkloadsResponse(_message.Message):
    __slots__ = ("workloads", "next_page_token")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    next_page_token: str
    def __init__(self, workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListWorkloadVersionsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkloadVersionsResponse(_message.Message):
    __slots__ = ("workload_versions", "next_page_token")
    WORKLOAD_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workload_versions: _containers.RepeatedCompositeFieldContainer[WorkloadVersion]
    next_page_token: str
    def __init__(self, workload_versions: _Optional[_Iterable[_Union[WorkloadVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetWorkloadVersionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetWorkloadVersionResponse(_message.Message):
    __slots__ = ("workload_version",)
    WORKLOAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    workload_version: WorkloadVersion
    def __init__(self, workload_version: _Optional[_Union[WorkloadVersion, _Mapping]] = ...) -> None: ...

class DiffWorkloadVersionsRequest(_message.Message):
    __slots__ = ("name", "base", "target")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    name: str
    base: int
    target: int
    def __init__(self, name: _Optional[str] = ..., base: _Optional[int] = ..., target: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("op", "pointer", "old_value", "new_value")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[Change.Op]
        OP_ADDED: _ClassVar[Change.Op]
        OP_REMOVED: _ClassVar[Change.Op]
        OP_CHANGED: _ClassVar[Change.Op]
    OP_UNSPECIFIED: Change.Op
    OP_ADDED: Change.Op
    OP_REMOVED: Change.Op
    OP_CHANGED: Change.Op
    OP_FIELD_NUMBER: _ClassVar[int]
    POINTER_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    op: Change.Op
    pointer: str
    old_value: _struct_pb2.Value
    new_value: _struct_pb2.Value
    def __init__(self, op: _Optional[_Union[Change.Op, str]] = ..., pointer: _Optional[str] = ..., old_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., new_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class DiffWorkloadVersionsResponse(_message.Message):
    __slots__ = ("base_version", "target_version", "changes", "unified_diff")
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    UNIFIED_DIFF_FIELD_NUMBER: _ClassVar[int]
    base_version: str
    target_version: str
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    unified_diff: str
    def __init__(self, base_version: _Optional[str] = ..., target_version: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., unified_diff: _Optional[str] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("application", "environment", "page_size", "page_token")
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    application: str
    environment: str
    page_size: int
    page_token: str
    def __init__(self, application: _Optional[str] = ..., environment: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeploymentSetSummary(_message.Message):
    __slots__ = ("hash", "parent", "commit", "workloads", "resources", "artifacts", "created_by", "reason")
    HASH_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hash: str
    parent: str
    commit: str
    workloads: _containers.RepeatedScalarFieldContainer[str]
    resources: _containers.RepeatedScalarFieldContainer[str]
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    created_by: str
    reason: str
    def __init__(self, hash: _Optional[str] = ..., parent: _Optional[str] = ..., commit: _Optional[str] = ..., workloads: _Optional[_Iterable[str]] = ..., resources: _Optional[_Iterable[str]] = ..., artifacts: _Optional[_Iterable[str]] = ..., created_by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "deployment_set")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_SET_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    deployment_set: DeploymentSetSummary
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., deployment_set: _Optional[_Union[DeploymentSetSummary, _Mapping]] = ...) -> None: ...

class DiffDeploymentsRequest(_message.Message):
    __slots__ = ("name", "other", "specs_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    SPECS_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    other: str
    specs_only: bool
    def __init__(self, name: _Optional[str] = ..., other: _Optional[str] = ..., specs_only: _Optional[bool] = ...) -> None: ...

class DiffDeploymentsResponse(_message.Message):
    __slots__ = ("base_deployment", "target_deployment", "base_set_hash", "target_set_hash", "changes")
    BASE_DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    BASE_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    TARGET_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    base_deployment: str
    target_deployment: str
    base_set_hash: str
    target_set_hash: str
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, base_deployment: _Optional[str] = ..., target_deployment: _Optional[str] = ..., base_set_hash: _Optional[str] = ..., target_set_hash: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class RollbackDeploymentRequest(_message.Message):
    __slots__ = ("name", "reason", "request_id", "application", "environment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    request_id: str
    application: str
    environment: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., application: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class RollbackDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "run")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    run: _engine_pb2.Run
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ..., run: _Optional[_Union[_engine_pb2.Run, _Mapping]] = ...) -> None: ...

class DeleteApplicationRequest(_message.Message):
    __slots__ = ("name", "environment", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    environment: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., environment: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteApplicationResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _engine_pb2.Run
    def __init__(self, run: _Optional[_Union[_engine_pb2.Run, _Mapping]] = ...) -> None: ...

class FinalizeUndeployRequest(_message.Message):
    __slots__ = ("name", "environment", "run", "requested_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    environment: str
    run: str
    requested_by: str
    def __init__(self, name: _Optional[str] = ..., environment: _Optional[str] = ..., run: _Optional[str] = ..., requested_by: _Optional[str] = ...) -> None: ...

class FinalizeUndeployResponse(_message.Message):
    __slots__ = ("commit", "removed_deployments")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    commit: str
    removed_deployments: int
    def __init__(self, commit: _Optional[str] = ..., removed_deployments: _Optional[int] = ...) -> None: ...

class PlanUndeployRequest(_message.Message):
    __slots__ = ("name", "environment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    environment: str
    def __init__(self, name: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class UndeployClaim(_message.Message):
    __slots__ = ("ref", "resource", "depends_on")
    REF_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    ref: str
    resource: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[str] = ..., resource: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanUndeployResponse(_message.Message):
    __slots__ = ("deployed", "claims", "deployments", "environment_type")
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    deployed: bool
    claims: _containers.RepeatedCompositeFieldContainer[UndeployClaim]
    deployments: _containers.RepeatedScalarFieldContainer[str]
    environment_type: EnvironmentType
    def __init__(self, deployed: _Optional[bool] = ..., claims: _Optional[_Iterable[_Union[UndeployClaim, _Mapping]]] = ..., deployments: _Optional[_Iterable[str]] = ..., environment_type: _Optional[_Union[EnvironmentType, str]] = ...) -> None: ...

class GetApplicationOwnerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetApplicationOwnerResponse(_message.Message):
    __slots__ = ("exists", "team")
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    team: str
    def __init__(self, exists: _Optional[bool] = ..., team: _Optional[str] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("name", "type", "create_time", "requires_approval", "approvers", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: EnvironmentType
    create_time: _timestamp_pb2.Timestamp
    requires_approval: bool
    approvers: _containers.RepeatedScalarFieldContainer[str]
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[EnvironmentType, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requires_approval: _Optional[bool] = ..., approvers: _Optional[_Iterable[str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class CreateEnvironmentRequest(_message.Message):
    __slots__ = ("environment",)
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class CreateEnvironmentResponse(_message.Message):
    __slots__ = ("environment",)
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class ListEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEnvironmentsResponse(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[Environment]
    def __init__(self, environments: _Optional[_Iterable[_Union[Environment, _Mapping]]] = ...) -> None: ...

class GetEnvironmentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetEnvironmentResponse(_message.Message):
    __slots__ = ("environment",)
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class UpdateEnvironmentRequest(_message.Message):
    __slots__ = ("environment", "update_mask")
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateEnvironmentResponse(_message.Message):
    __slots__ = ("environment",)
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...
