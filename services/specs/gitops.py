"""Committing deployment sets to a GitOps repository, and reading them back.

Layout, one directory per application and environment on one branch::

    environments/<environment>/<application>/deployment-set.json     # the set (DeploymentSet.to_json)
    environments/<environment>/<application>/k8s/<workload>/*.yaml   # its artifacts
    environments/<environment>/<application>/compose.yaml

:func:`commit_set` makes one commit per deployment, with the message::

    deploy <application> to <environment>: <set hash[:12]>

    <reason>

    by <author>

It writes the set's artifacts, deletes files of that application that are no longer in the set,
and commits only when something changed: deploying a set whose content hash is already the
application's current one makes no commit (the existing tip is returned; ``deployment-set.json``
keeps the who/why of the deployment that introduced it), although artifacts edited by hand in the
repository are put back, in a commit.

The commit itself is made with the kit's git plumbing (:mod:`innominatus.kit.git`), the code the
workflow engine's ``git`` step uses too: the same clone / write (path checks) / idempotent commit /
push, the same hardening (no hooks, no signing, no user or system configuration, allowed protocols
only) and the same masking of URL credentials; reading runs git through it as well.
:func:`plan_commit` gives the ``files`` and ``message`` for a ``git`` step, so a workflow can deploy
a set through the engine. Commits to the same repository and branch from this host are serialised
(a thread lock plus a file lock); a push rejected because another host moved the branch is retried
from the new tip.

:func:`remove_application` deletes an application's directory in one commit (message
``undeploy <application> from <environment>``, the reason, ``by <author>``).

:func:`history` lists an application's commits (newest first) with the set hash each one left;
:func:`read_set` reads a set back from a commit; :func:`rollback` deploys an earlier set again as a
new commit naming the rollback (the history keeps every commit; nothing is rewritten).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from innominatus.kit.git import (
    Clone,
    GitError,
    GitRunner,
    check_branch,
    display_url,
    hardened_env,
    run_git_sync,
    url_secrets,
)
from innominatus.kit.process import minimal_env
from innominatus.specs.deployment_sets import DeploymentSet, DeploymentSetError

__all__ = [
    "SET_FILE",
    "GitOpsError",
    "HistoryEntry",
    "app_dir",
    "commit_message",
    "commit_set",
    "history",
    "init_bare",
    "plan_commit",
    "read_set",
    "remove_application",
    "rollback",
]

SET_FILE = "deployment-set.json"
DEFAULT_TIMEOUT = 120.0
PUSH_ATTEMPTS = 3
_AUTHOR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+)>\s*$")


class GitOpsError(RuntimeError):
    """A git operation failed, or the repository does not hold what was asked for."""


@dataclass(frozen=True)
class HistoryEntry:
    commit: str
    set_hash: str  # the content hash of the application's set after this commit ("" when it was removed)
    author: str
    message: str


def app_dir(environment: str, application: str) -> str:
    return f"environments/{environment}/{application}/"


def commit_message(deployment_set: DeploymentSet, environment: str, author: str, reason: str) -> str:
    message = f"deploy {deployment_set.application} to {environment}: {deployment_set.short_hash}"
    if reason.strip():
        message += f"\n\n{reason.strip()}"
    return message + f"\n\nby {author.strip()}"


def _author(author: str) -> tuple[str, str]:
    if not isinstance(author, str) or not author.strip() or "\0" in author or "\n" in author:
        raise GitOpsError("author: name who deploys, e.g. 'alice' or 'Alice <alice@example.com>'")
    match = _AUTHOR.match(author)
    if match:
        return match.group("name") or match.group("email"), match.group("email")
    return author.strip(), "innominatus@localhost"


# -- running git (through the kit: hardened, credentials masked) -----------------------------


def _env(author: tuple[str, str] | None = None) -> dict[str, str]:
    # LANG fixed: git's messages, which errors quote, read the same whatever the host's locale.
    return hardened_env({**minimal_env(home=tempfile.gettempdir()), "LANG": "C.UTF-8"}, author=author)


def _git(cwd: str | Path, *args: str, check: bool = True, secrets: list[str] | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return run_git_sync(cwd, *args, check=check, secrets=secrets or (), timeout=timeout, env=_env())
    except GitError as exc:
        raise GitOpsError(exc.message) from None


def init_bare(path: str | Path, branch: str) -> None:
    """Create a bare repository at ``path`` whose default branch is ``branch`` (an environment's
    GitOps repository under the data directory, when no URL template names one)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    _git(path, "init", "--bare", "--quiet", "--initial-branch", branch)


