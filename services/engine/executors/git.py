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

This module only reads the step's inputs and maps failures to ``StepFailed``: the clone, the
path checks, the idempotent commit, the push and the hardening are :mod:`innominatus.kit.git`,
shared with the specs service's GitOps writer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from innominatus.engine.model import StepContext, StepFailed
from innominatus.kit.git import (
    GitError,
    GitRunner,
    check_branch,
    check_repository,
    commit_files,
    hardened_env,
    url_secrets,
)

from ._process import base_env, ensure_workdir, inside, invalid, timeout_of

__all__ = ["DEFAULT_TIMEOUT", "GitExecutor"]

DEFAULT_TIMEOUT = 600.0


class GitExecutor:
    type = "git"
    input_schema: ClassVar[dict[str, Any]] = {
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
        try:
            return await self._run(ctx)
        except GitError as exc:
            raise StepFailed(exc.message, kind=exc.kind, retryable=exc.retryable) from exc

    async def _run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown:
            raise invalid(f"git: unknown input(s) {', '.join(sorted(unknown))}")
        root = ensure_workdir(ctx)
        repository = check_repository(spec.get("repository"), root)
        branch = check_branch(spec.get("branch") or "main")
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

        git = GitRunner(env=hardened_env(base_env(ctx), author=(author_name, author_email)),
                        secrets=url_secrets(repository), timeout=timeout, log=ctx.log, cancelled=ctx.cancelled,
                        executable=self.git)
        result = await commit_files(git, repository, clone, branch, files, message, push=push,
                                    label=str(clone.relative_to(root)))
        return {"commit": result.commit, "changed": result.changed, "branch": result.branch, "pushed": result.pushed}
