"""Built-in provisioner drivers, by name.

``DRIVERS`` maps a driver name (what a resource definition's ``provisioner`` names) to a driver
instance; :func:`get_driver` looks one up and explains an unknown name. The contract every driver
follows is in :mod:`innominatus.resources.drivers.base`; docs/provisioners.md describes each one.
"""

from __future__ import annotations

import difflib

from innominatus.kit.errors import InvalidArgument
from innominatus.resources.drivers.base import (
    Drift,
    Driver,
    Health,
    ProvisionContext,
    ProvisionError,
    ProvisionResult,
)
from innominatus.resources.drivers.environment import EnvironmentDriver
from innominatus.resources.drivers.postgres import PostgresDriver
from innominatus.resources.drivers.redis_acl import RedisDriver
from innominatus.resources.drivers.simple import DnsDriver, RouteDriver, ServicePortDriver, VolumeDriver

DRIVERS: dict[str, Driver] = {
    driver.name: driver
    for driver in (
        PostgresDriver(),
        RedisDriver(),
        DnsDriver(),
        RouteDriver(),
        VolumeDriver(),
        ServicePortDriver(),
        EnvironmentDriver(),
    )
}


class UnknownDriver(InvalidArgument):
    default_reason = "UNKNOWN_DRIVER"


def known_drivers() -> list[str]:
    return sorted(DRIVERS)


def get_driver(name: str) -> Driver:
    """The built-in driver called ``name``; :class:`UnknownDriver` (with a suggestion) otherwise."""
    driver = DRIVERS.get(name) if isinstance(name, str) else None
    if driver is not None:
        return driver
    known = known_drivers()
    close = difflib.get_close_matches(str(name).lower(), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownDriver(
        f"unknown driver {name!r}{hint}; known drivers: {', '.join(known)}",
        metadata={"driver": str(name), "known": ",".join(known), **({"suggestion": close[0]} if close else {})},
    )


__all__ = [
    "DRIVERS",
    "Drift",
    "Driver",
    "Health",
    "ProvisionContext",
    "ProvisionError",
    "ProvisionResult",
    "UnknownDriver",
    "get_driver",
    "known_drivers",
]