def _repository(repo: str | os.PathLike) -> tuple[str, str | None]:
    """(what git is given, the local path when the repository is on this machine)."""
    text = os.fspath(repo)
    if not isinstance(text, str) or not text.strip() or "\0" in text or text.startswith("-"):
        raise GitOpsError(f"{text!r} is not a repository path or URL")
    parts = urlsplit(text)
    if parts.scheme == "file":
        return text, unquote(parts.path)
    if parts.scheme and len(parts.scheme) > 1 or re.match(r"^[\w.-]+@[\w.-]+:", text):
        return text, None
    path = str(Path(text).expanduser().resolve())
    return path, path


@contextlib.contextmanager
def _readable(repo: str | os.PathLike) -> Iterator[Path]:
    """A directory to run read-only git commands in: the repository itself when it is local,
    else a temporary bare clone."""
    url, local = _repository(repo)
    if local is not None:
        if not Path(local).is_dir():
            raise GitOpsError(f"no repository at {display_url(url)}")
        yield Path(local)
        return
    with tempfile.TemporaryDirectory(prefix="innominatus-gitops-") as work:
        _git(work, "clone", "--bare", "--no-tags", "--quiet", "--", url, "mirror", secrets=url_secrets(url))
        yield Path(work) / "mirror"


# -- serialising writers -------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def _serialised(url: str, branch: str) -> Iterator[None]:
    key = hashlib.sha256(f"{url}\0{branch}".encode()).hexdigest()[:32]
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        path = Path(tempfile.gettempdir()) / f"innominatus-gitops-{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # other processes on this host
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# -- writing -------------------------------------------------------------------------------


def plan_commit(deployment_set: DeploymentSet, environment: str, existing: dict[str, str | None],
                author: str, reason: str) -> tuple[dict[str, str | None], str]:
    """The ``files`` (path -> text, ``None`` deletes) and the message of the commit that deploys
    ``deployment_set``, given the paths the branch holds under the application's directory
    (``existing``: path -> text, or ``None`` when the text is not needed) -- usable as the inputs of
    a workflow ``git`` step. The set file is left alone when the branch already holds a set with
    the same content hash."""
    if environment != deployment_set.environment:
        raise GitOpsError(f"the set is for environment {deployment_set.environment!r}, not {environment!r}")
    base = app_dir(environment, deployment_set.application)
    files: dict[str, str | None] = {base + path: text for path, text in deployment_set.artifacts.items()}
    set_path = base + SET_FILE
    current = _set_hash(existing.get(set_path))
    if current != deployment_set.content_hash:
        if not deployment_set.parent and current:
            deployment_set = deployment_set.redeployed(created_by=deployment_set.created_by,
                                                       reason=deployment_set.reason, parent=current)
        files[set_path] = deployment_set.to_json()
    for path in existing:
        if path.startswith(base) and path not in files and path != set_path:
            files[path] = None  # no longer part of the set
    return dict(sorted(files.items())), commit_message(deployment_set, environment, author, reason)


