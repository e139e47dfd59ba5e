"""``ansible``: run a playbook with ``ansible-playbook`` (ansible-core) on the local connection.

::

    - id: configure
      type: ansible
      with:
        playbook:                      # inline plays (written to the work directory) ...
          - hosts: localhost
            gather_facts: false
            tasks:
              - copy: {content: "{{ greeting }}", dest: "{{ target }}"}
        # playbook: site.yml           # ... or a path (relative to the work directory, or absolute)
        vars: {greeting: hello, target: /srv/app/motd}   # written to vars.yml, passed as -e @vars.yml
        check: false                   # --check
        env: {}
        timeout: 1800

Runs ``ansible-playbook -c local -i localhost, [-e @vars.yml] [--check] PLAYBOOK`` in the
step's work directory with ansible's home, temp directories and retry files kept there, no
colour, and the platform's Python as the target interpreter. Variables go through a YAML file,
never through the command line, and every string in them (at any depth; mapping keys excepted)
is tagged ``!unsafe``: Ansible never templates those values, so a param such as
``{{ lookup('pipe', 'id') }}`` reaches the playbook as that literal text instead of running a
command on the engine's host. Numbers, booleans and nulls keep their types. Outputs ``{exit_code, stdout, stderr, changed, stats}`` where
``stats`` is parsed from the PLAY RECAP (``{ok, changed, unreachable, failed, skipped, rescued,
ignored}``). Non-zero exit -> kind "exit_code"; ``ansible-playbook`` not found ->
StepFailed(kind="tool_missing", retryable=False): "ansible-playbook is not installed: pip
install ansible-core". The binary is looked up on ``with.env.PATH`` / the executor's ``path``
override if given, else on the platform's PATH and next to the running Python (a virtualenv).
"""

from __future__ import annotations

import os
import re
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML

from innominatus.engine.model import StepContext

from ._process import (Redactor, base_env, ensure_workdir, exit_failure, invalid, inside, run_process,
                       secret_values, timeout_of)
from .tools import find_tool, tool_missing

DEFAULT_TIMEOUT = 3600.0
_RECAP = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")


class _Unsafe(str):
    """A string Ansible must not template: dumped with the ``!unsafe`` tag."""


class _VarsDumper(pyyaml.SafeDumper):
    pass


_VarsDumper.add_representer(_Unsafe, lambda dumper, data: dumper.represent_scalar("!unsafe", str(data)))


_RESOLVER = pyyaml.resolver.Resolver()  # the resolver Ansible's own YAML loader uses


