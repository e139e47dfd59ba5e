"""The golden-path catalog: workflow YAML files in a directory, validated at start, stored with versions.

:class:`Catalog` reads every ``*.yaml`` of the catalog directory (the shipped
``innominatus/engine/goldenpaths``; ``INNOMINATUS_GOLDEN_PATHS_DIR`` names another) and
validates each with :func:`innominatus.engine.definition.load_workflow`, ``uses`` checked
against the catalog itself. A file that does not load never stops the engine: it is logged
with its ``file:line:col`` findings and listed by the API as invalid; the other paths load.

Every version is stored in ``golden_path_versions`` (name, version, content hash, source,
origin, published_at). A published version is immutable: loading the same content again
stores nothing; other content under a version already stored is refused (finding GP-0001,
"bump metadata.version") and the stored version keeps being served. Older versions stay
runnable with ``--version``. The latest version of a path is its highest semantic version.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable

from ruamel.yaml import YAML
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from innominatus.engine import catalog_models
from innominatus.engine.definition import load_workflow
from innominatus.engine.model import WorkflowDef
from innominatus.kit import times
from innominatus.kit.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from innominatus.kit.logs import get_logger

log = get_logger(__name__)

ENV_DIR = "INNOMINATUS_GOLDEN_PATHS_DIR"
versions_t = catalog_models.golden_path_versions


def default_directory() -> Path:
    """The catalog directory: ``INNOMINATUS_GOLDEN_PATHS_DIR`` or the shipped one."""
    override = os.environ.get(ENV_DIR, "").strip()
    if override:
        return Path(override)
    from innominatus.engine import goldenpaths  # noqa: PLC0415

    return Path(goldenpaths.__file__).parent


def content_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def version_key(version: str) -> tuple:
    """Sort key of a version: semantic versions by their numbers (a pre-release before its
    release); anything else after them, by text."""
    match = _SEMVER.match(version.strip())
    if not match:
        return (1, (), 0, version)
    numbers = tuple(int(n or 0) for n in match.group(1, 2, 3))
    pre = match.group(4)
    return (0, numbers, 0 if pre else 1, pre or "")


@dataclass
class InvalidPath:
    """A catalog file that did not load (or conflicts with a stored version)."""

    file: str
    name: str
    findings: list[str]


@dataclass
class StoredVersion:
    name: str
    version: str
    content_hash: str
    source: str
    origin: str
    published_at: Any


@dataclass
class CatalogState:
    invalid: list[InvalidPath] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # "name@version" of the files that loaded


def _metadata_name(text: str) -> str:
    """Best-effort ``metadata.name`` of a file that did not load (for the API's listing)."""
    try:
        document = YAML(typ="safe", pure=True).load(text) if len(text) <= 512 * 1024 else None
        name = document.get("metadata", {}).get("name") if isinstance(document, dict) else None
        if isinstance(name, str) and re.fullmatch(r"[a-z0-9-]{1,63}", name):
            return name
    except Exception:  # noqa: BLE001 - a file that is not YAML: fall back to a line match
        pass
    match = re.search(r"^\s+name:\s*[\"']?([a-z0-9-]{1,63})[\"']?\s*$", text, re.MULTILINE)
    return match.group(1) if match else ""


def scan_directory(
    directory: Path, *, step_types: Collection[str] | None = None, extra_workflows: Iterable[str] = ()
) -> tuple[list[tuple[str, str, WorkflowDef]], list[InvalidPath]]:
    """Load every ``*.yaml`` of ``directory``: ``([(file, source, workflow)], [invalid])``.

    ``uses`` may name any path of the directory (even one that does not load: it is reported
    on its own) or one of ``extra_workflows``. Two files of one name and version are both
    refused. Never raises for a bad file."""
    files = sorted(p for p in directory.glob("*.yaml") if p.is_file()) if directory.is_dir() else []
    texts: dict[Path, str] = {}
    invalid: list[InvalidPath] = []
    for path in files:
        try:
            texts[path] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            texts[path] = ""  # load_workflow reports WF-1013 from the bytes below
        except OSError as exc:
            invalid.append(InvalidPath(path.name, "", [f"{path.name}: error GP-0002: cannot read the file: {exc.strerror}"]))
    names = {_metadata_name(t) for t in texts.values()} | set(extra_workflows)
    names.discard("")
    loaded: list[tuple[str, str, WorkflowDef]] = []
    for path, text in texts.items():
        raw = path.read_bytes() if not text else text
        workflow, findings = load_workflow(raw, path.name, step_types=step_types, workflows=names)
        if workflow is None:
            invalid.append(InvalidPath(path.name, _metadata_name(text), [str(f) for f in findings]))
            continue
        loaded.append((path.name, text, workflow))
    seen: dict[tuple[str, str], str] = {}
    unique = []
    for file, text, workflow in loaded:
        key = (workflow.name, workflow.version)
        if key in seen:
            invalid.append(InvalidPath(file, workflow.name, [
                f"{file}:1:1: error GP-0003: {workflow.name} {workflow.version} is also defined in {seen[key]} "
                "(give each file its own metadata.name or metadata.version)"]))
            continue
        seen[key] = file
        unique.append((file, text, workflow))
    return unique, invalid


class Catalog:
    """The catalog of one engine process: stored versions in the database, parsed definitions
    cached in memory, the directory's invalid files remembered for the API."""

    def __init__(self, db, directory: Path | None = None, *, step_types: Collection[str] | None = None,
                 builtin: Iterable[str] = ()) -> None:
        self.db = db
        self.directory = Path(directory) if directory is not None else default_directory()
        self.step_types = step_types
        self.builtin = tuple(builtin)  # workflow names `uses` may name besides the catalog's
        self.state = CatalogState()
        self._parsed: dict[tuple[str, str, str], WorkflowDef] = {}  # (name, version, hash) -> definition
        self._latest: dict[str, WorkflowDef] = {}  # name -> latest definition (sub-workflow lookup)
        self.loaded = False

    # ------------------------------------------------------------------ loading

    async def load(self) -> CatalogState:
        """Scan the directory, store new versions, log every invalid file. Never raises for a
        bad file; a database error propagates (the caller retries)."""
        files, invalid = scan_directory(self.directory, step_types=self.step_types, extra_workflows=self.builtin)
        loaded = []
        for file, text, workflow in files:
            problem = await self._store(workflow, text, f"catalog:{file}")
            if problem:
                invalid.append(InvalidPath(file, workflow.name, [f"{file}:1:1: error GP-0001: {problem}"]))
            else:
                loaded.append(f"{workflow.name}@{workflow.version}")
        for bad in invalid:
            for finding in bad.findings:
                log.error("golden path file is invalid; it is not served", file=bad.file, finding=finding)
        self.state = CatalogState(invalid=invalid, loaded=loaded)
        await self.refresh()
        self.loaded = True
        log.info("golden path catalog loaded", directory=str(self.directory), paths=len(loaded), invalid=len(invalid))
        return self.state

    async def _store(self, workflow: WorkflowDef, source: str, origin: str) -> str | None:
        """Insert the version unless it is there; a problem text when the stored one differs."""
        digest = content_hash(source)
        for _ in range(2):
            async with self.db.transaction() as s:
                existing = (await s.execute(
                    select(versions_t.c.content_hash).where(
                        (versions_t.c.name == workflow.name) & (versions_t.c.version == workflow.version))
                )).scalar_one_or_none()
            if existing is not None:
                break
            try:
                async with self.db.transaction() as s:
                    await s.execute(versions_t.insert().values(
                        name=workflow.name, version=workflow.version, content_hash=digest, source=source,
                        origin=origin[:300], published_at=times.now()))
                self._parsed[(workflow.name, workflow.version, digest)] = workflow
                log.info("golden path version stored", name=workflow.name, version=workflow.version, origin=origin)
                return None
            except IntegrityError:  # another engine process stored it at the same moment
                continue
        if existing is not None and existing != digest:
            return (f"{workflow.name} {workflow.version} is already published with other content "
                    f"(sha256 {existing[:12]}); published versions are immutable: bump metadata.version")
        self._parsed[(workflow.name, workflow.version, digest)] = workflow
        return None

    async def refresh(self) -> None:
        """Rebuild the in-memory latest definitions from the database (sub-workflow lookup)."""
        latest: dict[str, WorkflowDef] = {}
        for name, rows in (await self._rows()).items():
            row = rows[0]
            workflow = self._parse(row)
            if workflow is not None:
                latest[name] = workflow
        self._latest = latest

    # ------------------------------------------------------------------ queries

    async def _rows(self, name: str | None = None) -> dict[str, list]:
        """Stored versions by name, newest first."""
        query = select(versions_t)
        if name is not None:
            query = query.where(versions_t.c.name == name)
        async with self.db.transaction() as s:
            rows = (await s.execute(query)).all()
        out: dict[str, list] = {}
        for row in rows:
            out.setdefault(row.name, []).append(row)
        for items in out.values():
            items.sort(key=lambda r: version_key(r.version), reverse=True)
        return dict(sorted(out.items()))

    def _parse(self, row) -> WorkflowDef | None:
        key = (row.name, row.version, row.content_hash)
        if key not in self._parsed:
            workflow, findings = load_workflow(row.source, f"{row.name}@{row.version}", step_types=self.step_types)
            if workflow is None:  # stored by an older engine with other rules
                log.error("stored golden path version no longer loads", name=row.name, version=row.version,
                          findings=[str(f) for f in findings])
                return None
            self._parsed[key] = workflow
        return self._parsed[key]

    async def list(self, tag: str = "") -> list[tuple[WorkflowDef, list[StoredVersion]]]:
        """Every path at its latest (loadable) version, with its stored versions, by name."""
        out = []
        for _name, rows in (await self._rows()).items():
            for row in rows:
                workflow = self._parse(row)
                if workflow is not None:
                    break
            else:
                continue
            if tag and tag not in workflow.tags:
                continue
            out.append((workflow, [_stored(r) for r in rows]))
        return out

    async def get(self, name: str, version: str = "") -> tuple[WorkflowDef, list[StoredVersion]]:
        """One path (latest or the given version) and its stored versions; NotFound otherwise."""
        rows = (await self._rows(name)).get(name) or []
        if not rows:
            bad = self.invalid_for(name)
            if bad is not None:
                raise FailedPrecondition(
                    f"golden path {name!r} does not load: " + "; ".join(bad.findings), reason="GOLDEN_PATH_INVALID")
            known = ", ".join(sorted(self._latest)) or "none"
            raise NotFound(f"golden path {name!r} not found (known: {known})", reason="GOLDEN_PATH_NOT_FOUND")
        if version:
            chosen = [r for r in rows if r.version == version or r.version == version.removeprefix("v")]
            if not chosen:
                raise NotFound(f"golden path {name!r} has no version {version!r} "
                               f"(versions: {', '.join(r.version for r in rows)})", reason="GOLDEN_PATH_VERSION_NOT_FOUND")
            candidates = chosen
        else:
            candidates = rows
        for row in candidates:
            workflow = self._parse(row)
            if workflow is not None:
                return workflow, [_stored(r) for r in rows]
        raise FailedPrecondition(f"golden path {name!r} {version or 'latest'} no longer loads", reason="GOLDEN_PATH_INVALID")

    def invalid_for(self, name: str) -> InvalidPath | None:
        for bad in self.state.invalid:
            if bad.name == name:
                return bad
        return None

    def resolve(self, name: str) -> WorkflowDef | None:
        """The latest definition of ``name`` (synchronous: the scheduler's sub-workflow lookup)."""
        return self._latest.get(name)

    # ------------------------------------------------------------------ publishing

    async def publish(self, source: str, publisher: str) -> tuple[WorkflowDef, bool]:
        """Validate and store a new version. Returns (definition, created); the same content
        again is (definition, False); other content under a stored version is AlreadyExists."""
        names = set(self._latest) | set(self.builtin)
        workflow, findings = load_workflow(source, "<published>", step_types=self.step_types, workflows=names)
        if workflow is None:
            raise InvalidArgument(
                "the golden path does not load: " + "; ".join(str(f) for f in findings[:20]),
                reason="GOLDEN_PATH_INVALID",
                violations=[FieldViolation("source_yaml", str(f)) for f in findings[:100]],
            )
        digest = content_hash(source)
        before = (await self._rows(workflow.name)).get(workflow.name) or []
        if any(r.version == workflow.version and r.content_hash == digest for r in before):
            return workflow, False
        problem = await self._store(workflow, source, f"api:{publisher}" if publisher else "api")
        if problem:
            raise AlreadyExists(problem, reason="GOLDEN_PATH_VERSION_EXISTS")
        await self.refresh()
        return workflow, True


def _stored(row) -> StoredVersion:
    return StoredVersion(row.name, row.version, row.content_hash, row.source, row.origin,
                         times.utc(row.published_at) if row.published_at is not None else None)


def param_type(schema: dict) -> str:
    value = schema.get("type")
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    if value:
        return str(value)
    if "enum" in schema:
        return "enum"
    return "any"
