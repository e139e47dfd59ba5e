"""``shell``: run a program, or a fixed script under ``/bin/sh -c``.

::

    - id: migrate
      type: shell
      with:
        command: ["./manage.py", "migrate", "--database", "${params.db}"]   # argv: no shell at all
        env: {DJANGO_SETTINGS_MODULE: app.settings}
        cwd: app            # relative to the step's work directory
        timeout: 300        # seconds

    - id: report
      type: shell
      with:
        script: 'echo "deploying $APP to $ENVIRONMENT"'   # fixed text, run by /bin/sh -c
        env: {APP: "${params.app}", ENVIRONMENT: "${params.env}"}   # parameters go in as variables

Parameters are never spliced into a shell string. With ``command`` the argv list is executed
directly, so an argument like ``"; rm -rf /"`` reaches the program literally. With ``script``
the text must be fixed in the workflow definition and parameters reach it ONLY as environment
variables (``env``), referenced as ``"$NAME"`` (quoted). The executor sees ``with:`` after the
scheduler resolved placeholders, so it cannot tell a spliced value from literal text: the
definition loader should reject ``${...}`` inside ``script`` (see :func:`script_has_placeholder`),
and authors must never write one there.

Outputs: ``{exit_code, stdout, stderr}`` (the last 64 KiB of each). A non-zero exit raises
StepFailed(kind="exit_code", retryable=True) carrying the same outputs as ``.outputs``;
``timeout`` -> kind "timeout" (retryable), ``ctx.cancelled`` -> kind "cancelled"; in both the
whole process group is killed.
"""

from __future__ import annotations

from typing import Any

from innominatus.engine.model import StepContext

from ._process import Redactor, base_env, exit_failure, invalid, resolve_cwd, run_process, secret_values, timeout_of

SHELL = "/bin/sh"
DEFAULT_TIMEOUT = 3600.0


def script_has_placeholder(script: str) -> bool:
    """True when a ``script`` text holds a ``${...}`` the engine would resolve (``$$`` is the
    engine's escape for a literal ``$``, so ``$${HOME}`` reaches the shell as ``${HOME}``).
    For the definition loader, which must refuse such a script: values belong in ``env``."""
    i = 0
    while (i := script.find("$", i)) != -1:
        if script.startswith("$$", i):
            i += 2
        elif script.startswith("${", i):
            return True
        else:
            i += 1
    return False


class ShellExecutor:
    type = "shell"
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "script": {"type": "string", "minLength": 1},
            "env": {"type": "object"},
            "cwd": {"type": "string"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
        },
        "oneOf": [{"required": ["command"]}, {"required": ["script"]}],
        "additionalProperties": False,
    }

    def __init__(self, default_timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.default_timeout = default_timeout

    async def run(self, ctx: StepContext) -> dict[str, Any]:
        spec = ctx.inputs or {}
        unknown = set(spec) - set(self.input_schema["properties"])
        if unknown:
            raise invalid(f"shell: unknown input(s) {', '.join(sorted(unknown))}")
        command, script = spec.get("command"), spec.get("script")
        if (command is None) == (script is None):
            raise invalid("shell: give exactly one of `command` (argv list) or `script` (text for /bin/sh -c)")
        if command is not None:
            if not isinstance(command, list) or not command or not all(isinstance(a, (str, int, float)) for a in command):
                raise invalid("shell: `command` must be a non-empty list of strings (argv; no shell is used)")
            argv = [str(a) for a in command]
            if any("\0" in a for a in argv):
                raise invalid("shell: `command` contains a NUL byte")
            label = f"shell {argv[0]}"
            await ctx.log(f"running {argv[0]} with {len(argv) - 1} argument(s), no shell")
        else:
            if not isinstance(script, str) or not script.strip():
                raise invalid("shell: `script` must be non-empty text")
            argv = [SHELL, "-c", script]
            label = "shell script"
            await ctx.log(f"running a {len(script)}-byte script with {SHELL} -c")
        env_in = spec.get("env") or {}
        if not isinstance(env_in, dict):
            raise invalid("shell: `env` must be a mapping of names to values")
        env = base_env(ctx, env_in)
        cwd = resolve_cwd(ctx, spec.get("cwd"))
        timeout = timeout_of(spec.get("timeout"), self.default_timeout)
        result = await run_process(
            ctx, argv, env=env, cwd=cwd, timeout=timeout, redact=Redactor(secret_values(env_in)), label=label
        )
        await ctx.log(f"{label} exited with {result.exit_code}")
        if result.exit_code != 0:
            raise exit_failure(label, result)
        return result.outputs()
