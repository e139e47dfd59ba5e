"""``git``: commit files to a repository with real git (``git`` subprocesses, never a shell).

::

    - id: gitops
      type: git
      with:
        repository: file:///srv/git/deployments.git     # or a local path, https://, ssh://
        branch: main                                     # default main; created when missing
        files:
          apps/checkout/deployment.yaml: "${steps.render.outputs.manifest}"
          apps/checkout/old.yaml: null                   # null deletes the file
        message: "checkout: deploy ${params.version}"    # default names the run and step
        author_name: innominatus                         # default innominatus
        author_email: innominatus@localhost
        push: true                                       # default false
        path: repo                                       # clone directory inside the work directory

The repository is cloned into the step's work directory (an existing clone there is fetched and
reset to the branch's tip, so a retried attempt starts from the remote's state). The listed files
are written -- a path that is absolute, contains ``..`` leading outside the clone, or lies under
``.git`` is refused -- and a commit is made only when the content differs from the branch's tip.

Idempotent: running again with the same content makes no new commit (``changed: false``, and
``commit`` is the existing tip). After a crash between push and recording, the retry finds the
content already there. Outputs: ``{commit, changed, branch, pushed}``.

Failures: clone/fetch errors -> kind "git_remote" (retryable); a rejected push (someone pushed in
between) -> kind "push_rejected" (retryable: the retry fetches and re-applies); bad inputs ->
kind "invalid_input". Pushing to a non-bare repository's checked-out branch is refused by git:
use a bare repository. Hooks and commit signing are disabled; the user's and the system's git
configuration are ignored. Credentials in a URL are never logged: log lines show the URL with its
user information replaced by ``***`` (``https://***@github.com/org/repo.git``), and the user name
of an http(s) URL (often a token: ``https://ghp_xxx@github.com/...``) as well as any URL password
are masked in git's captured output and in every failure message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from innominatus.engine.model import StepContext, StepFailed

from ._process import Redactor, base_env, ensure_workdir, inside, invalid, run_process, timeout_of

DEFAULT_TIMEOUT = 600.0
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!/)(?!.*/$)(?!.*\.lock$)[A-Za-z0-9._/-]+$")


# Schemes whose URL user name can be a credential (a token given as the user): masked like a password.
_USER_IS_SECRET = ("http", "https")


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


class GitExecutor:
    type = "git"
    input_schema: dict[str, Any] = {
        "type": "object",
        "required": ["repository", "files"],
        "properties": {
            "repository": {"type": "string", "minLength": 1},
            "branch": {"type": "string"},
            "files": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            "message": {"type": "string"},
            "author_name": {"type": "string"},
            "author_email": {"type": "string"},
            "push": {"type": "boolean"},
            "path": {"type": "string"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
        },
        "additionalProperties": False,
    }

    def __init__(self, git: str = "git", default_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.git = git
        self.default_timeout = default_timeout

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown:
            raise invalid(f"git: unknown input(s) {', '.join(sorted(unknown))}")
        root = ensure_workdir(ctx)
        repository, secrets = self._repository(spec.get("repository"), root)
        branch = spec.get("branch") or "main"
        if not isinstance(branch, str) or not _BRANCH.match(branch):
            raise invalid(f"git: {branch!r} is not a valid branch name")
        files = spec.get("files")
        if not isinstance(files, dict) or not files:
            raise invalid("git: `files` must map at least one path to its content (null deletes)")
        message = spec.get("message") or f"innominatus: run {ctx.run_id}, step {ctx.step_id}"
        author_name = spec.get("author_name") or "innominatus"
        author_email = spec.get("author_email") or "innominatus@localhost"
        for field, value in (("message", message), ("author_name", author_name), ("author_email", author_email)):
            if not isinstance(value, str) or "\0" in value:
                raise invalid(f"git: `{field}` must be text")
        push = spec.get("push", False)
        if not isinstance(push, bool):
            raise invalid("git: `push` must be true or false")
        clone = inside(root, spec.get("path") or "repo", "path")
        timeout = timeout_of(spec.get("timeout"), self.default_timeout)

        env = base_env(ctx, {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
            "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -oBatchMode=yes"),
        })
        redact = Redactor(secrets)

        async def git(*args: str, cwd: Path = clone, check: bool = True, kind: str = "git_error",
                      retryable: bool = False, quiet: bool = False):
            argv = [self.git, "-c", "core.hooksPath=" + os.devnull, "-c", "commit.gpgsign=false",
                    "-c", "protocol.ext.allow=never", *args]
            result = await run_process(ctx, argv, env=env, cwd=cwd, timeout=timeout, redact=redact,
                                       label=f"git {args[0]}", log_output=not quiet)
            if check and result.exit_code != 0:
                raise StepFailed(f"git {args[0]} failed ({result.exit_code}): {result.stderr_tail()}",
                                 kind=kind, retryable=retryable)
            return result

        # Open or clone.
        if (clone / ".git").is_dir():
            await ctx.log(f"reusing the clone in {clone.relative_to(root)}")
            await git("remote", "set-url", "origin", repository)
            await git("fetch", "--prune", "origin", kind="git_remote", retryable=True)
        else:
            if clone.exists() and any(clone.iterdir()):
                raise invalid(f"git: {clone.relative_to(root)} exists in the work directory and is not a clone")
            await ctx.log(f"cloning {redact(display_url(repository))}")
            await git("clone", "--no-tags", "--origin", "origin", "--", repository, str(clone), cwd=root,
                      kind="git_remote", retryable=True)

        remote_tip = await git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}^{{commit}}",
                               check=False, quiet=True)
        if remote_tip.exit_code == 0:
            await git("checkout", "--quiet", "--force", "-B", branch, f"refs/remotes/origin/{branch}")
            await git("reset", "--quiet", "--hard", f"refs/remotes/origin/{branch}")
        else:
            head = await git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False, quiet=True)
            if head.exit_code == 0:
                await ctx.log(f"branch {branch} does not exist yet; creating it from the default branch")
                await git("checkout", "--quiet", "--force", "-B", branch)
            else:
                await ctx.log(f"the repository is empty; starting branch {branch}")
                await git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        await git("clean", "-fdq")

        # Write the files.
        repo_root = clone.resolve()
        written: list[str] = []
        removed: list[str] = []
        targets = [(self._file_path(repo_root, name), content) for name, content in files.items()]
        for target, content in targets:  # every path is checked before anything is written
            if content is not None and not isinstance(content, str):
                raise invalid(f"git: the content of {target.relative_to(repo_root).as_posix()!r} must be text or null")
        for target, content in targets:
            relative = target.relative_to(repo_root).as_posix()
            if content is None:
                if target.is_symlink() or target.is_file():
                    target.unlink()
                removed.append(relative)
            else:
                if target.is_symlink() or target.is_dir():
                    raise invalid(f"git: {relative!r} is a symbolic link or directory in the repository")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content, encoding="utf-8")
                written.append(relative)
        paths = written + removed
        if written:  # --force: a .gitignore in the repository must not silently drop content
            await git("add", "--force", "--", *written, quiet=True)
        if removed:
            await git("rm", "--cached", "--quiet", "--ignore-unmatch", "--", *removed, quiet=True)
        staged = await git("diff", "--cached", "--quiet", "--exit-code", check=False, quiet=True)
        changed = staged.exit_code != 0
        if staged.exit_code not in (0, 1):
            raise StepFailed(f"git diff failed: {staged.stderr_tail()}", kind="git_error", retryable=False)
        if changed:
            await git("commit", "--quiet", "--no-verify", "-m", message)
            await ctx.log(f"committed {len(paths)} file(s) on {branch}")
        else:
            await ctx.log(f"nothing changed on {branch}; no commit")
        tip = await git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False, quiet=True)
        commit = tip.stdout.strip() if tip.exit_code == 0 else ""

        pushed = False
        if push and commit and (changed or remote_tip.exit_code != 0):
            result = await git("push", "--porcelain", "origin", f"HEAD:refs/heads/{branch}", check=False)
            if result.exit_code != 0:
                text = result.stderr + result.stdout
                if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
                    raise StepFailed(f"git push to {branch} was rejected (the branch moved); retry re-applies: "
                                     f"{result.stderr_tail()}", kind="push_rejected", retryable=True)
                raise StepFailed(f"git push failed ({result.exit_code}): {result.stderr_tail()}",
                                 kind="git_remote", retryable=True)
            pushed = True
            await ctx.log(f"pushed {commit[:12]} to {branch}")
        return {"commit": commit, "changed": changed, "branch": branch, "pushed": pushed}

    @staticmethod
    def _repository(value: Any, root: Path) -> tuple[str, list[str]]:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise invalid("git: `repository` must be a path or URL")
        value = value.strip()
        if value.startswith("-"):
            raise invalid(f"git: {value!r} is not a repository path or URL")
        if "::" in value.split("/", 1)[0]:
            raise invalid("git: remote helpers (`transport::address`) are not allowed")
        parts = urlsplit(value)
        if parts.scheme and len(parts.scheme) > 1:  # a one-letter "scheme" would be a Windows drive
            if parts.scheme not in ALLOWED_PROTOCOLS.split(":"):
                raise invalid(f"git: protocol {parts.scheme!r} is not allowed (use {ALLOWED_PROTOCOLS.replace(':', ', ')})")
            return value, url_secrets(value)
        if re.match(r"^[\w.-]+@[\w.-]+:", value):  # scp-like ssh: git@host:org/repo.git
            return value, []
        path = Path(value) if os.path.isabs(value) else (root / value)
        return str(path), []

    @staticmethod
    def _file_path(repo_root: Path, name: Any) -> Path:
        if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
            raise invalid(f"git: {name!r} is not a file path")
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            raise invalid(f"git: {name!r} escapes the repository; give a path inside it")
        if pure.parts and pure.parts[0] == ".git":
            raise invalid(f"git: {name!r} lies inside .git")
        target = (repo_root / pure)
        resolved = target.parent.resolve() / target.name
        if not resolved.is_relative_to(repo_root) or resolved == repo_root:
            raise invalid(f"git: {name!r} escapes the repository (through a symbolic link)")
        if (resolved.relative_to(repo_root).parts or ("",))[0] == ".git":
            raise invalid(f"git: {name!r} lies inside .git")
        return resolved
