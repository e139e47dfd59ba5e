"""Names users give things (applications, environments, workloads): one rule everywhere.

They become parts of paths, hostnames and database identifiers, so they are RFC 1123 labels:
lowercase letters, digits and '-', 1-63 characters, not starting or ending with '-'.
"""

from __future__ import annotations

import re

from innominatus.kit.errors import FieldViolation, InvalidArgument

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def check_name(value: str, field: str) -> None:
    if not _LABEL.fullmatch(value):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid name: use 1-63 lowercase letters, digits and '-'",
            violations=[FieldViolation(field, "lowercase letters, digits and '-', at most 63 characters")],
        )
