"""Where the CLI keeps its session, and which server and token a command uses.

The session lives in ``$INNOMINATUS_CONFIG_DIR/credentials.json`` (default
``~/.config/innominatus/credentials.json``): the directory is created 0700 and the file
is written 0600, atomically. ``INNOMINATUS_SERVER`` and ``INNOMINATUS_TOKEN`` override
what is stored, so scripts and CI can run without ``innominatus login``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"
CONFIG_DIR_ENV = "INNOMINATUS_CONFIG_DIR"
SERVER_ENV = "INNOMINATUS_SERVER"
TOKEN_ENV = "INNOMINATUS_TOKEN"
DATA_DIR_ENV = "INNOMINATUS_DATA_DIR"
CREDENTIALS_FILE = "credentials.json"
ENDPOINTS_FILE = "endpoints.json"


class CredentialsError(Exception):
    """The credentials file exists but cannot be read or written."""


@dataclass
class Session:
    """What a command authenticates with."""

    server: str
    token: str | None
    username: str | None = None
    expires_at: str | None = None
    source: str = "none"  # "env", "file" or "none"

    def expired(self, now: datetime | None = None) -> bool:
        if not self.expires_at or self.source != "file":
            return False
        moment = parse_time(self.expires_at)
        if moment is None:
            return False
        return (now or datetime.now(timezone.utc)) >= moment


def config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".config"
    return root / "innominatus"


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS_FILE


def load() -> dict[str, Any] | None:
    """The stored session, or None when there is none."""
    path = credentials_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise CredentialsError(f"{path} is not valid JSON; run `innominatus logout` and log in again") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path} is not a JSON object; run `innominatus logout` and log in again")
    return data


def save(server: str, access_token: str, expires_in: int | None, username: str | None) -> Path:
    """Store a session: directory 0700, file 0600, written atomically."""
    directory = config_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise CredentialsError(f"cannot create {directory}: {exc.strerror or exc}") from None
    expires_at = None
    if expires_in and expires_in > 0:
        expires_at = format_time(datetime.now(timezone.utc) + timedelta(seconds=int(expires_in)))
    data = {"server": server, "access_token": access_token, "expires_at": expires_at, "username": username}
    path = directory / CREDENTIALS_FILE
    try:
        fd, tmp = tempfile.mkstemp(prefix=".credentials-", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.chmod(path, 0o600)
    except OSError as exc:
        raise CredentialsError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def delete() -> bool:
    """Forget the stored session. True when there was one."""
    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CredentialsError(f"cannot remove {path}: {exc.strerror or exc}") from None
    return True


def endpoints_server(data_dir: Path | None = None) -> str | None:
    """The gateway URL written by ``innominatus up`` into <data dir>/endpoints.json, if any.

    Accepted shapes: {"gateway": "http://host:port"}, {"gateway": "host:port"},
    {"gateway": {"url": ...}} / {"gateway": {"address": ...}}, and the same under "endpoints".
    """
    if data_dir is None:
        data_dir = Path(os.environ.get(DATA_DIR_ENV, "").strip() or ".innominatus")
    try:
        data = json.loads((data_dir / ENDPOINTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("endpoints"), dict) and "gateway" not in data:
        data = data["endpoints"]
    value = data.get("gateway") or data.get("gateway_url") or data.get("gatewayUrl")
    if isinstance(value, dict):
        value = value.get("url") or value.get("address") or value.get("addr")
    if not isinstance(value, str) or not value.strip():
        return None
    return normalize_server(value)


def normalize_server(value: str) -> str:
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    return value


def default_server() -> str:
    """Server for `login` when --server is not given."""
    env = os.environ.get(SERVER_ENV, "").strip()
    if env:
        return normalize_server(env)
    return endpoints_server() or DEFAULT_SERVER


def current_session() -> Session:
    """Server and token for a command: environment first, then the stored session."""
    env_server = os.environ.get(SERVER_ENV, "").strip()
    env_token = os.environ.get(TOKEN_ENV, "").strip()
    stored = load() or {}
    stored_server = stored.get("server") if isinstance(stored.get("server"), str) else None
    server = normalize_server(env_server) if env_server else (stored_server or endpoints_server() or DEFAULT_SERVER)
    if env_token:
        return Session(server=server, token=env_token, source="env")
    token = stored.get("access_token")
    if isinstance(token, str) and token:
        return Session(
            server=server,
            token=token,
            username=stored.get("username"),
            expires_at=stored.get("expires_at"),
            source="file",
        )
    return Session(server=server, token=None)


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment
