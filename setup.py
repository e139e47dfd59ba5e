"""Package discovery for the services/ -> innominatus.* mapping declared in pyproject.toml.

setuptools' automatic discovery cannot rename packages, so the list is derived here:
services/engine becomes innominatus.engine, services/kit becomes innominatus.kit, and so on;
the Rego policies in policies/ ship as innominatus.policies.
"""

from setuptools import find_packages, setup

packages = ["innominatus", "innominatus.policies"] + [
    "innominatus" + name[len("services") :] for name in find_packages(include=["services.*"])
]

setup(packages=packages)
