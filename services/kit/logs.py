"""Structured JSON logs (structlog) carrying request id, trace id, peer and user.

Every log line is one JSON object on stderr. Values under keys that look like secrets are
replaced before rendering, so a password or token passed to a logger never reaches a log.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog

from innominatus.kit import context

_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api_?key|authorization|private)", re.IGNORECASE)
REDACTED = "[redacted]"


def _add_request_context(_logger, _name, event_dict):
    ctx = context.current()
    if ctx is not None:
        event_dict.setdefault("request_id", ctx.request_id)
        if ctx.trace_id:
            event_dict.setdefault("trace_id", ctx.trace_id)
        if ctx.method:
            event_dict.setdefault("method", ctx.method)
        if ctx.peer is not None:
            event_dict.setdefault("peer", ctx.peer.service)
        if ctx.subject is not None:
            event_dict.setdefault("user", ctx.subject.actor)
    return event_dict


def redact(value):
    """Copy of ``value`` with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _redact_secrets(_logger, _name, event_dict):
    return redact(event_dict)


_configured = False


def configure(level: str = "INFO", service: str | None = None) -> None:
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    # Libraries that log through the standard library (alembic, uvicorn, grpc) get the same
    # JSON lines, context and redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(sort_keys=True),
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _add_request_context,
                _redact_secrets,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    # httpx logs every request URL at INFO, query strings (and any token in them) included.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_request_context,
            _redact_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    _configured = True


def get_logger(name: str | None = None, **bound):
    if not _configured:
        configure()
    logger = structlog.get_logger(name)
    return logger.bind(**bound) if bound else logger
