"""Deployment sets: the immutable, content-hashed record of one deployment of an application.

A :class:`DeploymentSet` holds everything an environment runs for one application:

- ``workloads``: workload name -> Score document (map form, as submitted: placeholders unresolved);
- ``resources``: ``"<workload>.<ref>"`` (a workload's own resource) or any other key (a shared
  resource, matched to workloads by type, class and id) -> ``{type, class, id, outputs,
  secret_refs}``. ``outputs`` are the non-secret outputs; ``secret_refs`` maps each secret output
  to its ``secret://<store>/<path>#<key>`` reference. A secret value is never part of a set;
- ``artifacts``: relative path -> text, rendered by :mod:`innominatus.specs.artifacts`;
- ``created_by``, ``reason``, ``parent`` (the content hash of the previous set, or ``""``).

``content_hash`` is the sha256 of a canonical JSON (keys sorted, no whitespace, UTF-8) of
application, environment, workloads, resources and artifacts -- not of who, why, when or the
parent -- so deploying identical content again gives the same hash. ``inputs_hash`` covers the
same minus the artifacts: the artifacts carry it as an annotation (they cannot carry the content
hash, which depends on them).

The set is frozen: its maps are read-only (:class:`FrozenDict`, lists become tuples) and
:meth:`DeploymentSet.thaw` gives plain, mutable copies. :func:`diff_sets` compares two sets with
the structural diff of :mod:`innominatus.specs.diff`; secret references are compared as text and
never dereferenced.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from innominatus.kit.secretrefs import is_secret_ref
from innominatus.specs.diff import Change, diff_documents, escape

__all__ = [
    "DeploymentSet",
    "DeploymentSetError",
    "FrozenDict",
    "SET_FORMAT",
    "build_set",
    "canonical_json",
    "diff_sets",
    "inputs_hash",
    "resource_for",
    "thaw",
]

#: ``format`` field of :meth:`DeploymentSet.to_json`; bumped if the layout ever changes.
SET_FORMAT = "innominatus.dev/deployment-set/v1"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class DeploymentSetError(ValueError):
    """A deployment set (or its JSON) is malformed."""


class FrozenDict(dict):
    """A read-only ``dict`` (JSON-serialisable like any dict)."""

    def _readonly(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("a deployment set is immutable: use DeploymentSet.thaw() for a mutable copy")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict) -> "FrozenDict":
        return self  # immutable all the way down

    def __copy__(self) -> "FrozenDict":
        return self

    def __reduce__(self):
        return (_frozen_from_items, (list(self.items()),))


def _frozen_from_items(items: list) -> FrozenDict:
    return FrozenDict(items)


def _freeze(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DeploymentSetError(f"{where}: keys must be strings, not {type(key).__name__} {key!r}")
            out[key] = _freeze(item, f"{where}/{escape(key)}")
        return FrozenDict(out)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item, f"{where}/{i}") for i, item in enumerate(value))
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise DeploymentSetError(f"{where}: {value!r} is not a JSON number")
        return value
    raise DeploymentSetError(f"{where}: {type(value).__name__} is not a JSON value")


def thaw(value: Any) -> Any:
    """A plain, mutable copy (dicts and lists) of a frozen value."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(item) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no whitespace, UTF-8: equal content gives equal bytes whatever the key order."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise DeploymentSetError(f"not canonical JSON: {exc}") from None


def _sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def inputs_hash(application: str, environment: str, workloads: Mapping, resources: Mapping) -> str:
    """sha256 over what the artifacts are rendered from (the set minus its artifacts)."""
    return _sha256({"application": application, "environment": environment,
                    "workloads": thaw(workloads), "resources": thaw(resources)})


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise DeploymentSetError(f"{what} {value!r} must be an RFC 1123 label: lower-case letters, digits and '-', "
                                 "1 to 63 characters, starting and ending with a letter or digit")
    return value