def _set_hash(text: str | None) -> str:
    if not text:
        return ""
    try:
        value = json.loads(text).get("content_hash", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _run(coro_factory) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from async code
        return pool.submit(asyncio.run, coro_factory()).result()


#: What a commit plans from the fresh clone: the commit to report without writing anything, or
#: the files (path -> text, ``None`` deletes) and the message.
_Plan = Callable[[Clone], "str | tuple[dict[str, str | None], str]"]


def commit_set(repo_url_or_path: str | os.PathLike, branch: str, environment: str, deployment_set: DeploymentSet,
               author: str, reason: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Commit ``deployment_set`` under ``environments/<environment>/<application>/`` on ``branch``
    (created when missing) and push it; return the commit (the existing tip when nothing changed).

    ``repo_url_or_path``: a local (bare) repository path, or a ``file://``, ``https://``,
    ``ssh://`` or ``git@host:`` URL. ``author``: ``name`` or ``Name <email>``."""
    if not isinstance(deployment_set, DeploymentSet):
        raise GitOpsError("deployment_set must be a DeploymentSet")
    identity = _author(author)
    reason = reason if isinstance(reason, str) else ""
    url, _local = _repository(repo_url_or_path)
    base = app_dir(environment, deployment_set.application)

    def plan(clone: Clone) -> tuple[dict[str, str | None], str]:
        existing: dict[str, str | None] = {}
        if clone.remote_has_branch:
            listed = _git(clone.path, "ls-tree", "-r", "-z", "--name-only", clone.remote_ref, "--", base).stdout
            existing = {path: None for path in listed.split("\0") if path}
            if base + SET_FILE in existing:
                existing[base + SET_FILE] = _git(clone.path, "show", f"{clone.remote_ref}:{base}{SET_FILE}").stdout
        return plan_commit(deployment_set, environment, existing, author, reason)

    return _commit(url, branch, identity, plan, timeout=timeout)


def remove_application(repo_url_or_path: str | os.PathLike, branch: str, environment: str, application: str,
                       author: str, reason: str = "", *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Delete ``environments/<environment>/<application>/`` on ``branch`` in one commit and push
    it; return the commit (the tip, or "" when the branch does not exist, when there was nothing
    to remove)."""
    identity = _author(author)
    reason = reason if isinstance(reason, str) else ""
    url, _local = _repository(repo_url_or_path)
    base = app_dir(environment, application)
    message = f"undeploy {application} from {environment}"
    if reason.strip():
        message += f"\n\n{reason.strip()}"
    message += f"\n\nby {author.strip()}"

    def plan(clone: Clone) -> str | tuple[dict[str, str | None], str]:
        if not clone.remote_has_branch:
            return ""
        listed = _git(clone.path, "ls-tree", "-r", "-z", "--name-only", clone.remote_ref, "--", base).stdout
        files: dict[str, str | None] = {path: None for path in listed.split("\0") if path}
        if not files:
            return _git(clone.path, "rev-parse", clone.remote_ref).stdout.strip()
        return dict(sorted(files.items())), message

    return _commit(url, branch, identity, plan, timeout=timeout)


def _commit(url: str, branch: str, author: tuple[str, str], plan: _Plan, *, timeout: float) -> str:
    """Clone, ``plan``, write, commit and push, serialised per repository and branch; a push
    rejected because the branch moved starts over from a fresh clone (``PUSH_ATTEMPTS`` in all)."""
    try:
        check_branch(branch)
    except GitError as exc:
        raise GitOpsError(f"committing to {display_url(url)} failed: {exc}") from None
    secrets = url_secrets(url)
    with _serialised(url, branch):
        last_error: GitError | None = None
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            with tempfile.TemporaryDirectory(prefix="innominatus-gitops-") as work:
                git = GitRunner(env=_env(author), secrets=secrets, timeout=timeout)
                clone = Clone(git, Path(work) / "repo", branch, label="repo")
                try:
                    return _run(functools.partial(_attempt, clone, url, plan))
                except GitError as exc:
                    if exc.kind == "push_rejected" and attempt < PUSH_ATTEMPTS:
                        last_error = exc
                        continue
                    raise GitOpsError(f"committing to {display_url(url)} failed: {exc}") from None
        raise GitOpsError(f"committing to {display_url(url)} failed: {last_error}")


async def _attempt(clone: Clone, url: str, plan: _Plan) -> str:
    try:
        await clone.open(url, quiet=True)
    except GitError as exc:
        raise GitOpsError(exc.message) from None  # git's own words, as for every read
    planned = plan(clone)  # synchronous reads: this event loop is this attempt's alone
    if isinstance(planned, str):
        return planned
    files, message = planned
    clone.write(files)
    commit, _changed = await clone.commit(message)
    await clone.push()
    return commit


# -- reading -------------------------------------------------------------------------------


def _show(cwd: Path, commit: str, path: str) -> str | None:
    result = _git(cwd, "show", f"{commit}:{path}", check=False)
    return result.stdout if result.returncode == 0 else None


def history(repo: str | os.PathLike, environment: str, application: str, branch: str = "main") -> list[HistoryEntry]:
    """Commits on ``branch`` touching the application's directory in ``environment``, newest first."""
    base = app_dir(environment, application)
    with _readable(repo) as cwd:
        if _git(cwd, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False).returncode:
            return []
        log = _git(cwd, "log", "--format=%H%x1f%an%x1f%B%x1e", f"refs/heads/{branch}", "--", base).stdout
        entries = []
        for record in log.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            commit, author, message = record.split("\x1f", 2)
            entries.append(HistoryEntry(commit, _set_hash(_show(cwd, commit, base + SET_FILE)), author,
                                        message.strip("\n")))
        return entries


def read_set(repo: str | os.PathLike, commit: str, environment: str | None = None,
             application: str | None = None) -> DeploymentSet:
    """The deployment set an application had at ``commit``. Without ``environment`` and
    ``application`` they are taken from the commit (it must touch exactly one application)."""
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-fA-F]{4,64}", commit):
        raise GitOpsError(f"{commit!r} is not a commit id")
    with _readable(repo) as cwd:
        full = _git(cwd, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False)
        if full.returncode != 0:
            raise GitOpsError(f"no commit {commit} in the repository")
        commit = full.stdout.strip()
        if environment is None or application is None:
            changed = _git(cwd, "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", "--root", commit).stdout
            apps = sorted({tuple(path.split("/")[1:3]) for path in changed.split("\0")
                           if path.startswith("environments/") and path.count("/") >= 3})
            if len(apps) != 1:
                raise GitOpsError(f"commit {commit[:12]} touches {len(apps)} applications: name the environment "
                                  "and application")
            environment, application = apps[0]
        text = _show(cwd, commit, app_dir(environment, application) + SET_FILE)
        if text is None:
            raise GitOpsError(f"commit {commit[:12]} holds no deployment set for {application} in {environment}")
        try:
            return DeploymentSet.from_json(text)
        except DeploymentSetError as exc:
            raise GitOpsError(f"the deployment set at {commit[:12]} is invalid: {exc}") from None


def rollback(repo: str | os.PathLike, branch: str, environment: str, application: str, target: str,
             author: str, reason: str = "") -> str:
    """Deploy an earlier set again: ``target`` is a commit or a set hash (or a prefix of either, at
    least 7 characters) from the application's history. Makes a new commit whose reason names the
    rollback; returns it (the tip, when the target is already the current set)."""
    if not isinstance(target, str) or len(target) < 7 or not re.fullmatch(r"[0-9a-fA-F]+", target):
        raise GitOpsError("rollback target: give a commit or set hash (at least 7 hex digits)")
    target = target.lower()
    entries = history(repo, environment, application, branch)
    match = next((e for e in entries if e.commit.startswith(target)), None) or \
        next((e for e in entries if e.set_hash.startswith(target)), None)
    if match is None or not match.set_hash:
        raise GitOpsError(f"{target} is not a deployment of {application} in {environment} on {branch}")
    earlier = read_set(repo, match.commit, environment, application)
    current = entries[0].set_hash if entries else ""
    why = f"rollback to {earlier.short_hash} (commit {match.commit[:12]})"
    if reason.strip():
        why += f": {reason.strip()}"
    again = earlier.redeployed(created_by=author, reason=why, parent=current if current != earlier.content_hash else earlier.parent)
    return commit_set(repo, branch, environment, again, author, why)
