"""Committing files to a git repository with real git, hardened: the plumbing the workflow
engine's ``git`` step type and the specs service's GitOps writer share. It knows nothing of
workflow steps; failures are :class:`GitError` (``kind``, ``retryable``), which each caller maps
to its own errors.

Hardening, on every git this module runs:

* git is a subprocess given an argv (never a shell), with a timeout, in its own process group
  (:mod:`innominatus.kit.process`);
* its environment is :func:`hardened_env`: hooks and commit signing off (``-c`` options on every
  command), the user's and the system's git configuration ignored, never a credential prompt,
  ssh in batch mode, and only the protocols in :data:`ALLOWED_PROTOCOLS` (``ext::`` and other
  remote helpers refused by :func:`check_repository` and by git itself);
* credentials in a repository URL are never shown: :func:`display_url` replaces the user
  information with ``***`` for log lines, and what :func:`url_secrets` finds (the password, and
  for http(s) the user name, often a token) is masked in git's captured output, in log lines and
  in every error message.

The write sequence (:class:`Clone`, or :func:`commit_files` for all of it at once):

1. :meth:`Clone.open` clones the repository into a directory, or -- when a clone is already
   there, e.g. left by an earlier attempt -- fetches and resets it to the branch's tip on the
   remote; a missing branch is created (from the default branch, or as the first commit of an
   empty repository);
2. :meth:`Clone.write` writes files (``None`` deletes one). Every path is checked before anything
   is written: an absolute path, one whose ``..`` leads outside the clone, one through a symbolic
   link leading outside, and anything under ``.git`` are refused (kind ``invalid_input``);
3. :meth:`Clone.commit` commits only when the staged content differs from the tip (idempotent:
   the same files again make no commit, and the existing tip is returned);
4. :meth:`Clone.push` pushes when there is something the remote does not have. A push refused
   because the branch moved meanwhile is kind ``push_rejected`` (retryable: open again, re-apply);
   other clone/fetch/push failures are kind ``git_remote`` (retryable).

Other kinds: ``git_error`` (a local git command failed), ``invalid_input``, and what running the
process can fail with (``timeout``, ``cancelled``, ``not_found``, ``not_executable``,
``spawn_error``). For reading a repository without a clone, :func:`run_git_sync` runs one git
command synchronously with the same hardening and masking.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from innominatus.kit.process import (
    LogFn,
    ProcessError,
    ProcessResult,
    Redactor,
    kill_group,
    minimal_env,
    run_process,
)

__all__ = [
    "ALLOWED_PROTOCOLS",
    "DEFAULT_TIMEOUT",
    "Clone",
    "CommitResult",
    "GitError",
    "GitRunner",
    "check_branch",
    "check_repository",
    "commit_files",
    "display_url",
    "hardened_env",
    "run_git_sync",
    "url_secrets",
]

DEFAULT_TIMEOUT = 600.0
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
#: Given to every git command: no hooks (a repository cannot run code here), no signing (no key
#: prompts), never the ``ext::`` transport whatever the environment says.
HARDENING_ARGS = ("-c", "core.hooksPath=" + os.devnull, "-c", "commit.gpgsign=false", "-c", "protocol.ext.allow=never")
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!/)(?!.*/$)(?!.*\.lock$)[A-Za-z0-9._/-]+$")
# Schemes whose URL user name can be a credential (a token given as the user): masked like a password.
_USER_IS_SECRET = ("http", "https")
# How much of git's stderr a synchronous command's error keeps (the tail wins).
_ERROR_CHARS = 2000


class GitError(Exception):
    """A git operation failed. ``kind``: ``invalid_input`` (retrying cannot help), ``git_remote``
    (clone/fetch/push: retryable), ``push_rejected`` (the branch moved: retryable), ``git_error``,
    or a process failure (``timeout``, ``cancelled``, ...). The message is safe to show: URL
    credentials are masked."""

    def __init__(self, message: str, kind: str = "git_error", retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable


def _invalid(message: str) -> GitError:
    return GitError(message, kind="invalid_input", retryable=False)


# -- URLs and credentials ------------------------------------------------------------------


def display_url(url: str) -> str:
    """``url`` safe to log: any user information (``user``, ``user:password``) becomes ``***``."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def url_secrets(url: str) -> list[str]:
    """The credentials in ``url`` to mask wherever output is logged or kept: the password, and for
    http(s) the user name and the whole user information too, both as written and percent-decoded
    (git prints either)."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    user, has_password, password = userinfo.partition(":")
    found: list[str] = []
    if has_password and password:
        found.append(password)
    if parts.scheme.lower() in _USER_IS_SECRET:
        found += [userinfo, user]
    elif has_password and password:
        found.append(userinfo)
    return [x for secret in found for x in {secret, unquote(secret)} if x]


def check_repository(value: object, base: Path) -> str:
    """The repository to give git: a URL of an allowed protocol, an scp-like ssh address
    (``git@host:org/repo.git``) or a local path (a relative one is taken from ``base``). Refuses
    option-like values and remote helpers (``transport::address``)."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise _invalid("git: `repository` must be a path or URL")
    value = value.strip()
    if value.startswith("-"):
        raise _invalid(f"git: {value!r} is not a repository path or URL")
    if "::" in value.split("/", 1)[0]:
        raise _invalid("git: remote helpers (`transport::address`) are not allowed")
    parts = urlsplit(value)
    if parts.scheme and len(parts.scheme) > 1:  # a one-letter "scheme" would be a Windows drive
        if parts.scheme not in ALLOWED_PROTOCOLS.split(":"):
            raise _invalid(f"git: protocol {parts.scheme!r} is not allowed (use {ALLOWED_PROTOCOLS.replace(':', ', ')})")
        return value
    if re.match(r"^[\w.-]+@[\w.-]+:", value):  # scp-like ssh: git@host:org/repo.git
        return value
    return str(Path(value) if os.path.isabs(value) else (base / value))


