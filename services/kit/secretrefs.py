"""Secret references: how the platform names a secret without holding it.

``secret://<store>/<path>[?version=<n>]#<key>`` is what resources keep, deployment sets carry
and manifests reference; only the secret store behind ``<store>`` holds the value. Shared by
the resources service (which writes them) and the specs service (which renders them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_PATH_LENGTH = 512
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_PATH_RULE = "segments of letters, digits, '_', '-' and '.' separated by single '/'"


def validate_path(path: str) -> str:
    """Return ``path`` when it is a valid secret path, else raise ValueError saying why.

    Valid: ``apps/<app>/<env>/<resource>``-like — relative, no empty, ``.`` or ``..`` segments,
    at most 512 characters of ``[A-Za-z0-9_.-]`` separated by ``/``.
    """
    if not isinstance(path, str):
        raise ValueError(f"secret path must be a string, not {type(path).__name__}")
    if not path:
        raise ValueError("secret path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"secret path is longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/"):
        raise ValueError(f"secret path {path!r} must be relative (no leading '/')")
    if path.endswith("/"):
        raise ValueError(f"secret path {path!r} must not end with '/'")
    for segment in path.split("/"):
        if segment == "":
            raise ValueError(f"secret path {path!r} has an empty segment ('//')")
        if segment in (".", ".."):
            raise ValueError(f"secret path {path!r} must not contain '.' or '..' segments")
        if not _SEGMENT.match(segment):
            raise ValueError(
                f"secret path {_printable(path)} has an invalid segment {_printable(segment)}: "
                f"use {_PATH_RULE}"
            )
    return path


def validate_prefix(prefix: str) -> str:
    """A list prefix: ``""`` (everything) or a valid path, a trailing ``/`` allowed. Returns it without the ``/``."""
    if prefix in ("", None):
        return ""
    if not isinstance(prefix, str):
        raise ValueError(f"secret prefix must be a string, not {type(prefix).__name__}")
    trimmed = prefix[:-1] if prefix.endswith("/") else prefix
    try:
        return validate_path(trimmed)
    except ValueError as exc:
        raise ValueError(str(exc).replace("secret path", "secret prefix", 1)) from None


def _printable(text: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return repr(shown)


# ---------------------------------------------------------------------------------------------
# References and values

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_STORE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_REF = re.compile(r"^secret://(?P<store>[^/?#]+)/(?P<path>[^?#]+)(?:\?version=(?P<version>[0-9]+))?#(?P<key>[^#]+)$")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret value lives: ``secret://<store>/<path>[?version=<n>]#<key>``.

    The platform stores and returns this instead of the value. It holds no secret, so it may
    be logged and audited; :meth:`redacted` is its display form.
    """

    store: str
    path: str
    key: str
    version: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.store, str) or not _STORE.match(self.store):
            raise ValueError(f"secret store name {_printable(str(self.store))} is invalid: use [a-z][a-z0-9-]*")
        validate_path(self.path)
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise ValueError(f"secret key {_printable(str(self.key))} is invalid: use letters, digits, '_', '-' and '.'")
        if self.version is not None and (not isinstance(self.version, int) or self.version < 1):
            raise ValueError(f"secret version must be a positive integer, not {self.version!r}")

    @classmethod
    def parse(cls, text: str) -> "SecretRef":
        if not isinstance(text, str):
            raise ValueError(f"a secret reference must be a string, not {type(text).__name__}")
        match = _REF.match(text)
        if not match:
            raise ValueError(
                f"{_printable(text)} is not a secret reference: expected secret://<store>/<path>[?version=<n>]#<key>"
            )
        version = match.group("version")
        return cls(match.group("store"), match.group("path"), match.group("key"), int(version) if version else None)

    def format(self) -> str:
        version = f"?version={self.version}" if self.version is not None else ""
        return f"secret://{self.store}/{self.path}{version}#{self.key}"

    def redacted(self) -> str:
        """Display form: the reference only; a value is never part of a SecretRef."""
        return self.format()

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"SecretRef({self.format()!r})"


def is_secret_ref(text: Any) -> bool:
    return isinstance(text, str) and bool(_REF.match(text))


def format_ref(store: str, path: str, key: str, version: int | None = None) -> str:
    return SecretRef(store, path, key, version).format()


def parse_ref(text: str) -> SecretRef:
    return SecretRef.parse(text)
