"""Resource definitions: which provisioner makes a claimed resource, and with what.

A definition names a resource ``type``, optionally a ``class_`` and a shared ``id``, matching
``criteria`` (``env_type``, ``environment``, ``application``, ``team``; empty = any), a
``provisioner`` (a built-in driver, a Jinja2 template or an external command, with its
``config``), the JSON schema of the claim's params and the outputs / secret outputs the
provisioner must provide.

:func:`match` picks the most specific definition for a claim. Specificity is a rank, compared
field by field in this order: ``id`` > ``class`` > ``environment`` > ``application`` > ``team``
> ``env_type`` (a definition naming a field beats every definition that does not, whatever else
they name). Two definitions of one type therefore only tie when they name the same id, class
and criteria; :func:`check_no_ties` refuses that when a definition is stored, so matching never
has to guess.

Built-in defaults (:func:`builtin_definitions`) cover the driver types so the embedded
platform works without admin setup; :func:`load_definitions` returns one only while no stored
definition of its type exists.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import jsonschema
from sqlalchemy import func, select

from innominatus.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
CRITERIA_KEYS = ("env_type", "environment", "application", "team")
PROVISIONER_KINDS = ("driver", "template", "command")
DEFAULT_CLASS = "default"
MAX_COMMAND_TIMEOUT = 3600
DEFAULT_COMMAND_TIMEOUT = 60

# Specificity weights: distinct powers of two, so comparing sums compares field by field.
_WEIGHTS = {"id": 32, "class": 16, "environment": 8, "application": 4, "team": 2, "env_type": 1}


@dataclass
class ResourceDefinition:
    name: str
    version: int = 1
    type: str = ""
    class_: str = ""  # "" = any class
    id: str = ""  # "" = any shared id
    criteria: dict[str, str] = field(default_factory=dict)
    provisioner: dict[str, Any] = field(default_factory=dict)
    params_schema: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    secret_outputs: list[str] = field(default_factory=list)
    description: str = ""
    builtin: bool = False
    creator: str = ""
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def criteria_items(self) -> dict[str, str]:
        """The non-empty matching criteria."""
        return {k: str(self.criteria.get(k) or "") for k in CRITERIA_KEYS if self.criteria.get(k)}

    def specificity(self) -> int:
        score = sum(_WEIGHTS[k] for k in self.criteria_items())
        if self.id:
            score += _WEIGHTS["id"]
        if self.class_:
            score += _WEIGHTS["class"]
        return score

    def describe_match(self) -> str:
        parts = [f"class {self.class_!r}"] if self.class_ else []
        if self.id:
            parts.append(f"id {self.id!r}")
        parts += [f"{k} {v!r}" for k, v in self.criteria_items().items()]
        return ", ".join(parts) or "anything"


class NoDefinition(FailedPrecondition):
    """No resource definition matches a claim."""

    default_reason = "NO_RESOURCE_DEFINITION"


def _claim_class(class_: str) -> str:
    return class_ or DEFAULT_CLASS


def matches(
    definition: ResourceDefinition,
    *,
    type: str,
    class_: str = "",
    id: str = "",
    env_type: str = "",
    environment: str = "",
    application: str = "",
    team: str = "",
) -> bool:
    if definition.type != type:
        return False
    if definition.class_ and definition.class_ != _claim_class(class_):
        return False
    if definition.id and definition.id != id:
        return False
    asked = {"env_type": env_type, "environment": environment, "application": application, "team": team}
    return all(asked[k] == v for k, v in definition.criteria_items().items())


def match(
    definitions: list[ResourceDefinition],
    *,
    type: str,
    class_: str = "",
    id: str = "",
    env_type: str = "",
    environment: str = "",
    application: str = "",
    team: str = "",
) -> ResourceDefinition:
    """The most specific definition matching the claim; :class:`NoDefinition` when none does.

    A claim without a class asks for class ``default``; a definition without a class matches
    every class. Equal specificity among the candidates cannot happen for definitions stored
    through :func:`check_no_ties`; should it (e.g. hand-edited rows) the first by name wins.
    """
    asked = dict(type=type, class_=class_, id=id, env_type=env_type, environment=environment,
                 application=application, team=team)
    candidates = [d for d in definitions if matches(d, **asked)]
    if candidates:
        return sorted(candidates, key=lambda d: (-d.specificity(), d.name))[0]
    known = sorted({d.type for d in definitions})
    context = ", ".join(f"{k} {v!r}" for k, v in (
        ("class", _claim_class(class_)), ("id", id), ("environment", environment), ("env_type", env_type),
        ("application", application), ("team", team)) if v)
    of_type = sorted((d for d in definitions if d.type == type), key=lambda d: d.name)
    metadata = {"type": type, "known_types": ",".join(known)}
    if of_type:
        near = "; ".join(f"{d.name} needs {d.describe_match()}" for d in of_type[:10])
        message = (
            f"no resource definition of type {type!r} matches {context or 'this claim'}: {near}. "
            "Ask a platform admin for a definition that covers it (innominatus resources definitions list)"
        )
    else:
        close = difflib.get_close_matches(type, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if close:
            metadata["suggestion"] = close[0]
        message = (
            f"no resource definition for type {type!r}{hint}; known types: {', '.join(known) or 'none'}"
        )
    raise NoDefinition(message, metadata=metadata)


def check_no_ties(existing: Iterable[ResourceDefinition], new: ResourceDefinition) -> None:
    """Refuse ``new`` when a definition of another name would tie with it for some claim.

    With the rank of :func:`match`, two definitions tie exactly when they have the same type,
    class, id and matching criteria.
    """
    key = (new.type, new.class_, new.id, tuple(sorted(new.criteria_items().items())))
    for other in existing:
        if other.name == new.name:
            continue
        if (other.type, other.class_, other.id, tuple(sorted(other.criteria_items().items()))) == key:
            raise InvalidArgument(
                f"resource definition {new.name!r} would be ambiguous with {other.name!r}: both provision "
                f"type {new.type!r} for {new.describe_match()}. Make one of them more specific "
                f"(class, id or criteria) or update {other.name!r} instead",
                reason="AMBIGUOUS_DEFINITION",
                metadata={"definition": new.name, "conflicts_with": other.name},
            )


# ---------------------------------------------------------------------------------------------
# Validation


def validate_definition(d: ResourceDefinition) -> None:
    """Every problem of ``d`` at once, as INVALID_ARGUMENT with one violation per field."""
    from innominatus.resources.drivers import DRIVERS, known_drivers
    from innominatus.resources.provisioners import template_problem

    problems: list[FieldViolation] = []

    def bad(path: str, text: str) -> None:
        problems.append(FieldViolation(path, text))

    if not isinstance(d.name, str) or not _NAME.fullmatch(d.name or ""):
        bad("name", "1-63 lowercase letters, digits and '-', not starting or ending with '-'")
    if not isinstance(d.type, str) or not _NAME.fullmatch(d.type or ""):
        bad("type", "a resource type is required: lowercase letters, digits and '-'")
    for path, value in (("class", d.class_), ("id", d.id)):
        if not isinstance(value, str) or len(value) > 128:
            bad(path, "must be a string of at most 128 characters")
    if not isinstance(d.criteria, dict):
        bad("criteria", "must be a mapping")
    else:
        for key, value in d.criteria.items():
            if key not in CRITERIA_KEYS:
                bad(f"criteria.{key}", f"unknown criterion; use {', '.join(CRITERIA_KEYS)}")
            elif not isinstance(value, str) or len(value) > 128:
                bad(f"criteria.{key}", "must be a string of at most 128 characters")
    prov = d.provisioner if isinstance(d.provisioner, dict) else None
    if prov is None:
        bad("provisioner", "must be a mapping with a kind")
    else:
        kind = prov.get("kind")
        allowed = {"kind", "config", "driver", "template", "command", "timeout_seconds"}
        for key in sorted(set(prov) - allowed):
            bad(f"provisioner.{key}", "unknown field")
        if not isinstance(prov.get("config", {}), dict):
            bad("provisioner.config", "must be a mapping")
        if kind == "driver":
            name = prov.get("driver")
            if name not in DRIVERS:
                close = difflib.get_close_matches(str(name), known_drivers(), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                bad("provisioner.driver", f"unknown driver {name!r}{hint}; known drivers: {', '.join(known_drivers())}")
        elif kind == "template":
            source = prov.get("template")
            if not isinstance(source, str) or not source.strip():
                bad("provisioner.template", "a Jinja2 template rendering YAML is required")
            else:
                problem = template_problem(source)
                if problem:
                    bad("provisioner.template", problem)
        elif kind == "command":
            argv = prov.get("command")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
                bad("provisioner.command", "a non-empty list of strings: the program and its arguments (no shell)")
            elif any("\x00" in a for a in argv):
                bad("provisioner.command", "arguments must not contain NUL characters")
            timeout = prov.get("timeout_seconds", 0)
            if isinstance(timeout, float) and timeout.is_integer():
                timeout = int(timeout)
            if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 <= timeout <= MAX_COMMAND_TIMEOUT:
                bad("provisioner.timeout_seconds", f"whole seconds from 1 to {MAX_COMMAND_TIMEOUT} (0 = default {DEFAULT_COMMAND_TIMEOUT})")
        else:
            bad("provisioner.kind", f"must be one of {', '.join(PROVISIONER_KINDS)} (got {kind!r})")
    if not isinstance(d.params_schema, dict):
        bad("params_schema", "must be a JSON schema object")
    elif d.params_schema:
        try:
            jsonschema.Draft202012Validator.check_schema(d.params_schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            bad("params_schema", f"not a valid JSON schema{' at ' + where if where else ''}: {exc.message}")
    for path, names in (("outputs", d.outputs), ("secret_outputs", d.secret_outputs)):
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            bad(path, "must be a list of output names")
        elif len(set(names)) != len(names):
            bad(path, "names must be unique")
    if isinstance(d.outputs, list) and isinstance(d.secret_outputs, list):
        both = sorted(set(d.outputs) & set(d.secret_outputs), key=str)
        if both:
            bad("secret_outputs", f"{', '.join(map(str, both))} cannot be both a plain and a secret output")
    if problems:
        raise InvalidArgument(
            f"resource definition {d.name!r} is not valid: " + "; ".join(f"{p.field}: {p.description}" for p in problems),
            reason="INVALID_RESOURCE_DEFINITION",
            violations=problems,
        )


# ---------------------------------------------------------------------------------------------
# Built-in defaults

_OBJECT = {"type": "object"}


def builtin_definitions() -> list[ResourceDefinition]:
    """The defaults shipped with innominatus, one per built-in driver type.

    Read when called (not at import), so ``INNOMINATUS_POSTGRES_ADMIN_URL`` /
    ``INNOMINATUS_REDIS_ADMIN_URL`` set later are honoured. Without them the postgres / redis
    defaults still match, and provisioning explains that the admin URL is missing.
    """

    def make(type_: str, driver: str, outputs: list[str], secrets: list[str], config: dict | None = None,
             schema: dict | None = None) -> ResourceDefinition:
        return ResourceDefinition(
            name=f"default-{type_}",
            version=0,
            type=type_,
            provisioner={"kind": "driver", "driver": driver, "config": config or {}},
            params_schema=schema or dict(_OBJECT),
            outputs=outputs,
            secret_outputs=secrets,
            description=f"built-in default: the {driver} driver (in effect while no stored definition has type {type_!r})",
            builtin=True,
        )

    pg = {"admin_url": os.environ["INNOMINATUS_POSTGRES_ADMIN_URL"]} if os.environ.get("INNOMINATUS_POSTGRES_ADMIN_URL") else {}
    rd = {"admin_url": os.environ["INNOMINATUS_REDIS_ADMIN_URL"]} if os.environ.get("INNOMINATUS_REDIS_ADMIN_URL") else {}
    port = {"type": ["integer", "string"]}
    return [
        make("postgres", "postgres", ["host", "port", "name", "database", "username"], ["password", "url"], pg),
        make("redis", "redis", ["host", "port", "username", "key_prefix"], ["password", "url"], rd),
        make("dns", "dns", ["host"], []),
        make("route", "route", ["host", "path", "port"], [], schema={
            "type": "object",
            "properties": {"host": {"type": "string"}, "path": {"type": "string"}, "port": port,
                           "service": {"type": "string"}},
            "required": ["host", "port"],
        }),
        make("volume", "volume", ["source", "type"], []),
        make("service-port", "service-port", ["name", "port"], [], schema={
            "type": "object",
            "properties": {"port": port, "targetPort": port, "workload": {"type": "string"}},
            "required": ["port"],
        }),
        make("environment", "environment", [], []),
    ]


def with_builtins(stored: list[ResourceDefinition]) -> list[ResourceDefinition]:
    """``stored`` plus the built-in default of every type no stored definition has."""
    types = {d.type for d in stored}
    return [*stored, *(b for b in builtin_definitions() if b.type not in types)]


# ---------------------------------------------------------------------------------------------
# Storage


def from_row(row) -> ResourceDefinition:
    m = row._mapping
    return ResourceDefinition(
        name=m["name"],
        version=int(m["version"]),
        type=m["type"],
        class_=m["class"] or "",
        id=m["shared_id"] or "",
        criteria=dict(m["criteria"] or {}),
        provisioner=dict(m["provisioner"] or {}),
        params_schema=dict(m["params_schema"] or {}),
        outputs=list(m["outputs"] or []),
        secret_outputs=list(m["secret_outputs"] or []),
        description=m["description"] or "",
        creator=m["creator"] or "",
        created_at=m["created_at"],
    )


def to_row(d: ResourceDefinition) -> dict[str, Any]:
    return {
        "name": d.name,
        "version": d.version,
        "type": d.type,
        "class": d.class_,
        "shared_id": d.id,
        "criteria": d.criteria_items(),
        "provisioner": d.provisioner,
        "params_schema": d.params_schema,
        "outputs": list(d.outputs),
        "secret_outputs": list(d.secret_outputs),
        "description": d.description,
        "creator": d.creator,
    }


async def load_stored(session) -> list[ResourceDefinition]:
    """The latest version of every stored definition that is not deleted."""
    from innominatus.resources.definition_models import resource_definitions as t

    latest = select(t.c.name, func.max(t.c.version).label("version")).group_by(t.c.name).subquery()
    query = select(t).join(latest, (t.c.name == latest.c.name) & (t.c.version == latest.c.version)).where(
        t.c.deleted_at.is_(None)
    )
    return [from_row(r) for r in (await session.execute(query)).all()]


async def load_definitions(session) -> list[ResourceDefinition]:
    """Every definition in effect: the stored ones (latest versions) plus the built-in defaults
    of the types no stored definition covers."""
    return with_builtins(await load_stored(session))


async def load_versions(session, name: str) -> list:
    """Rows of every version of ``name``, newest first."""
    from innominatus.resources.definition_models import resource_definitions as t

    return (await session.execute(select(t).where(t.c.name == name).order_by(t.c.version.desc()))).all()


__all__ = [
    "CRITERIA_KEYS",
    "NoDefinition",
    "ResourceDefinition",
    "builtin_definitions",
    "check_no_ties",
    "load_definitions",
    "load_stored",
    "match",
    "matches",
    "validate_definition",
    "with_builtins",
]