def _unsafe(value: Any) -> Any:
    """``value`` with every string (recursively; mapping keys excepted) marked unsafe.

    ansible-core >= 2.19 re-resolves the implicit type of an ``!unsafe`` scalar as if it were
    plain (``!unsafe 'yes'`` loads as True, ``'1.10'`` as 1.1, ``''`` as None). A string that a
    plain scalar would not read as a string is therefore written as an ordinary quoted string:
    such a string ('yes', '1.10', '', '2024-01-01', ...) cannot hold template syntax, so it needs
    no tag. Anything with a brace is always tagged, whatever that does to its type.
    """
    if isinstance(value, str):
        if "{" not in value and _RESOLVER.resolve(pyyaml.ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str":
            return str(value)
        return _Unsafe(value)
    if isinstance(value, dict):
        return {key: _unsafe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unsafe(item) for item in value]
    return value


def unsafe_vars_yaml(variables: dict[str, Any]) -> str:
    """The ``-e @file`` document for ``variables``: YAML whose strings are all ``!unsafe``, so
    Ansible never evaluates ``{{ ... }}`` / ``{% ... %}`` from parameter values (a param is data,
    never a template: a lookup in one would run commands on the engine's host)."""
    return pyyaml.dump(_unsafe(variables), Dumper=_VarsDumper, default_flow_style=False, allow_unicode=True,
                       sort_keys=False, width=float("inf"))


def parse_recap(stdout: str) -> dict[str, int]:
    """Sum the PLAY RECAP counters over hosts."""
    stats: dict[str, int] = {}
    in_recap = False
    for line in stdout.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap, stats = True, {}
            continue
        if in_recap:
            match = _RECAP.match(line.strip())
            if not match:
                continue
            for pair in match.group(2).split():
                key, value = pair.split("=")
                stats[key] = stats.get(key, 0) + int(value)
    return stats


class AnsibleExecutor:
    type = "ansible"
    input_schema: dict[str, Any] = {
        "type": "object",
        "required": ["playbook"],
        "properties": {
            "playbook": {"type": ["array", "string"]},
            "vars": {"type": "object"},
            "check": {"type": "boolean"},
            "env": {"type": "object"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
        },
        "additionalProperties": False,
    }

    def __init__(self, *, path: str | None = None, default_timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.default_timeout = default_timeout

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown:
            raise invalid(f"ansible: unknown input(s) {', '.join(sorted(unknown))}")
        env_in = spec.get("env") or {}
        if not isinstance(env_in, dict):
            raise invalid("ansible: `env` must be a mapping of names to values")
        variables = spec.get("vars") or {}
        if not isinstance(variables, dict):
            raise invalid("ansible: `vars` must be a mapping")
        check = spec.get("check", False)
        if not isinstance(check, bool):
            raise invalid("ansible: `check` must be true or false")
        timeout = timeout_of(spec.get("timeout"), self.default_timeout)

        root = ensure_workdir(ctx)
        home = root / ".ansible"
        env = base_env(ctx, {
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(home / "tmp"),
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "false",
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "PYTHONUNBUFFERED": "1",
            **env_in,
        })
        explicit_path = env_in.get("PATH") if "PATH" in env_in else self.path
        if explicit_path is not None:
            env["PATH"] = str(explicit_path)
            program = find_tool("ansible-playbook", env["PATH"])
        else:
            program = find_tool("ansible-playbook", env["PATH"], [os.path.dirname(sys.executable)])
        if program is None:
            await ctx.log("ansible-playbook not found")
            raise tool_missing("ansible-playbook", "pip install ansible-core")

        playbook = spec.get("playbook")
        step_dir = root / f".innominatus-{re.sub(r'[^A-Za-z0-9_.-]', '_', ctx.step_id)}"
        step_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(playbook, list):
            if not playbook or not all(isinstance(p, dict) for p in playbook):
                raise invalid("ansible: an inline `playbook` must be a non-empty list of plays (mappings)")
            yaml = YAML(typ="safe", pure=True)
            yaml.default_flow_style = False
            buffer = StringIO()
            yaml.dump(playbook, buffer)
            playbook_file = step_dir / "playbook.yml"
            playbook_file.write_text(buffer.getvalue(), encoding="utf-8")
        elif isinstance(playbook, str) and playbook:
            playbook_file = Path(playbook) if os.path.isabs(playbook) else inside(root, playbook, "playbook")
            if not playbook_file.is_file():
                raise invalid(f"ansible: playbook {playbook!r} does not exist")
        else:
            raise invalid("ansible: `playbook` must be a list of plays or a path")

        argv = [program, "-c", "local", "-i", "localhost,"]
        if variables:
            document = unsafe_vars_yaml(variables)
            vars_file = step_dir / "vars.yml"
            fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(document)
            argv += ["-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        argv.append(str(playbook_file))
        await ctx.log(f"running ansible-playbook on {playbook_file.name}" + (" (check mode)" if check else ""))
        result = await run_process(ctx, argv, env=env, cwd=root, timeout=timeout,
                                   redact=Redactor(secret_values(env_in) + secret_values(
                                       {k: v for k, v in variables.items() if isinstance(v, str)})),
                                   label="ansible-playbook")
        await ctx.log(f"ansible-playbook exited with {result.exit_code}")
        if result.exit_code != 0:
            raise exit_failure("ansible-playbook", result)
        stats = parse_recap(result.stdout)
        return {**result.outputs(), "changed": stats.get("changed", 0) > 0, "stats": stats}
