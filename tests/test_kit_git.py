"""The kit's git plumbing (innominatus.kit.git): real git in temporary directories, and a fake
git (a shell script) where git's own output has to contain credentials. No database.

The workflow step that wraps it (``type: git``) is tested in test_executors.py; the specs
service's GitOps writer in test_deployment_sets.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from innominatus.kit.git import (
    ALLOWED_PROTOCOLS,
    Clone,
    GitError,
    GitRunner,
    check_branch,
    check_repository,
    commit_files,
    display_url,
    hardened_env,
    run_git_sync,
    url_secrets,
)

AUTHOR = ("Robot", "robot@example.com")
TOKEN = "ghp_S3cretT0kenValue42"


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _commits(remote: Path, branch: str = "main") -> list[str]:
    return _git("--git-dir", str(remote), "rev-list", branch).split()


@pytest.fixture
def bare(tmp_path) -> Path:
    remote = tmp_path / "remote.git"
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    return remote


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def runner(log):
    def make(**kwargs) -> GitRunner:
        kwargs.setdefault("env", hardened_env(author=AUTHOR))
        return GitRunner(log=log, timeout=60, **kwargs)
    return make


def fake_git(tmp_path: Path, script: str) -> str:
    fake = tmp_path / "fake-git"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    return str(fake)


# -------------------------------------------------------------------------------- URLs, names


@pytest.mark.parametrize("url,shown,secrets", [
    (f"https://{TOKEN}@github.com/org/repo.git", "https://***@github.com/org/repo.git", {TOKEN}),
    (f"https://x-access-token:{TOKEN}@h/r.git", "https://***@h/r.git",
     {TOKEN, "x-access-token", f"x-access-token:{TOKEN}"}),
    ("https://robot%40corp:p%40ss@h/r.git", "https://***@h/r.git",
     {"p%40ss", "p@ss", "robot%40corp", "robot@corp", "robot%40corp:p%40ss", "robot@corp:p@ss"}),
    # ssh: the user name is an account ("git"), not a credential; the password is.
    ("ssh://git:hunter2pw@h/r.git", "ssh://***@h/r.git", {"hunter2pw", "git:hunter2pw"}),
    ("ssh://git@h/r.git", "ssh://***@h/r.git", set()),
    ("https://h/r.git", "https://h/r.git", set()),
    ("/srv/git/r.git", "/srv/git/r.git", set()),
])
def test_display_url_and_url_secrets(url, shown, secrets):
    assert display_url(url) == shown
    assert set(url_secrets(url)) == secrets


def test_check_repository_and_branch(tmp_path):
    assert check_repository("file:///srv/r.git", tmp_path) == "file:///srv/r.git"
    assert check_repository("git@host:org/r.git", tmp_path) == "git@host:org/r.git"
    assert check_repository("repos/r.git", tmp_path) == str(tmp_path / "repos/r.git")
    for value, says in (("ext::sh -c touch% pwned", "remote helpers"), ("--upload-pack=touch pwned", "not a repository"),
                        ("ftp://host/repo", "protocol 'ftp' is not allowed"), ("", "must be a path or URL"),
                        (None, "must be a path or URL")):
        with pytest.raises(GitError, match=says) as info:
            check_repository(value, tmp_path)
        assert info.value.kind == "invalid_input" and info.value.retryable is False
    assert check_branch("feature/x-1.2") == "feature/x-1.2"
    for branch in ("-x", "a..b", "a//b", "/a", "a/", "a.lock", "a b", "", None):
        with pytest.raises(GitError, match="not a valid branch name") as info:
            check_branch(branch)
        assert info.value.kind == "invalid_input"


def test_hardened_env():
    env = hardened_env({"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "GIT_ALLOW_PROTOCOL": "ext"}, author=AUTHOR)
    assert env["GIT_ALLOW_PROTOCOL"] == ALLOWED_PROTOCOLS  # the base cannot widen it
    assert env["GIT_CONFIG_GLOBAL"] == os.devnull and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert (env["GIT_AUTHOR_NAME"], env["GIT_COMMITTER_EMAIL"]) == AUTHOR
    with pytest.raises(GitError, match="author name must be text") as info:
        hardened_env(author=("a\0b", "x@y"))
    assert info.value.kind == "invalid_input"


# ------------------------------------------------------------------------------------ writing


async def test_commit_is_idempotent_and_null_deletes(runner, bare, tmp_path, log):
    files = {"apps/checkout/deployment.yaml": "replicas: 1\n", "README.md": "hello\n"}
    first = await commit_files(runner(), str(bare), tmp_path / "w1" / "repo", "main", files, "deploy", push=True)
    assert first.changed is True and first.pushed is True and len(first.commit) == 40 and first.branch == "main"
    assert _commits(bare) == [first.commit]
    assert _git("--git-dir", str(bare), "log", "-1", "--format=%an <%ae> %cn %s", "main").strip() == \
        "Robot <robot@example.com> Robot deploy"
    assert "the repository is empty; starting branch main" in log.lines

    # The same content again, in the clone left behind (fetched and reset) and in a fresh one.
    again = await commit_files(runner(), str(bare), tmp_path / "w1" / "repo", "main", files, "deploy", push=True)
    assert (again.changed, again.pushed, again.commit) == (False, False, first.commit)
    assert "reusing the clone in " + str(tmp_path / "w1" / "repo") in log.lines
    fresh = await commit_files(runner(), str(bare), tmp_path / "w2" / "repo", "main", files, "deploy", push=True)
    assert (fresh.changed, fresh.commit) == (False, first.commit)
    assert _commits(bare) == [first.commit]

    changed = await commit_files(runner(), str(bare), tmp_path / "w2" / "repo", "main",
                                 {"apps/checkout/deployment.yaml": "replicas: 2\n", "README.md": None}, "scale",
                                 push=True)
    assert changed.changed is True and _commits(bare) == [changed.commit, first.commit]
    assert _git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "main").split() == \
        ["apps/checkout/deployment.yaml"]


async def test_new_branch_from_the_default_and_no_push(runner, bare, tmp_path, log):
    seeded = await commit_files(runner(), str(bare), tmp_path / "a", "main", {"a.txt": "a"}, "seed", push=True)
    branch = await commit_files(runner(), str(bare), tmp_path / "b", "feature/x", {"b.txt": "b"}, "b", push=True)
    assert "branch feature/x does not exist yet; creating it from the default branch" in log.lines
    assert _commits(bare, "feature/x") == [branch.commit, seeded.commit]
    local = await commit_files(runner(), str(bare), tmp_path / "c", "main", {"c.txt": "c"}, "c")
    assert local.changed is True and local.pushed is False
    assert _commits(bare) == [seeded.commit]  # nothing pushed


@pytest.mark.parametrize("path,says", [
    ("../escape.txt", "escapes the repository; give a path inside it"),
    ("/etc/passwd", "escapes the repository; give a path inside it"),
    ("a/../../escape.txt", "escapes the repository; give a path inside it"),
    (".git/config", "lies inside .git"),
    (".git/hooks/pre-commit", "lies inside .git"),
    ("a\\b", "is not a file path"),
    ("", "is not a file path"),
])
async def test_paths_outside_the_repository_are_refused_before_anything_is_written(runner, bare, tmp_path, path, says):
    work = tmp_path / "work"
    files = {"first.txt": "written only if every path is fine", path: "owned"}
    with pytest.raises(GitError) as info:
        await commit_files(runner(), str(bare), work / "repo", "main", files, "m", push=True)
    assert info.value.kind == "invalid_input" and info.value.retryable is False
    assert says in info.value.message and repr(path) in info.value.message
    assert not (work / "repo" / "first.txt").exists() and not (work / "escape.txt").exists()
    assert _git("--git-dir", str(bare), "for-each-ref").strip() == ""  # nothing committed or pushed


async def test_a_symbolic_link_in_the_repository_cannot_lead_outside(runner, bare, tmp_path):
    # Someone committed a link to a directory outside the clone.
    seed = tmp_path / "seed"
    _git("clone", "--quiet", str(bare), str(seed))
    (seed / "out").symlink_to(tmp_path)
    _git("add", "out", cwd=seed)
    _git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "--quiet", "-m", "link", cwd=seed)
    _git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    clone = Clone(runner(), tmp_path / "w" / "repo", "main")
    await clone.open(str(bare))
    with pytest.raises(GitError, match="escapes the repository \\(through a symbolic link\\)") as info:
        clone.write({"out/pwned.txt": "x"})
    assert info.value.kind == "invalid_input"
    with pytest.raises(GitError, match="is a symbolic link or directory"):
        clone.write({"out": "replace the link"})
    assert not (tmp_path / "pwned.txt").exists()
    with pytest.raises(GitError, match="must be text or null"):
        clone.write({"a.txt": 42})


async def test_a_directory_that_is_not_a_clone_is_refused(runner, bare, tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep.txt").write_text("mine")
    with pytest.raises(GitError, match="exists in the work directory and is not a clone") as info:
        await commit_files(runner(), str(bare), tmp_path / "repo", "main", {"a": "b"}, "m", label="repo")
    assert info.value.kind == "invalid_input" and (tmp_path / "repo" / "keep.txt").read_text() == "mine"


async def test_hooks_signing_and_user_configuration_are_ignored(bare, tmp_path, log):
    # A user configuration that would send every clone of the repository elsewhere.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[url "file://{tmp_path}/nowhere.git"]\n\tinsteadOf = {bare}\n')
    git = GitRunner(env=hardened_env({"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"},
                                     author=AUTHOR), log=log, timeout=60)
    clone = Clone(git, tmp_path / "w" / "repo", "main")
    await clone.open(str(bare))
    # The clone's own configuration asks for signing and has a hook that would run on commit.
    _git("config", "commit.gpgsign", "true", cwd=clone.path)
    marker = tmp_path / "hook-ran"
    hook = clone.path / ".git" / "hooks" / "post-commit"  # post-commit: --no-verify alone would not stop it
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    clone.write({"a.txt": "a"})
    commit, changed = await clone.commit("no hooks")
    assert changed and await clone.push() is True
    assert _commits(bare) == [commit]
    assert not marker.exists()


async def test_a_rejected_push_is_push_rejected_and_a_retry_reapplies(runner, bare, tmp_path):
    await commit_files(runner(), str(bare), tmp_path / "seed", "main", {"a.txt": "a"}, "seed", push=True)
    mine = Clone(runner(), tmp_path / "mine", "main")
    await mine.open(str(bare))
    # Someone else pushes in between.
    theirs = await commit_files(runner(), str(bare), tmp_path / "theirs", "main", {"b.txt": "b"}, "theirs", push=True)
    mine.write({"c.txt": "c"})
    await mine.commit("mine")
    with pytest.raises(GitError) as info:
        await mine.push()
    assert info.value.kind == "push_rejected" and info.value.retryable is True
    assert "rejected (the branch moved)" in info.value.message
    assert _commits(bare)[0] == theirs.commit
    # The retry: open again (fetch, reset to the new tip), re-apply.
    await mine.open(str(bare))
    mine.write({"c.txt": "c"})
    commit, changed = await mine.commit("mine")
    assert changed and await mine.push() is True
    assert _commits(bare)[:2] == [commit, theirs.commit]
    assert _git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "main").split() == ["a.txt", "b.txt", "c.txt"]


async def test_an_unreachable_repository_is_git_remote(runner, tmp_path):
    with pytest.raises(GitError, match="git clone failed") as info:
        await commit_files(runner(), str(tmp_path / "missing.git"), tmp_path / "w", "main", {"a": "b"}, "m")
    assert info.value.kind == "git_remote" and info.value.retryable is True


# ------------------------------------------------------------------------ credentials, limits


@pytest.mark.parametrize("repository,shown,secrets", [
    (f"https://{TOKEN}@git.example.test/org/repo.git", "https://***@git.example.test/org/repo.git", [TOKEN]),
    (f"https://x-access-token:{TOKEN}@git.example.test/org/repo.git", "https://***@git.example.test/org/repo.git",
     [TOKEN, "x-access-token"]),
    ("https://robot%40corp:p%40ss-w0rd@git.example.test/repo.git", "https://***@git.example.test/repo.git",
     ["robot@corp", "robot%40corp", "p@ss-w0rd", "p%40ss-w0rd"]),
    ("ssh://git:hunter2pw@git.example.test/repo.git", "ssh://***@git.example.test/repo.git", ["hunter2pw"]),
])
async def test_credentials_are_masked_in_what_git_prints_logs_and_errors(tmp_path, log, repository, shown, secrets):
    """Whatever git itself echoes (stdout, stderr: logged, kept, and in the error) is masked."""
    decoded = repository.replace("%40", "@")
    git = GitRunner(env=hardened_env(), secrets=url_secrets(repository), log=log,
                    executable=fake_git(tmp_path, f'echo "fetching $*"\necho "fatal: cannot reach $* ({decoded})" >&2\n'
                                                  "exit 128\n"))
    with pytest.raises(GitError) as info:
        await commit_files(git, repository, tmp_path / "w" / "repo", "main", {"a": "b"}, "m")
    assert info.value.kind == "git_remote"
    assert "fatal: cannot reach" in info.value.message and "***@git.example.test" in info.value.message
    assert f"cloning {shown}" in log.lines and "[stderr] fatal: cannot reach" in log.text
    for secret in secrets:
        assert secret not in log.text and secret not in info.value.message, secret


def test_run_git_sync_masks_before_it_cuts_and_times_out(tmp_path):
    url = f"https://{TOKEN}@git.example.test/repo.git"
    # The secret straddles the point where the error's 2000 characters start.
    fake = fake_git(tmp_path, f'printf "%s" "{TOKEN}" >&2\nhead -c 1990 /dev/zero | tr "\\0" x >&2\nexit 128\n')
    with pytest.raises(GitError) as info:
        run_git_sync(tmp_path, "clone", "--", url, "x", secrets=url_secrets(url), executable=fake)
    assert info.value.message.startswith("git clone failed (128): ")
    assert all(TOKEN[i:i + 6] not in info.value.message for i in range(len(TOKEN) - 5))

    assert run_git_sync(tmp_path, "--version").stdout.startswith("git version")
    assert run_git_sync(tmp_path, "rev-parse", "--verify", "nothing", check=False).returncode != 0

    started = time.monotonic()
    with pytest.raises(GitError, match="timed out after 0.5s") as info:
        run_git_sync(tmp_path, "fetch", timeout=0.5, executable=fake_git(tmp_path, "sleep 30\n"))
    assert info.value.kind == "timeout" and info.value.retryable is True and time.monotonic() - started < 10

    with pytest.raises(GitError, match="could not run") as info:
        run_git_sync(tmp_path, "status", executable=str(tmp_path / "no-such-git"))
    assert info.value.kind == "spawn_error"


async def test_cancelling_stops_a_running_git(tmp_path, log):
    cancelled = asyncio.Event()
    git = GitRunner(env=hardened_env(), cancelled=cancelled, log=log, executable=fake_git(tmp_path, "sleep 30\n"))
    task = asyncio.ensure_future(git.run("fetch", cwd=tmp_path))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    cancelled.set()
    with pytest.raises(GitError) as info:
        await task
    assert info.value.kind == "cancelled" and info.value.retryable is False and time.monotonic() - started < 5