def check_branch(branch: object) -> str:
    """``branch`` when it is a plain branch name (no ``..``, no leading ``-`` or ``/``, ...)."""
    if not isinstance(branch, str) or not _BRANCH.match(branch):
        raise _invalid(f"git: {branch!r} is not a valid branch name")
    return branch


# -- running git ---------------------------------------------------------------------------


def hardened_env(base: Mapping[str, str] | None = None, *, author: tuple[str, str] | None = None) -> dict[str, str]:
    """The environment git runs in: ``base`` (default: PATH, HOME, LANG of the platform) with the
    hardening on top, and ``author`` (name, email) as author and committer when given."""
    env = dict(base) if base is not None else minimal_env()
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS,
        GIT_SSH_COMMAND=os.environ.get("GIT_SSH_COMMAND", "ssh -oBatchMode=yes"),
    )
    if author is not None:
        name, email = author
        for what, value in (("author name", name), ("author email", email)):
            if not isinstance(value, str) or not value or "\0" in value:
                raise _invalid(f"git: the {what} must be text")
        env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)
    return env


@dataclass
class GitRunner:
    """Runs git commands (asynchronously) with the hardening, masking ``secrets``, each within
    ``timeout`` seconds. ``log`` gets progress and git's output lines (masked); setting
    ``cancelled`` kills the running command."""

    env: Mapping[str, str]
    secrets: Sequence[str] = ()
    timeout: float | None = DEFAULT_TIMEOUT
    log: LogFn | None = None
    cancelled: asyncio.Event | None = None
    executable: str = "git"

    def __post_init__(self) -> None:
        self.redact = Redactor(self.secrets)

    async def say(self, line: str) -> None:
        if self.log is not None:
            await self.log(self.redact(line))

    async def run(self, *args: str, cwd: Path, check: bool = True, kind: str = "git_error",
                  retryable: bool = False, quiet: bool = False) -> ProcessResult:
        """``git <args>`` in ``cwd``; a non-zero exit raises GitError(``kind``) when ``check``.
        ``quiet``: do not log the output (it is still returned)."""
        argv = [self.executable, *HARDENING_ARGS, *args]
        try:
            result = await run_process(argv, env=self.env, cwd=cwd, timeout=self.timeout, redact=self.redact,
                                       label=f"git {args[0]}", log=self.log, log_output=not quiet,
                                       cancelled=self.cancelled)
        except ProcessError as exc:
            raise GitError(exc.message, kind=exc.kind, retryable=exc.retryable) from None
        if check and result.exit_code != 0:
            raise GitError(f"git {args[0]} failed ({result.exit_code}): {result.stderr_tail()}",
                           kind=kind, retryable=retryable)
        return result