def _check_resource(key: str, spec: Any) -> None:
    where = f"resources/{escape(key)}"
    if not isinstance(spec, Mapping):
        raise DeploymentSetError(f"{where}: expected a map with type, class, id, outputs and secret_refs")
    unknown = set(spec) - {"type", "class", "id", "outputs", "secret_refs"}
    if unknown:
        raise DeploymentSetError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if not isinstance(spec.get("type"), str) or not spec.get("type"):
        raise DeploymentSetError(f"{where}: `type` is required")
    for name in ("class", "id"):
        if spec.get(name) is not None and not isinstance(spec.get(name), str):
            raise DeploymentSetError(f"{where}: `{name}` must be a string")
    if not isinstance(spec.get("outputs", {}), Mapping):
        raise DeploymentSetError(f"{where}: `outputs` must be a map")
    refs = spec.get("secret_refs", {})
    if not isinstance(refs, Mapping):
        raise DeploymentSetError(f"{where}: `secret_refs` must map output names to secret:// references")
    for name, ref in refs.items():
        if not is_secret_ref(ref):
            # Never echo the value: it may be the plaintext secret someone put here by mistake.
            raise DeploymentSetError(f"{where}/secret_refs/{escape(name)}: not a secret reference "
                                     "(expected secret://<store>/<path>#<key>; secret values never go in a set)")
        if name in spec.get("outputs", {}):
            raise DeploymentSetError(f"{where}: output {name!r} is both a plain output and a secret reference")


def _check_artifact_path(path: Any) -> None:
    if not isinstance(path, str) or not path or "\0" in path or "\\" in path:
        raise DeploymentSetError(f"artifact path {path!r} is not a relative POSIX path")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise DeploymentSetError(f"artifact path {path!r} must be relative, without '.', '..', '//' or .git")


