"""Configuration from environment variables (documented in docs/operations.md).

One ``Settings`` object per process. ``innominatus up`` builds it in code for the embedded
mesh; ``innominatus serve <service>`` reads it from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from innominatus.kit.pki import TlsFiles

# In start order: audit first, so the others can ship their audit events from the start.
SERVICES = ("audit", "identity", "resources", "engine", "specs")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"configuration error: {name}={raw!r} is not a number") from exc


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".innominatus")
    # SQLAlchemy URL. PostgreSQL: every service gets its own schema in this database.
    # Unset: each service keeps an SQLite file in data_dir (the embedded default).
    database_url: str | None = None
    # OPA sidecar REST endpoint; unset means in-process Rego over policy_dir.
    opa_url: str | None = None
    policy_dir: Path | None = None
    tls: TlsFiles | None = None
    # Where each service listens (serve) and where peers find it (clients).
    addresses: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    token_ttl_seconds: int = 900
    relay_interval_seconds: float = 1.0
    shutdown_grace_seconds: float = 10.0
    # Time between reporting NOT_SERVING and refusing new calls, so load balancers notice.
    shutdown_delay_seconds: float = 0.0
    # host:port for a Prometheus /metrics endpoint of a `serve`d gRPC service; empty: none.
    metrics_listen: str = ""
    # Serve the gateway over HTTPS with this certificate and key (PEM); empty: plain HTTP.
    gateway_tls_cert: Path | None = None
    gateway_tls_key: Path | None = None
    gateway_listen: str = "127.0.0.1:8080"
    gateway_max_body_bytes: int = 1_048_576
    gateway_rate_limit_per_second: float = 50.0
    gateway_rate_limit_burst: int = 100

    def with_changes(self, **changes) -> "Settings":
        return replace(self, **changes)

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def address_of(self, service: str) -> str:
        try:
            return self.addresses[service]
        except KeyError:
            raise SystemExit(
                f"configuration error: no address for the {service} service; "
                f"set INNOMINATUS_{service.upper()}_ADDR (host:port)"
            ) from None

    @classmethod
    def from_env(cls) -> "Settings":
        data_dir = Path(_env("INNOMINATUS_DATA_DIR", ".innominatus"))
        tls = None
        ca, cert, key = _env("INNOMINATUS_TLS_CA"), _env("INNOMINATUS_TLS_CERT"), _env("INNOMINATUS_TLS_KEY")
        if ca and cert and key:
            tls = TlsFiles(Path(ca), Path(cert), Path(key))
        elif ca or cert or key:
            raise SystemExit(
                "configuration error: set all of INNOMINATUS_TLS_CA, INNOMINATUS_TLS_CERT and INNOMINATUS_TLS_KEY"
            )
        addresses = {}
        for name in SERVICES:
            value = _env(f"INNOMINATUS_{name.upper()}_ADDR")
            if value:
                addresses[name] = value
        policy_dir = _env("INNOMINATUS_POLICY_DIR")
        return cls(
            data_dir=data_dir,
            database_url=_env("INNOMINATUS_DATABASE_URL"),
            opa_url=_env("INNOMINATUS_OPA_URL"),
            policy_dir=Path(policy_dir) if policy_dir else None,
            tls=tls,
            addresses=addresses,
            log_level=_env("INNOMINATUS_LOG_LEVEL", "INFO"),
            token_ttl_seconds=int(_env_float("INNOMINATUS_TOKEN_TTL_SECONDS", 900)),
            relay_interval_seconds=_env_float("INNOMINATUS_AUDIT_RELAY_INTERVAL_SECONDS", 1.0),
            shutdown_grace_seconds=_env_float("INNOMINATUS_SHUTDOWN_GRACE_SECONDS", 10.0),
            shutdown_delay_seconds=_env_float("INNOMINATUS_SHUTDOWN_DELAY_SECONDS", 0.0),
            metrics_listen=_env("INNOMINATUS_METRICS_LISTEN", ""),
            gateway_tls_cert=_path(_env("INNOMINATUS_GATEWAY_TLS_CERT")),
            gateway_tls_key=_path(_env("INNOMINATUS_GATEWAY_TLS_KEY")),
            gateway_listen=_env("INNOMINATUS_GATEWAY_LISTEN", "127.0.0.1:8080"),
            gateway_max_body_bytes=int(_env_float("INNOMINATUS_GATEWAY_MAX_BODY_BYTES", 1_048_576)),
            gateway_rate_limit_per_second=_env_float("INNOMINATUS_GATEWAY_RATE_LIMIT_PER_SECOND", 50.0),
            gateway_rate_limit_burst=int(_env_float("INNOMINATUS_GATEWAY_RATE_LIMIT_BURST", 100)),
        )