def run_git_sync(cwd: str | os.PathLike, *args: str, check: bool = True, secrets: Sequence[str] = (),
                 timeout: float | None = DEFAULT_TIMEOUT, env: Mapping[str, str] | None = None,
                 executable: str = "git") -> subprocess.CompletedProcess[str]:
    """``git <args>`` in ``cwd``, synchronously, with the hardening; for short reads (``log``,
    ``show``, ``ls-tree``). stdout is returned as git wrote it; a non-zero exit raises GitError
    (kind ``git_error``) with the end of stderr, ``secrets`` masked."""
    redact = Redactor(secrets)
    argv = [executable, *HARDENING_ARGS, *args]
    try:
        proc = subprocess.Popen(argv, cwd=os.fspath(cwd), env=dict(env) if env is not None else hardened_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, encoding="utf-8", errors="replace", start_new_session=True)
    except OSError as exc:
        raise GitError(f"git {args[0]}: could not run {executable} in {os.fspath(cwd)}: {exc.strerror or exc}",
                       kind="spawn_error") from None
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The whole group: git's helpers (ssh, git-remote-https) would keep the pipes open.
            kill_group(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise GitError(f"git {args[0]}: timed out after {timeout:g}s", kind="timeout", retryable=True) from None
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        # Masked before it is cut, so a secret straddling the cut cannot show half of itself.
        error = redact(result.stderr.strip())[-_ERROR_CHARS:]
        raise GitError(f"git {args[0]} failed ({result.returncode}): {error}")
    return result


# -- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitResult:
    commit: str  # the branch's tip afterwards ("" when there is none)
    changed: bool  # a commit was made
    branch: str
    pushed: bool


class Clone:
    """A working clone of ``branch`` at ``path``, driven by ``git``. ``label`` names the
    directory in log lines and errors (default: the path)."""

    def __init__(self, git: GitRunner, path: Path, branch: str, *, label: str | None = None) -> None:
        self.git = git
        self.path = Path(path)
        self.branch = check_branch(branch)
        self.label = label or str(self.path)
        self.remote_ref = f"refs/remotes/origin/{branch}"
        self.remote_has_branch = False  # set by open()
        self.commit_id = ""  # the local tip, set by commit()
        self.changed = False
        self._staged: tuple[list[str], list[str]] = ([], [])

    async def run(self, *args: str, **kwargs) -> ProcessResult:
        """``git <args>`` in the clone (see :meth:`GitRunner.run`)."""
        return await self.git.run(*args, cwd=self.path, **kwargs)

    async def open(self, repository: str, *, quiet: bool = False) -> None:
        """Clone ``repository`` (or fetch it into the clone already there) and check out the
        branch at the remote's tip, dropping anything left over. ``quiet``: no clone progress."""
        repository = check_repository(repository, self.path.parent)
        if (self.path / ".git").is_dir():
            await self.git.say(f"reusing the clone in {self.label}")
            await self.run("remote", "set-url", "origin", repository)
            await self.run("fetch", "--prune", "origin", kind="git_remote", retryable=True)
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise _invalid(f"git: {self.label} exists in the work directory and is not a clone")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self.git.say(f"cloning {display_url(repository)}")
            await self.git.run("clone", "--no-tags", *(["--quiet"] if quiet else []), "--origin", "origin", "--",
                               repository, str(self.path), cwd=self.path.parent, kind="git_remote", retryable=True)

        branch = self.branch
        remote_tip = await self.run("rev-parse", "--verify", "--quiet", f"{self.remote_ref}^{{commit}}",
                                    check=False, quiet=True)
        self.remote_has_branch = remote_tip.exit_code == 0
        if self.remote_has_branch:
            await self.run("checkout", "--quiet", "--force", "-B", branch, self.remote_ref)
            await self.run("reset", "--quiet", "--hard", self.remote_ref)
        else:
            head = await self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False, quiet=True)
            if head.exit_code == 0:
                await self.git.say(f"branch {branch} does not exist yet; creating it from the default branch")
                await self.run("checkout", "--quiet", "--force", "-B", branch)
            else:
                await self.git.say(f"the repository is empty; starting branch {branch}")
                await self.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        await self.run("clean", "-fdq")

    def file_path(self, name: object) -> Path:
        """Where ``name`` (a path relative to the repository's root) is in the clone; refuses
        absolute paths, ``..`` and symbolic links leading outside, and ``.git``."""
        repo_root = self.path.resolve()
        if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
            raise _invalid(f"git: {name!r} is not a file path")
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            raise _invalid(f"git: {name!r} escapes the repository; give a path inside it")
        if pure.parts and pure.parts[0] == ".git":
            raise _invalid(f"git: {name!r} lies inside .git")
        target = repo_root / pure
        resolved = target.parent.resolve() / target.name
        if not resolved.is_relative_to(repo_root) or resolved == repo_root:
            raise _invalid(f"git: {name!r} escapes the repository (through a symbolic link)")
        if (resolved.relative_to(repo_root).parts or ("",))[0] == ".git":
            raise _invalid(f"git: {name!r} lies inside .git")
        return resolved

    def write(self, files: Mapping[str, str | None]) -> list[str]:
        """Write ``files`` (path -> text; ``None`` deletes) into the clone, every path and content
        checked before anything is written; return the paths. Call :meth:`commit` next."""
        repo_root = self.path.resolve()
        targets = [(self.file_path(name), content) for name, content in files.items()]
        for target, content in targets:
            if content is not None and not isinstance(content, str):
                raise _invalid(f"git: the content of {target.relative_to(repo_root).as_posix()!r} must be text or null")
        written: list[str] = []
        removed: list[str] = []
        for target, content in targets:
            relative = target.relative_to(repo_root).as_posix()
            if content is None:
                if target.is_symlink() or target.is_file():
                    target.unlink()
                removed.append(relative)
            else:
                if target.is_symlink() or target.is_dir():
                    raise _invalid(f"git: {relative!r} is a symbolic link or directory in the repository")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content, encoding="utf-8")
                written.append(relative)
        self._staged = (written, removed)
        return written + removed

    async def commit(self, message: str) -> tuple[str, bool]:
        """Commit what :meth:`write` wrote when it differs from the tip; return (the tip
        afterwards, whether a commit was made)."""
        if not isinstance(message, str) or "\0" in message:
            raise _invalid("git: the commit message must be text")
        written, removed = self._staged
        if written:  # --force: a .gitignore in the repository must not silently drop content
            await self.run("add", "--force", "--", *written, quiet=True)
        if removed:
            await self.run("rm", "--cached", "--quiet", "--ignore-unmatch", "--", *removed, quiet=True)
        staged = await self.run("diff", "--cached", "--quiet", "--exit-code", check=False, quiet=True)
        if staged.exit_code not in (0, 1):
            raise GitError(f"git diff failed: {staged.stderr_tail()}", kind="git_error", retryable=False)
        self.changed = staged.exit_code != 0
        if self.changed:
            await self.run("commit", "--quiet", "--no-verify", "-m", message)
            await self.git.say(f"committed {len(written) + len(removed)} file(s) on {self.branch}")
        else:
            await self.git.say(f"nothing changed on {self.branch}; no commit")
        tip = await self.run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False, quiet=True)
        self.commit_id = tip.stdout.strip() if tip.exit_code == 0 else ""
        return self.commit_id, self.changed

    async def push(self) -> bool:
        """Push the tip to the remote branch when the remote lacks it (a new commit, or a branch
        the remote does not have yet); return whether it pushed."""
        if not self.commit_id or not (self.changed or not self.remote_has_branch):
            return False
        result = await self.run("push", "--porcelain", "origin", f"HEAD:refs/heads/{self.branch}", check=False)
        if result.exit_code != 0:
            text = result.stderr + result.stdout
            if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
                raise GitError(f"git push to {self.branch} was rejected (the branch moved); retry re-applies: "
                               f"{result.stderr_tail()}", kind="push_rejected", retryable=True)
            raise GitError(f"git push failed ({result.exit_code}): {result.stderr_tail()}",
                           kind="git_remote", retryable=True)
        await self.git.say(f"pushed {self.commit_id[:12]} to {self.branch}")
        return True


async def commit_files(git: GitRunner, repository: str, path: Path, branch: str, files: Mapping[str, str | None],
                       message: str, *, push: bool = False, label: str | None = None) -> CommitResult:
    """The whole sequence: open a clone of ``branch`` at ``path``, write ``files``, commit when
    something changed, push when asked."""
    clone = Clone(git, path, branch, label=label)
    await clone.open(repository)
    clone.write(files)
    commit, changed = await clone.commit(message)
    pushed = await clone.push() if push else False
    return CommitResult(commit=commit, changed=changed, branch=branch, pushed=pushed)