@dataclass(frozen=True)
class DeploymentSet:
    application: str
    environment: str
    workloads: Mapping[str, Any]
    resources: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)
    created_by: str = ""
    reason: str = ""
    parent: str = ""

    def __post_init__(self) -> None:
        _check_name(self.application, "application")
        _check_name(self.environment, "environment")
        if not isinstance(self.workloads, Mapping) or not self.workloads:
            raise DeploymentSetError("workloads: a deployment set needs at least one workload")
        for name, document in self.workloads.items():
            _check_name(name, "workload name")
            if not isinstance(document, Mapping):
                raise DeploymentSetError(f"workloads/{name}: expected a Score document (a map)")
        if not isinstance(self.resources, Mapping):
            raise DeploymentSetError("resources: expected a map")
        for key, spec in self.resources.items():
            _check_resource(key, spec)
        if not isinstance(self.artifacts, Mapping):
            raise DeploymentSetError("artifacts: expected a map of relative paths to text")
        for path, text in self.artifacts.items():
            _check_artifact_path(path)
            if not isinstance(text, str):
                raise DeploymentSetError(f"artifacts/{escape(path)}: expected text")
        for name in ("created_by", "reason"):
            if not isinstance(getattr(self, name), str):
                raise DeploymentSetError(f"{name} must be text")
        if self.parent and not (isinstance(self.parent, str) and _HASH.match(self.parent)):
            raise DeploymentSetError("parent must be the content hash (64 hex digits) of the previous set, or ''")
        object.__setattr__(self, "workloads", _freeze(self.workloads, "workloads"))
        object.__setattr__(self, "resources", _freeze(self.resources, "resources"))
        object.__setattr__(self, "artifacts", _freeze(self.artifacts, "artifacts"))

    # -- identity ---------------------------------------------------------------------------

    def content(self) -> dict[str, Any]:
        """What the hash covers, as plain values."""
        return {"application": self.application, "environment": self.environment,
                "workloads": thaw(self.workloads), "resources": thaw(self.resources),
                "artifacts": thaw(self.artifacts)}

    @property
    def content_hash(self) -> str:
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            cached = _sha256(self.content())
            object.__setattr__(self, "_content_hash", cached)
        return cached

    @property
    def inputs_hash(self) -> str:
        return inputs_hash(self.application, self.environment, self.workloads, self.resources)

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeploymentSet):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.content_hash, self.created_by, self.reason, self.parent))

    # -- (de)serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": SET_FORMAT, "content_hash": self.content_hash, **self.content(),
                "created_by": self.created_by, "reason": self.reason, "parent": self.parent}

    def to_json(self) -> str:
        """Canonical (sorted keys), indented for readable diffs in Git, newline-terminated."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeploymentSet":
        if not isinstance(data, Mapping):
            raise DeploymentSetError("a deployment set is a JSON object")
        if data.get("format", SET_FORMAT) != SET_FORMAT:
            raise DeploymentSetError(f"unsupported deployment set format {data.get('format')!r} (expected {SET_FORMAT})")
        unknown = set(data) - {"format", "content_hash", "application", "environment", "workloads", "resources",
                               "artifacts", "created_by", "reason", "parent"}
        if unknown:
            raise DeploymentSetError(f"unknown field(s) {', '.join(sorted(unknown))}")
        try:
            result = cls(application=data["application"], environment=data["environment"],
                         workloads=data["workloads"], resources=data.get("resources", {}),
                         artifacts=data.get("artifacts", {}), created_by=data.get("created_by", ""),
                         reason=data.get("reason", ""), parent=data.get("parent", ""))
        except KeyError as exc:
            raise DeploymentSetError(f"missing field {exc.args[0]!r}") from None
        claimed = data.get("content_hash")
        if claimed is not None and claimed != result.content_hash:
            raise DeploymentSetError(f"content hash mismatch: the JSON says {claimed!r} but its content hashes to "
                                     f"{result.content_hash!r} (edited by hand?)")
        return result

    @classmethod
    def from_json(cls, text: str | bytes) -> "DeploymentSet":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise DeploymentSetError(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    def thaw(self) -> dict[str, Any]:
        """Plain, mutable copies of every field (for building a new set from this one)."""
        return {"application": self.application, "environment": self.environment,
                "workloads": thaw(self.workloads), "resources": thaw(self.resources),
                "artifacts": thaw(self.artifacts), "created_by": self.created_by,
                "reason": self.reason, "parent": self.parent}

    def redeployed(self, *, created_by: str, reason: str, parent: str = "") -> "DeploymentSet":
        """The same content (same hash) under a new who/why/parent: what a rollback deploys."""
        return replace(self, created_by=created_by, reason=reason, parent=parent)


# -- building -------------------------------------------------------------------------------


def resource_for(resources: Mapping[str, Any], workload: str, ref: str, declared: Mapping | None = None) -> tuple[str, Mapping] | None:
    """The set's entry for resource ``ref`` of ``workload``: ``"<workload>.<ref>"`` first, else the
    shared entry (a key without that prefix) whose type, class and id match the declaration
    (``class`` defaults to ``default``). ``None`` when there is none; an error when several match."""
    own = f"{workload}.{ref}"
    if own in resources:
        return own, resources[own]
    declared = declared or {}
    if not declared.get("id"):
        return None
    want = (declared.get("type"), declared.get("class") or "default", declared.get("id"))
    matches = [(key, spec) for key, spec in sorted(resources.items())
               if (spec.get("type"), spec.get("class") or "default", spec.get("id")) == want]
    if len(matches) > 1:
        raise DeploymentSetError(f"resource {ref!r} of workload {workload!r} matches several shared resources: "
                                 f"{', '.join(key for key, _ in matches)}")
    return matches[0] if matches else None


def build_set(application: str, environment: str, workloads: Mapping[str, Any], resources: Mapping[str, Any],
              *, created_by: str = "", reason: str = "", parent: str = "") -> DeploymentSet:
    """Render the artifacts for these inputs and return the complete, hashed set."""
    from innominatus.specs.artifacts import render_artifacts  # noqa: PLC0415 (artifacts imports this module)

    inputs = DeploymentSet(application, environment, workloads, resources)  # validates before rendering
    return replace(inputs, artifacts=render_artifacts(inputs), created_by=created_by, reason=reason, parent=parent)


# -- diff -----------------------------------------------------------------------------------

_SECTIONS = ("workloads", "resources", "artifacts")


def diff_sets(a: DeploymentSet, b: DeploymentSet, sections: Iterable[str] = _SECTIONS) -> list[Change]:
    """Every change from ``a`` to ``b`` in workloads, resources and artifacts, each a
    :class:`~innominatus.specs.diff.Change` (op, pointer, old, new) with pointers such as
    ``/workloads/checkout/containers/api/image`` or ``/resources/checkout.db/secret_refs/password``
    (an artifact is one value: ``/artifacts/k8s~1checkout~1deployment.yaml``). Application or
    environment changes are reported at ``/application`` and ``/environment``. Secret references
    are compared as references; nothing is dereferenced."""
    changes: list[Change] = []
    for name in ("application", "environment"):
        changes += diff_documents({name: getattr(a, name)}, {name: getattr(b, name)})
    base = {name: thaw(getattr(a, name)) for name in sections}
    target = {name: thaw(getattr(b, name)) for name in sections}
    return changes + diff_documents(base, target)
