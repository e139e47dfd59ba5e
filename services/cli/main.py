"""The `innominatus` command line: a thin client of the REST gateway.

Every command that talks to the platform goes through :mod:`innominatus.cli.client`
(httpx against the gateway); `validate` runs offline; `up`, `serve` and `migrate` come
from :mod:`innominatus.cli.platform`. Exit codes are part of the interface (see EPILOG).
"""

from __future__ import annotations

import argparse
import difflib
import getpass
import os
import sys
import time
import uuid
from typing import Any

from innominatus.cli import credentials, output
from innominatus.cli.client import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ApiError,
    Client,
    segment,
)
from innominatus.cli.output import enum, print_fields, print_table, short, when

PROG = "innominatus"

EPILOG = """\
exit codes:
  0  success
  1  the operation failed: validation errors, a failed or cancelled run,
     a broken audit chain, an unhealthy or drifted resource (resources check),
     a rejected request (400/409/429)
  2  usage error (bad arguments)
  3  not logged in, or authentication failed (HTTP 401)
  4  permission denied (HTTP 403, including policy denials)
  5  not found (HTTP 404)
  6  server unreachable, or a server error (HTTP 5xx)
  7  timed out waiting (deploy --wait --timeout)

environment:
  INNOMINATUS_SERVER      gateway URL (overrides the stored session's server)
  INNOMINATUS_TOKEN       access token or `inn_` API key, sent as a Bearer token
  INNOMINATUS_CONFIG_DIR  where credentials.json is kept (default ~/.config/innominatus)

See docs/cli.md for every command with examples.
"""

TERMINAL_RUN_STATES = {"RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"}
PLATFORM_COMMANDS = {
    "up": "run the whole platform locally (all services, gateway)",
    "serve": "run one service",
    "migrate": "apply database migrations",
}
ROLES = {
    "admin": "ROLE_ADMIN",
    "platform-engineer": "ROLE_PLATFORM_ENGINEER",
    "developer": "ROLE_DEVELOPER",
    "viewer": "ROLE_VIEWER",
}
ENV_TYPES = {
    "development": "ENVIRONMENT_TYPE_DEVELOPMENT",
    "staging": "ENVIRONMENT_TYPE_STAGING",
    "production": "ENVIRONMENT_TYPE_PRODUCTION",
}
OUTCOMES = {
    "succeeded": "AUDIT_OUTCOME_SUCCEEDED",
    "allowed": "AUDIT_OUTCOME_SUCCEEDED",
    "denied": "AUDIT_OUTCOME_DENIED",
    "failed": "AUDIT_OUTCOME_FAILED",
}


# -- entry point ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args, extra = parser.parse_known_args(argv)
        func = getattr(args, "func", None)
        if extra and not getattr(func, "accepts_any_arguments", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version, usage errors
        return _exit_code(exc.code)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result = func(args)
    except ApiError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        if exc.status == 401:
            print("hint: run `innominatus login` (or set INNOMINATUS_TOKEN)", file=sys.stderr)
        return exc.exit_code
    except credentials.CredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `innominatus audit export | head`: stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_FAILED
    return _exit_code(result)


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILED


# -- parser -----------------------------------------------------------------------------


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="innominatus: Score-native platform orchestrator (CLI for the REST gateway).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_output(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _wire_platform(sub, argv or [])

    # login / logout / whoami
    p = _leaf(sub, "login", "log in and store a session token")
    p.add_argument("--server", help="gateway URL (default: INNOMINATUS_SERVER, ./.innominatus/endpoints.json, "
                   f"else {credentials.DEFAULT_SERVER})")
    p.add_argument("--username", "-u", help="user name (password read from stdin or prompted)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--api-key", metavar="KEY", help="log in with an API key instead (`-` reads it from stdin)")
    p.set_defaults(func=cmd_login)

    p = _leaf(sub, "logout", "forget the stored session", fmt=False)
    p.set_defaults(func=cmd_logout)

    p = _leaf(sub, "whoami", "show the user of the current session")
    p.set_defaults(func=cmd_whoami)

    # validate (offline)
    p = _leaf(sub, "validate", "validate Score files offline (no server needed); files named together "
              "form one application, so each workload name may appear once")
    p.add_argument("files", nargs="+", metavar="FILE", help="Score files (`-` for stdin)")
    p.set_defaults(func=cmd_validate)

    # render (offline)
    p = _leaf(sub, "render", "print a Score workload with every placeholder resolved (offline; default -o yaml)")
    p.add_argument("-f", "--file", required=True, help="the Score file (`-` for stdin)")
    p.add_argument("--outputs", metavar="FILE",
                   help="YAML or JSON mapping each resource name to its outputs, e.g. `db: {host: db.internal}`")
    p.set_defaults(func=cmd_render)

    # deploy
    p = _leaf(sub, "deploy", "deploy a Score workload to an environment")
    p.add_argument("-f", "--file", required=True, help="the Score file (`-` for stdin)")
    p.add_argument("--env", "-e", required=True, help="target environment, e.g. dev")
    p.add_argument("--app", "-a", help="application name (default: the workload's metadata.name)")
    p.add_argument("--team", "-t", metavar="TEAM",
                   help="team that owns a new application (`teams/NAME` or `NAME`; default: your only team)")
    p.add_argument("--wait", "-w", action="store_true", help="follow the run until it finishes")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="give up waiting after this long (default 600; exit code 7)")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_deploy)

    # apps
    apps = _group(sub, "apps", "applications", aliases=["applications"])
    p = _leaf(apps, "list", "list applications")
    p.set_defaults(func=cmd_apps_list)
    p = _leaf(apps, "get", "show an application and its deployments")
    p.add_argument("name", metavar="NAME", help="application name (`applications/NAME` or `NAME`)")
    p.set_defaults(func=cmd_apps_get)
    p = _leaf(apps, "delete", "remove an application from an environment (deprovision, then remove from GitOps)")
    p.add_argument("name", metavar="NAME", help="application name (`applications/NAME` or `NAME`)")
    p.add_argument("--env", "-e", required=True, help="the environment to remove it from")
    p.add_argument("--wait", "-w", action="store_true", help="follow the run until it finishes")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="give up waiting after this long (default 600; exit code 7)")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_apps_delete)

    # workloads (stored versions of Score files)
    workloads = _group(sub, "workloads", "stored workload versions and their differences")
    p = _leaf(workloads, "list", "list workloads with their latest version")
    p.set_defaults(func=cmd_workloads_list)
    p = _leaf(workloads, "versions", "list the stored versions of a workload, newest first")
    p.add_argument("name", metavar="NAME", help="workload name (`workloads/NAME` or `NAME`)")
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    p.set_defaults(func=cmd_workloads_versions)
    p = _leaf(workloads, "get", "print the Score file of one version (-o yaml: the source only)")
    p.add_argument("name", metavar="NAME", help="workload name (`workloads/NAME` or `NAME`)")
    p.add_argument("--version", "-v", type=_positive_int, help="version number (default: the latest)")
    p.set_defaults(func=cmd_workloads_get)
    p = _leaf(workloads, "diff", "show what changed between two versions of a workload")
    p.add_argument("name", metavar="NAME", help="workload name (`workloads/NAME` or `NAME`)")
    p.add_argument("base", metavar="A", type=_positive_int, help="version to compare from")
    p.add_argument("target", metavar="B", type=_positive_int, help="version to compare to")
    p.add_argument("--unified", "-u", action="store_true", help="print `diff -u` of the sources instead of a table")
    p.set_defaults(func=cmd_workloads_diff)

    # deployments (deployment sets: list, get, diff, rollback)
    deployments = _group(sub, "deployments", "deployments and their deployment sets: list, get, diff, rollback")
    p = _leaf(deployments, "list", "list deployments, newest first")
    p.add_argument("--app", "-a", help="only deployments of this application")
    p.add_argument("--env", "-e", help="only deployments to this environment")
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    p.set_defaults(func=cmd_deployments_list)
    p = _leaf(deployments, "get", "show a deployment and its deployment set")
    p.add_argument("name", metavar="NAME", help="deployment name (`deployments/ID` or `ID`)")
    p.set_defaults(func=cmd_deployments_get)
    p = _leaf(deployments, "diff", "show what changed between the deployment sets of two deployments")
    p.add_argument("base", metavar="A", help="deployment to compare from")
    p.add_argument("target", metavar="B", help="deployment to compare to")
    p.add_argument("--specs-only", action="store_true", help="compare workloads and resources, not the artifacts")
    p.set_defaults(func=cmd_deployments_diff)
    p = _leaf(deployments, "rollback", "deploy an earlier deployment's set again (a new deployment)")
    p.add_argument("name", metavar="TO", help="the earlier deployment (`deployments/ID` or `ID`)")
    p.add_argument("--reason", "-r", default="", help="why (recorded in the GitOps commit)")
    p.add_argument("--wait", "-w", action="store_true", help="follow the run until it finishes")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="give up waiting after this long (default 600; exit code 7)")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_deployments_rollback)

    # envs (environments and their approval settings)
    envs = _group(sub, "envs", "environments: type and who approves deployments to them", aliases=["environments"])
    p = _leaf(envs, "list", "list environments")
    p.set_defaults(func=cmd_envs_list)
    p = _leaf(envs, "get", "show an environment and its approval settings")
    p.add_argument("name", metavar="NAME", help="environment (`environments/NAME` or `NAME`)")
    p.set_defaults(func=cmd_envs_get)
    p = _leaf(envs, "create", "create an environment (admin or platform engineer)")
    p.add_argument("name", metavar="NAME", help="environment name, e.g. production")
    p.add_argument("--type", "-t", required=True, type=_env_type, help="development, staging or production")
    _add_approval_flags(p, "default: production environments require approval by role:platform-engineer and "
                           "role:admin; the others none")
    p.set_defaults(func=cmd_envs_create)
    p = _leaf(envs, "update", "change who approves deployments to an environment (the next deployment's gate)")
    p.add_argument("name", metavar="NAME", help="environment (`environments/NAME` or `NAME`)")
    _add_approval_flags(p, "unchanged unless given")
    p.add_argument("--clear-approvers", action="store_true",
                   help="remove every approver (only with --no-require-approval)")
    p.add_argument("--etag", help="refuse the change if the environment changed since this etag (from envs get)")
    p.set_defaults(func=cmd_envs_update)

    # runs
    runs = _group(sub, "runs", "workflow runs")
    p = _leaf(runs, "list", "list runs, newest first")
    p.add_argument("--app", "-a", help="only runs of this application")
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    p.set_defaults(func=cmd_runs_list)
    p = _leaf(runs, "get", "show a run and its steps")
    p.add_argument("name", metavar="NAME", help="run name (`runs/ID` or `ID`)")
    p.set_defaults(func=cmd_runs_get)
    for verb, help_text in (("cancel", "cancel a pending or running run"),
                            ("retry", "run a failed or cancelled run again from its failed steps"),
                            ("pause", "start no new step of a run until it is resumed"),
                            ("resume", "let a paused run go on")):
        p = _leaf(runs, verb, help_text)
        p.add_argument("name", metavar="NAME", help="run name (`runs/ID` or `ID`)")
        p.set_defaults(func=cmd_runs_operation, verb=verb)
    for verb, help_text in (("approve", "approve a waiting approval gate"), ("reject", "reject a waiting approval gate")):
        p = _leaf(runs, verb, help_text)
        p.add_argument("name", metavar="NAME", help="run name (`runs/ID` or `ID`)")
        p.add_argument("step", metavar="STEP", help="the gate's step id")
        p.add_argument("--reason", "-r", default="", help="why (recorded with the decision and in the audit chain)")
        p.set_defaults(func=cmd_runs_decide, verb=verb)
    p = _leaf(runs, "logs", "print a run's events: time, kind, step, message", fmt=False)
    p.add_argument("name", metavar="NAME", help="run name (`runs/ID` or `ID`)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="follow the run until it ends; exit 0 if it succeeded, 1 if it failed or was cancelled")
    p.set_defaults(func=cmd_runs_logs)

    # goldenpaths
    paths = _group(sub, "goldenpaths", "the golden-path catalog: versioned workflows with typed params",
                   aliases=["golden-paths"])
    p = _leaf(paths, "list", "list golden paths (and catalog files that do not load)")
    p.add_argument("--tag", help="only paths with this tag")
    p.set_defaults(func=cmd_goldenpaths_list)
    p = _leaf(paths, "show", "show a golden path: description, params, steps, versions")
    p.add_argument("name", metavar="NAME", help="golden path (`goldenPaths/NAME` or `NAME`)")
    p.add_argument("--version", "-v", help="version (default: the latest)")
    p.set_defaults(func=cmd_goldenpaths_show)
    p = _leaf(paths, "run", "run a golden path")
    p.add_argument("name", metavar="NAME", help="golden path (`goldenPaths/NAME` or `NAME`)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a param (repeatable); values are read as YAML scalars when the param is not text")
    p.add_argument("--version", "-v", help="version (default: the latest)")
    p.add_argument("--app", "-a", help="application the run belongs to (default: the `app` param)")
    p.add_argument("--env", "-e", help="environment of the run (default: the `environment` param)")
    p.add_argument("--wait", "-w", action="store_true", help="follow the run until it finishes")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="give up waiting after this long (default 600; exit code 7)")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_goldenpaths_run)

    # users
    users = _group(sub, "users", "users")
    p = _leaf(users, "list", "list users")
    p.set_defaults(func=cmd_users_list)
    p = _leaf(users, "get", "show a user")
    p.add_argument("name", metavar="USERNAME", help="user name (`users/NAME` or `NAME`)")
    p.set_defaults(func=cmd_users_get)
    p = _leaf(users, "create", "create a user")
    p.add_argument("--username", "-u", required=True)
    p.add_argument("--role", "-r", action="append", type=_role, default=[], dest="roles",
                   help="admin, platform-engineer, developer or viewer (repeatable)")
    p.add_argument("--display-name")
    p.add_argument("--password-stdin", action="store_true", help="read the initial password from stdin")
    p.set_defaults(func=cmd_users_create)
    etag_help = "refuse the change if the user changed since this etag (from users get -o json)"
    p = _leaf(users, "disable", "disable a user: their password login and API keys stop working at once; "
                                "access tokens already issued last until they expire (admin)")
    p.add_argument("name", metavar="USERNAME", help="user name (`users/NAME` or `NAME`)")
    p.add_argument("--etag", help=etag_help)
    p.set_defaults(func=cmd_users_disable)
    p = _leaf(users, "enable", "enable a disabled user again (admin)")
    p.add_argument("name", metavar="USERNAME", help="user name (`users/NAME` or `NAME`)")
    p.add_argument("--etag", help=etag_help)
    p.set_defaults(func=cmd_users_enable)
    p = _leaf(users, "set-roles", "replace a user's roles; they apply from the user's next login (admin)")
    p.add_argument("name", metavar="USERNAME", help="user name (`users/NAME` or `NAME`)")
    p.add_argument("roles", metavar="ROLE", nargs="+", type=_role,
                   help="admin, platform-engineer, developer or viewer (one or more)")
    p.add_argument("--etag", help=etag_help)
    p.set_defaults(func=cmd_users_set_roles)
    p = _leaf(users, "set-password", "change your own password (asks for the current one), or as an admin reset "
                                     "another user's; tokens already issued stay valid until they expire")
    p.add_argument("name", metavar="USERNAME", nargs="?",
                   help="whose password (`users/NAME` or `NAME`; default: your own)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the passwords from stdin instead of prompting: for your own, the current "
                        "password on the first line and the new one on the second; for another user's, "
                        "the new one on the first line")
    p.set_defaults(func=cmd_users_set_password)

    # teams
    teams = _group(sub, "teams", "teams")
    p = _leaf(teams, "list", "list teams")
    p.set_defaults(func=cmd_teams_list)
    p = _leaf(teams, "get", "show a team")
    p.add_argument("name", metavar="NAME", help="team name (`teams/NAME` or `NAME`)")
    p.set_defaults(func=cmd_teams_get)
    p = _leaf(teams, "create", "create a team")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--display-name")
    p.set_defaults(func=cmd_teams_create)
    p = _leaf(teams, "add-member", "add a user to a team")
    p.add_argument("team", metavar="TEAM")
    p.add_argument("user", metavar="USER")
    p.set_defaults(func=cmd_teams_add_member)
    p = _leaf(teams, "remove-member", "remove a user from a team (from the user's next login; "
                                      "removing a non-member changes nothing)")
    p.add_argument("team", metavar="TEAM")
    p.add_argument("user", metavar="USER")
    p.set_defaults(func=cmd_teams_remove_member)

    # apikeys
    keys = _group(sub, "apikeys", "API keys of the calling user", aliases=["api-keys"])
    p = _leaf(keys, "list", "list API keys")
    p.set_defaults(func=cmd_apikeys_list)
    p = _leaf(keys, "create", "create an API key (the secret is shown once)")
    p.add_argument("--name", help="a label for the key")
    p.add_argument("--ttl-days", type=_positive_int, help="lifetime in days (server default: 90)")
    p.set_defaults(func=cmd_apikeys_create)
    p = _leaf(keys, "revoke", "revoke an API key")
    p.add_argument("id", metavar="ID", help="key id (`apikeys/ID` or `ID`)")
    p.set_defaults(func=cmd_apikeys_revoke)

    # provisioners and resource definitions (docs/provisioners.md)
    provs = _group(sub, "provisioners", "provisioners resource definitions can use")
    p = _leaf(provs, "list", "list the built-in drivers and the provisioner kinds")
    p.set_defaults(func=cmd_provisioners_list)
    res = _group(sub, "resources", "resources and how they are provisioned")
    defs = _group(res, "definitions", "resource definitions: which provisioner makes which resource")
    p = _leaf(defs, "list", "list the definitions in effect (built-in defaults included)")
    p.add_argument("--type", help="only definitions of this resource type")
    p.set_defaults(func=cmd_resource_definitions, verb="list")
    p = _leaf(defs, "get", "show a resource definition")
    p.add_argument("name", metavar="NAME", help="definition (`resourceDefinitions/NAME` or `NAME`)")
    p.set_defaults(func=cmd_resource_definitions, verb="get")
    p = _leaf(defs, "create", "create a resource definition from a YAML or JSON file")
    p.add_argument("-f", "--file", required=True, help="the definition (`-` for stdin)")
    p.set_defaults(func=cmd_resource_definitions, verb="create")
    p = _leaf(defs, "delete", "delete a resource definition")
    p.add_argument("name", metavar="NAME", help="definition (`resourceDefinitions/NAME` or `NAME`)")
    p.set_defaults(func=cmd_resource_definitions, verb="delete")
    # resource instances (docs/cli.md#resources)
    p = _leaf(res, "list", "list resource instances")
    p.add_argument("--app", help="only resources this application claims (its own and shared ones)")
    p.add_argument("--env", help="only resources of this environment")
    p.add_argument("--limit", type=_positive_int, help="at most this many")
    p.set_defaults(func=cmd_resources_list)
    p = _leaf(res, "get", "show a resource instance; secret outputs as references unless --reveal")
    p.add_argument("name", metavar="NAME", help="resource (`resources/ID` or `ID`)")
    p.add_argument("--reveal", action="store_true",
                   help="print the secret outputs in plaintext (needs resources.reveal; audited)")
    p.set_defaults(func=cmd_resources_get)
    p = _leaf(res, "check", "run the health check and drift detection now (exit 1 when unhealthy or drifted)")
    p.add_argument("name", metavar="NAME", help="resource (`resources/ID` or `ID`)")
    p.set_defaults(func=cmd_resources_check)
    p = _leaf(res, "history", "list a resource instance's state transitions, oldest first")
    p.add_argument("name", metavar="NAME", help="resource (`resources/ID` or `ID`)")
    p.set_defaults(func=cmd_resources_history)

    # audit
    audit = _group(sub, "audit", "the tamper-evident audit chain")
    p = _leaf(audit, "list", "list audit records")
    _add_audit_filters(p)
    p.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    p.set_defaults(func=cmd_audit_list)
    p = _leaf(audit, "verify", "recompute the hash chain (exit 1 when broken)")
    p.set_defaults(func=cmd_audit_verify)
    p = _leaf(audit, "export", "stream every matching record (default output: jsonl)")
    _add_audit_filters(p)
    p.set_defaults(func=cmd_audit_export)

    return parser


def _add_output(parser: argparse.ArgumentParser, top: bool = False) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        default=None if top else argparse.SUPPRESS,
        help="output format: table (default), json, yaml or jsonl",
    )


def _leaf(sub: Any, name: str, help_text: str, fmt: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
    if fmt:
        _add_output(p)
    return p


def _group(sub: Any, name: str, help_text: str, aliases: list[str] | None = None) -> Any:
    p = sub.add_parser(name, help=help_text, description=help_text, aliases=aliases or [])
    _add_output(p)
    inner = p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    p.set_defaults(func=lambda args, _p=p: (_p.print_help(sys.stderr), EXIT_USAGE)[1])
    return inner


def _add_audit_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", help="user name, or service:<name>")
    p.add_argument("--outcome", type=_outcome, help="succeeded (alias: allowed), denied or failed")
    p.add_argument("--service", help="the service that handled the mutation, e.g. specs")
    p.add_argument("--method", help="substring of the gRPC method name")
    p.add_argument("--since", metavar="RFC3339", help="only records at or after this time")
    p.add_argument("--until", metavar="RFC3339", help="only records before this time")


def _wire_platform(sub: Any, argv: list[str]) -> None:
    """`up`, `serve`, `migrate` live in innominatus.cli.platform (heavy imports): load it only
    when one of them is the command; otherwise register light placeholders for --help."""
    problem: BaseException | None = None
    if _first_command(argv) in PLATFORM_COMMANDS:
        try:
            from innominatus.cli import platform  # noqa: PLC0415

            platform.add_commands(sub)
        except Exception as exc:  # the module is missing or broken: say so when used
            problem = exc
        else:
            return
    for name, help_text in PLATFORM_COMMANDS.items():
        if name in sub.choices:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=_platform_unavailable(name, problem))


def _platform_unavailable(name: str, problem: BaseException | None) -> Any:
    def run(args: argparse.Namespace) -> int:
        why = f": {problem}" if problem else ""
        print(f"error: `innominatus {name}` is not available: innominatus.cli.platform could not be loaded{why}",
              file=sys.stderr)
        return EXIT_FAILED

    run.accepts_any_arguments = True  # type: ignore[attr-defined]
    return run


def _first_command(argv: list[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in ("-o", "--output"):
            skip = True
            continue
        if token.startswith("-"):
            continue
        return token
    return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("innominatus")
    except Exception:
        return "unknown"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _role(text: str) -> str:
    key = text.strip().lower().replace("_", "-")
    if key.startswith("role-"):
        key = key[len("role-"):]
    if key not in ROLES:
        near = difflib.get_close_matches(key, list(ROLES), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise argparse.ArgumentTypeError(f"unknown role {text!r} ({hint}choose from {', '.join(ROLES)})")
    return ROLES[key]


def _env_type(text: str) -> str:
    key = text.strip().lower()
    if key.startswith("environment_type_"):
        key = key[len("environment_type_"):]
    if key not in ENV_TYPES:
        raise argparse.ArgumentTypeError(f"unknown environment type {text!r} (choose from {', '.join(ENV_TYPES)})")
    return ENV_TYPES[key]


def _add_approval_flags(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--approver", action="append", default=None, dest="approvers", metavar="APPROVER",
                   help="who may approve deployments: role:<role>, user:<username> or team:<team> (repeatable; "
                        "replaces the list)")
    p.add_argument("--require-approval", action=argparse.BooleanOptionalAction, default=None,
                   help=f"whether deployments wait for an approval ({default})")


def _outcome(text: str) -> str:
    key = text.strip().lower()
    if key.startswith("audit_outcome_"):
        key = key[len("audit_outcome_"):]
    if key not in OUTCOMES:
        raise argparse.ArgumentTypeError(f"unknown outcome {text!r} (choose from {', '.join(OUTCOMES)})")
    return OUTCOMES[key]


# -- helpers ----------------------------------------------------------------------------


def _fmt(args: argparse.Namespace, default: str = "table") -> str:
    return getattr(args, "output", None) or default


def _client(auth: bool = True) -> Client:
    session = credentials.current_session()
    if auth:
        if not session.token:
            raise ApiError(
                "not logged in: run `innominatus login` or set INNOMINATUS_TOKEN",
                exit_code=EXIT_AUTH,
                reason="NOT_LOGGED_IN",
            )
        if session.expired():
            raise ApiError(
                f"the session expired at {session.expires_at}: run `innominatus login` again",
                exit_code=EXIT_AUTH,
                reason="TOKEN_EXPIRED",
            )
    return Client(session.server, session.token if auth else None)


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _read_secret(prompt: str, from_stdin: bool, what: str) -> str:
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin is not None and sys.stdin.isatty():
        try:
            secret = getpass.getpass(prompt)
        except EOFError:
            secret = ""
    else:
        raise ApiError(f"no {what}: pass --password-stdin (stdin is not a terminal)", exit_code=EXIT_USAGE)
    if not secret:
        raise ApiError(f"empty {what}", exit_code=EXIT_USAGE)
    return secret


def _roles(user: dict[str, Any]) -> list[str]:
    return [enum(r).lower().replace("_", "-") for r in user.get("roles") or []]


# -- login / logout / whoami ------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    server = credentials.normalize_server(args.server) if args.server else credentials.default_server()
    if args.api_key is not None:
        if args.username or args.password_stdin:
            raise ApiError("use either --api-key or --username/--password-stdin, not both", exit_code=EXIT_USAGE)
        key = sys.stdin.readline().strip() if args.api_key == "-" else args.api_key.strip()
        if not key:
            raise ApiError("empty API key", exit_code=EXIT_USAGE)
        body: dict[str, Any] = {"apiKey": key}
    else:
        username = args.username
        if not username:
            if sys.stdin is not None and sys.stdin.isatty() and not args.password_stdin:
                username = input("Username: ").strip()
            if not username:
                raise ApiError("pass --username (with --password-stdin) or --api-key", exit_code=EXIT_USAGE)
        password = _read_secret(f"Password for {username}: ", args.password_stdin, "password")
        body = {"username": username, "password": password}

    with Client(server) as client:
        response = client.post("/api/v1/auth:login", body)
    token = response.get("accessToken")
    if not isinstance(token, str) or not token:
        raise ApiError(f"the server at {server} answered the login without an access token")
    user = response.get("user") or {}
    username = user.get("username") or (short(user.get("name")) if user.get("name") else None)
    username = username or body.get("username")
    try:
        expires_in = int(response.get("expiresIn") or 0)
    except (TypeError, ValueError):
        expires_in = 0
    path = credentials.save(server, token, expires_in, username)
    stored = credentials.load() or {}
    if os.environ.get(credentials.TOKEN_ENV, "").strip():
        print("note: INNOMINATUS_TOKEN is set and takes precedence over the stored session", file=sys.stderr)
    result = {"server": server, "username": username, "expiresAt": stored.get("expires_at"), "user": user}
    fmt = _fmt(args)

    def table() -> None:
        expiry = f" (token expires {stored['expires_at']})" if stored.get("expires_at") else ""
        print(f"Logged in to {server} as {username or '?'}{expiry}")
        print(f"Session stored in {path}", file=sys.stderr)

    output.emit(result, fmt, table)
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    if credentials.delete():
        print("Logged out; stored session removed.")
    else:
        print("Not logged in; nothing to remove.")
    if os.environ.get(credentials.TOKEN_ENV, "").strip():
        print("note: INNOMINATUS_TOKEN is still set in the environment", file=sys.stderr)
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace) -> int:
    session = credentials.current_session()
    with _client() as client:
        response = client.get("/api/v1/users:me")
    user = response.get("user") or {}
    result = {"server": session.server, "user": user}

    def table() -> None:
        print_fields(
            [
                ("Username", user.get("username")),
                ("Display name", user.get("displayName")),
                ("Roles", _roles(user)),
                ("Teams", [short(t) for t in user.get("teams") or []]),
                ("Server", session.server),
                ("Token", {"env": "INNOMINATUS_TOKEN", "file": "stored session"}.get(session.source, "-")),
                ("Expires", session.expires_at if session.source == "file" else None),
            ]
        )

    output.emit(result, _fmt(args), table)
    return EXIT_OK


# -- validate ---------------------------------------------------------------------------


def _finding_dict(finding: Any) -> dict[str, Any]:
    def get(name: str, default: Any) -> Any:
        if isinstance(finding, dict):
            return finding.get(name, default)
        return getattr(finding, name, default)

    severity = get("severity", "error")
    severity = getattr(severity, "value", severity)
    severity = str(severity or "error").lower()
    if severity.startswith("severity_"):
        severity = severity[len("severity_"):]
    return {
        "code": str(get("code", "") or ""),
        "severity": severity,
        "message": str(get("message", "") or ""),
        "pointer": str(get("pointer", "") or ""),
        "line": int(get("line", 0) or 0),
        "column": int(get("column", 0) or 0),
        "hint": str(get("hint", "") or ""),
    }


def format_finding(path: str, finding: dict[str, Any]) -> str:
    where = path + ":"
    if finding.get("line"):
        where += f"{finding['line']}:"
        if finding.get("column"):
            where += f"{finding['column']}:"
    code = f" {finding['code']}" if finding.get("code") else ""
    text = f"{where} {finding['severity']}{code}: {finding['message']}"
    if finding.get("pointer") and not finding.get("line"):
        text += f" (at {finding['pointer']})"
    if finding.get("hint"):
        text += f" (hint: {finding['hint']})"
    return text


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        from innominatus.specs.validation import validate_score  # noqa: PLC0415
    except ImportError as exc:
        raise ApiError(
            f"offline validation is not available: innominatus.specs.validation cannot be imported ({exc})"
        ) from None

    files: list[dict[str, Any]] = []
    documents: list[tuple] = []  # (shown path, document, locate) of every file that parsed
    for path in args.files:
        shown = "<stdin>" if path == "-" else path
        workload = None
        try:
            text = _read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, UnicodeDecodeError):
                message = "not UTF-8 text"
            findings = [_finding_dict({"code": "FILE_UNREADABLE", "severity": "error",
                                       "message": f"cannot read file: {message}"})]
        else:
            try:
                result = validate_score(text, None if path == "-" else path)
            except Exception as exc:  # a validator bug must not look like a CLI crash
                findings = [_finding_dict({"code": "VALIDATOR_ERROR", "severity": "error",
                                           "message": f"the validator failed: {type(exc).__name__}: {exc}"})]
            else:
                findings = [_finding_dict(f) for f in getattr(result, "findings", []) or []]
                workload = getattr(result, "workload", None) or None
                if getattr(result, "document", None) is not None:
                    documents.append((shown, result.document, getattr(result, "locate", None)))
                if not getattr(result, "valid", True) and not any(f["severity"] == "error" for f in findings):
                    findings.append(_finding_dict({"code": "INVALID", "severity": "error",
                                                   "message": "the validator rejected the file"}))
        valid = not any(f["severity"] == "error" for f in findings)
        files.append({"path": shown, "valid": valid, "workload": workload, "findings": findings})

    # Files validated together form one application: a workload name may appear only once.
    if len(documents) > 1:
        from innominatus.specs.checks import validate_application  # noqa: PLC0415

        by_path = {entry["path"]: entry for entry in files}
        for shown_path, finding in validate_application(documents):
            entry = by_path[shown_path]
            entry["findings"].append(_finding_dict(finding))
            entry["valid"] = False
    all_valid = all(f["valid"] for f in files)
    fmt = _fmt(args)

    def table() -> None:
        for entry in files:
            for finding in entry["findings"]:
                print(format_finding(entry["path"], finding))
        errors = sum(1 for e in files for f in e["findings"] if f["severity"] == "error")
        warnings = sum(1 for e in files for f in e["findings"] if f["severity"] == "warning")
        noun = "file" if len(files) == 1 else "files"
        print(f"{len(files)} {noun} checked: {errors} error(s), {warnings} warning(s)", file=sys.stderr)

    output.emit({"valid": all_valid, "files": files}, fmt, table)
    return EXIT_OK if all_valid else EXIT_FAILED


def cmd_render(args: argparse.Namespace) -> int:
    from innominatus.specs.render import OutputsError, RenderError, load_outputs, position_of, render_workload  # noqa: PLC0415
    from innominatus.specs.validation import validate_score  # noqa: PLC0415

    shown = "<stdin>" if args.file == "-" else args.file
    try:
        text = _read_text(args.file)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        print(f"error: cannot read the Score file {shown}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    result = validate_score(text, None if args.file == "-" else args.file)
    if not result.valid or result.document is None:
        for finding in result.findings:
            print(format_finding(shown, _finding_dict(finding)), file=sys.stderr)
        print(f"{shown}: not rendered: fix the errors above (`innominatus validate {shown}`)", file=sys.stderr)
        return EXIT_FAILED
    outputs: dict[str, Any] = {}
    if args.outputs:
        try:
            outputs = load_outputs(_read_text(args.outputs))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            print(f"error: cannot read the outputs file {args.outputs}: {reason}", file=sys.stderr)
            return EXIT_FAILED
        except OutputsError as exc:
            print(f"error: the outputs file {args.outputs} is invalid: {exc}", file=sys.stderr)
            return EXIT_FAILED
    try:
        rendered = render_workload(result.document, outputs)
    except RenderError as exc:
        for problem in exc.problems:
            line, column = position_of(text, problem.pointer)
            print(format_finding(shown, {"severity": "error", "message": problem.message, "pointer": problem.pointer,
                                         "line": line, "column": column}), file=sys.stderr)
        print(f"{shown}: not rendered: {len(exc.problems)} placeholder problem(s)", file=sys.stderr)
        return EXIT_FAILED
    fmt = _fmt(args, default="yaml")
    output.emit(rendered, "yaml" if fmt == "table" else fmt)
    return EXIT_OK


# -- deploy -----------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    try:
        text = _read_text(args.file)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ApiError(f"cannot read {args.file}: {why}") from None
    body: dict[str, Any] = {"scoreYaml": text, "environment": args.env, "requestId": str(uuid.uuid4())}
    if args.app:
        body["application"] = args.app
    if args.team:
        body["team"] = args.team
    fmt = _fmt(args)
    with _client() as client:
        response = client.post("/api/v1/deployments", body)
        shown = "<stdin>" if args.file == "-" else args.file
        for finding in response.get("findings") or []:
            print(format_finding(shown, _finding_dict(finding)), file=sys.stderr)
        deployment = response.get("deployment") or {}
        run = response.get("run") or {}
        if args.wait:
            if fmt == "table":
                print(f"deployment {deployment.get('name', '?')} created; following {run.get('name', '?')}",
                      file=sys.stderr)
            run = wait_for_run(client, run, timeout=args.timeout, interval=args.interval)
            response["run"] = run

    def table() -> None:
        version = deployment.get("workloadVersion")
        print_fields(
            [
                ("Deployment", deployment.get("name")),
                ("Application", short(deployment.get("application"))),
                ("Team", short(response.get("team")) if response.get("team") else "(none)"),
                ("Environment", deployment.get("environment")),
                ("Workload", f"{deployment.get('workload', '-')}" + (f" (version {version})" if version else "")),
                ("Run", run.get("name")),
                ("State", enum(run.get("state"))),
            ]
        )
        _print_run_outcome(run, args.wait)

    output.emit(response, fmt, table)
    return _run_exit_code(run, args.wait)


def wait_for_run(
    client: Client, run: dict[str, Any], *, timeout: float, interval: float, clock: Any = time.monotonic
) -> dict[str, Any]:
    """Poll the run until it is terminal, printing step progress to stderr."""
    name = run.get("name")
    if not name:
        raise ApiError("the server did not say which run ships this deployment")
    path = f"/api/v1/runs/{segment(name, 'runs')}"
    deadline = clock() + timeout
    seen: dict[str, str] = {}
    last_state = None
    unreachable_noted = False
    current = run
    while True:
        state = current.get("state")
        if state != last_state:
            print(f"{name}: {enum(state)}", file=sys.stderr)
            last_state = state
        for step in current.get("steps") or []:
            key = step.get("name", "?")
            step_state = step.get("state", "")
            if seen.get(key) != step_state:
                seen[key] = step_state
                kind = f" ({step['type']})" if step.get("type") else ""
                note = f": {step['message']}" if step.get("message") and step_state != "STEP_STATE_RUNNING" else ""
                print(f"  step {key}{kind}: {enum(step_state)}{note}", file=sys.stderr)
        if state in TERMINAL_RUN_STATES:
            return current
        remaining = deadline - clock()
        if remaining <= 0:
            raise ApiError(
                f"timed out after {timeout:g}s waiting for {name} (last state: {enum(state)})",
                exit_code=EXIT_TIMEOUT,
                reason="WAIT_TIMEOUT",
            )
        time.sleep(min(interval, remaining))
        try:
            current = client.get(path).get("run") or current
        except ApiError as exc:
            if exc.exit_code != EXIT_UNAVAILABLE:
                raise
            if not unreachable_noted:
                print(f"warning: {exc.detail}; retrying", file=sys.stderr)
                unreachable_noted = True


def _print_steps(run: dict[str, Any]) -> None:
    steps = run.get("steps") or []
    if not steps:
        return
    print()
    print_table(
        steps,
        [
            ("STEP", lambda s: s.get("name")),
            ("TYPE", lambda s: s.get("type")),
            ("STATE", lambda s: enum(s.get("state"))),
            ("ATTEMPTS", lambda s: s.get("attempts")),
            ("STARTED", lambda s: when(s.get("startTime"))),
            ("ENDED", lambda s: when(s.get("endTime"))),
            ("MESSAGE", lambda s: s.get("message")),
        ],
    )


# -- apps -------------------------------------------------------------------------------

APP_COLUMNS: list[output.Column] = [
    ("NAME", lambda a: short(a.get("name"))),
    ("TEAM", lambda a: short(a.get("team"))),
    ("WORKLOADS", lambda a: a.get("workloads")),
    ("ENVIRONMENTS", lambda a: a.get("environments")),
    ("LAST DEPLOYED", lambda a: when((a.get("latestDeployment") or {}).get("createTime"))),
    ("UPDATED", lambda a: when(a.get("updateTime"))),
]

DEPLOYMENT_COLUMNS: list[output.Column] = [
    ("DEPLOYMENT", lambda d: short(d.get("name"))),
    ("ENV", lambda d: d.get("environment")),
    ("WORKLOAD", lambda d: d.get("workload")),
    ("VERSION", lambda d: d.get("workloadVersion")),
    ("RUN", lambda d: short(d.get("run"))),
    ("CREATOR", lambda d: d.get("creator")),
    ("CREATED", lambda d: when(d.get("createTime"))),
]


def cmd_apps_list(args: argparse.Namespace) -> int:
    with _client() as client:
        apps = client.paginate("/api/v1/applications", "applications")
    output.emit({"applications": apps}, _fmt(args),
                lambda: print_table(apps, APP_COLUMNS, empty="No applications found."))
    return EXIT_OK


def cmd_apps_delete(args: argparse.Namespace) -> int:
    fmt = _fmt(args)
    with _client() as client:
        response = client.request("DELETE", f"/api/v1/applications/{segment(args.name, 'applications')}",
                                  params={"environment": args.env, "requestId": str(uuid.uuid4())})
        run = response.get("run") or {}
        if args.wait:
            run = wait_for_run(client, run, timeout=args.timeout, interval=args.interval)
            response["run"] = run

    def table() -> None:
        print_fields([("Application", args.name), ("Environment", args.env), ("Run", run.get("name")),
                      ("State", enum(run.get("state")))])
        _print_run_outcome(run, args.wait)

    output.emit(response, fmt, table)
    return _run_exit_code(run, args.wait)


def cmd_apps_get(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(f"/api/v1/applications/{segment(args.name, 'applications')}")
    app = response.get("application") or {}
    deployments = response.get("deployments") or []

    def table() -> None:
        latest = app.get("latestDeployment") or {}
        print_fields(
            [
                ("Name", short(app.get("name"))),
                ("Team", short(app.get("team")) if app.get("team") else "(none)"),
                ("Workloads", app.get("workloads")),
                ("Environments", app.get("environments")),
                ("Latest deployment", latest.get("name")),
                ("Created", when(app.get("createTime"))),
                ("Updated", when(app.get("updateTime"))),
            ]
        )
        if deployments:
            print()
            print_table(deployments, DEPLOYMENT_COLUMNS)

    output.emit(response, _fmt(args), table)
    return EXIT_OK


# -- workloads --------------------------------------------------------------------------

WORKLOAD_COLUMNS: list[output.Column] = [
    ("NAME", lambda w: short(w.get("name"))),
    ("LATEST", lambda w: w.get("latestVersion")),
    ("HASH", lambda w: (w.get("latestContentHash") or "")[:12]),
    ("CREATED", lambda w: when(w.get("createTime"))),
    ("UPDATED", lambda w: when(w.get("updateTime"))),
]

WORKLOAD_VERSION_COLUMNS: list[output.Column] = [
    ("VERSION", lambda v: v.get("version")),
    ("HASH", lambda v: (v.get("contentHash") or "")[:12]),
    ("CREATOR", lambda v: v.get("creator")),
    ("CREATED", lambda v: when(v.get("createTime"))),
]


def _change_value(change: dict[str, Any], key: str) -> str:
    if key not in change:
        return ""
    import json  # noqa: PLC0415

    value = change[key]
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


CHANGE_COLUMNS: list[output.Column] = [
    ("OP", lambda c: str(c.get("op") or "-").removeprefix("OP_").lower()),
    ("POINTER", lambda c: c.get("pointer")),
    ("OLD", lambda c: _change_value(c, "oldValue")),
    ("NEW", lambda c: _change_value(c, "newValue")),
]


def _workload_path(name: str) -> str:
    return f"/api/v1/workloads/{segment(name, 'workloads')}"


def cmd_workloads_list(args: argparse.Namespace) -> int:
    with _client() as client:
        items = client.paginate("/api/v1/workloads", "workloads")
    output.emit({"workloads": items}, _fmt(args),
                lambda: print_table(items, WORKLOAD_COLUMNS, empty="No workloads found."))
    return EXIT_OK


def cmd_workloads_versions(args: argparse.Namespace) -> int:
    with _client() as client:
        items = client.paginate(f"{_workload_path(args.name)}/versions", "workloadVersions", limit=args.limit)
    output.emit({"workloadVersions": items}, _fmt(args),
                lambda: print_table(items, WORKLOAD_VERSION_COLUMNS, empty="No versions found."))
    return EXIT_OK


def cmd_workloads_get(args: argparse.Namespace) -> int:
    base = _workload_path(args.name)
    with _client() as client:
        version = args.version
        if version is None:
            latest = client.get(f"{base}/versions", {"pageSize": 1}).get("workloadVersions") or [{}]
            version = latest[0].get("version") or 1
        response = client.get(f"{base}/versions/{version}")
    item = response.get("workloadVersion") or {}
    source = item.get("scoreYaml") or ""
    fmt = _fmt(args)
    if fmt == "yaml":  # the Score file exactly as submitted, ready to redirect into a file
        sys.stdout.write(source if source.endswith("\n") or not source else source + "\n")
        return EXIT_OK

    def table() -> None:
        print_fields(
            [
                ("Name", item.get("name")),
                ("Version", item.get("version")),
                ("Hash", item.get("contentHash")),
                ("Creator", item.get("creator")),
                ("Created", when(item.get("createTime"))),
            ]
        )
        print()
        sys.stdout.write(source if source.endswith("\n") or not source else source + "\n")

    output.emit(response, fmt, table)
    return EXIT_OK


def cmd_workloads_diff(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(f"{_workload_path(args.name)}:diff", {"base": args.base, "target": args.target})
    changes = response.get("changes") or []
    fmt = _fmt(args)

    def table() -> None:
        if args.unified:
            sys.stdout.write(response.get("unifiedDiff") or "")
        else:
            print_table(changes, CHANGE_COLUMNS,
                        empty=f"No differences between versions {args.base} and {args.target}.")

    output.emit(response, fmt, table)
    return EXIT_OK


# -- deployments ------------------------------------------------------------------------

DEPLOYMENT_LIST_COLUMNS: list[output.Column] = [
    ("DEPLOYMENT", lambda d: short(d.get("name"))),
    ("APP", lambda d: short(d.get("application"))),
    ("ENV", lambda d: d.get("environment")),
    ("WORKLOAD", lambda d: d.get("workload")),
    ("VERSION", lambda d: d.get("workloadVersion")),
    ("SET", lambda d: (d.get("setHash") or "")[:12]),
    ("COMMIT", lambda d: (d.get("gitopsCommit") or "")[:12]),
    ("ROLLBACK OF", lambda d: short(d.get("rollbackOf"))),
    ("CREATOR", lambda d: d.get("creator")),
    ("CREATED", lambda d: when(d.get("createTime"))),
]


def _deployment_path(name: str) -> str:
    return f"/api/v1/deployments/{segment(name, 'deployments')}"


def cmd_deployments_list(args: argparse.Namespace) -> int:
    params = {"application": short(args.app) if args.app else None, "environment": args.env or None}
    with _client() as client:
        items = client.paginate("/api/v1/deployments", "deployments", params=params, limit=args.limit)
    output.emit({"deployments": items}, _fmt(args),
                lambda: print_table(items, DEPLOYMENT_LIST_COLUMNS, empty="No deployments found."))
    return EXIT_OK


def cmd_deployments_get(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(_deployment_path(args.name))
    deployment = response.get("deployment") or {}
    summary = response.get("deploymentSet") or {}

    def table() -> None:
        print_fields(
            [
                ("Deployment", deployment.get("name")),
                ("Application", short(deployment.get("application"))),
                ("Environment", deployment.get("environment")),
                ("Workload", f"{deployment.get('workload', '-')} (version {deployment.get('workloadVersion', '-')})"),
                ("Run", deployment.get("run")),
                ("Rollback of", deployment.get("rollbackOf")),
                ("Creator", deployment.get("creator")),
                ("Created", when(deployment.get("createTime"))),
                ("Set hash", summary.get("hash")),
                ("Parent", summary.get("parent")),
                ("Commit", summary.get("commit")),
                ("Workloads", summary.get("workloads")),
                ("Resources", summary.get("resources")),
                ("Artifacts", summary.get("artifacts")),
                ("Reason", summary.get("reason")),
            ]
        )

    output.emit(response, _fmt(args), table)
    return EXIT_OK


def cmd_deployments_diff(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"other": f"deployments/{segment(args.target, 'deployments')}"}
    if args.specs_only:
        params["specsOnly"] = "true"
    with _client() as client:
        response = client.get(f"{_deployment_path(args.base)}:diff", params)
    changes = response.get("changes") or []
    output.emit(response, _fmt(args), lambda: print_table(
        changes, CHANGE_COLUMNS, empty=f"No differences between {short(args.base)} and {short(args.target)}."))
    return EXIT_OK


def cmd_deployments_rollback(args: argparse.Namespace) -> int:
    body = {"reason": args.reason, "requestId": str(uuid.uuid4())}
    fmt = _fmt(args)
    with _client() as client:
        response = client.post(f"{_deployment_path(args.name)}:rollback", body)
        deployment = response.get("deployment") or {}
        run = response.get("run") or {}
        if args.wait:
            if fmt == "table":
                print(f"rollback {deployment.get('name', '?')} created; following {run.get('name', '?')}",
                      file=sys.stderr)
            run = wait_for_run(client, run, timeout=args.timeout, interval=args.interval)
            response["run"] = run
            if run.get("state") == "RUN_STATE_SUCCEEDED":
                response["deployment"] = deployment = client.get(
                    _deployment_path(deployment.get("name", ""))).get("deployment") or deployment

    def table() -> None:
        print_fields(
            [
                ("Deployment", deployment.get("name")),
                ("Rollback of", deployment.get("rollbackOf")),
                ("Application", short(deployment.get("application"))),
                ("Environment", deployment.get("environment")),
                ("Run", run.get("name")),
                ("State", enum(run.get("state"))),
                ("Set hash", deployment.get("setHash")),
                ("Commit", deployment.get("gitopsCommit")),
            ]
        )
        _print_run_outcome(run, args.wait)

    output.emit(response, fmt, table)
    return _run_exit_code(run, args.wait)


# -- envs -------------------------------------------------------------------------------

def _env_type_name(value: Any) -> str:
    """ENVIRONMENT_TYPE_STAGING -> staging (what `envs create --type` takes)."""
    return str(value or "-").removeprefix("ENVIRONMENT_TYPE_").lower()


ENV_COLUMNS: list[output.Column] = [
    ("NAME", lambda e: e.get("name")),
    ("TYPE", lambda e: _env_type_name(e.get("type"))),
    ("APPROVAL", lambda e: "required" if e.get("requiresApproval") else "-"),
    ("APPROVERS", lambda e: e.get("approvers") or []),
    ("CREATED", lambda e: when(e.get("createTime"))),
]


def _env_path(name: str) -> str:
    return f"/api/v1/environments/{segment(name, 'environments')}"


def _print_env(env: dict[str, Any]) -> None:
    print_fields(
        [
            ("Name", env.get("name")),
            ("Type", _env_type_name(env.get("type"))),
            ("Requires approval", "yes" if env.get("requiresApproval") else "no"),
            ("Approvers", env.get("approvers") or []),
            ("Created", when(env.get("createTime"))),
            ("Updated", when(env.get("updateTime"))),
            ("Etag", env.get("etag")),
        ]
    )


def cmd_envs_list(args: argparse.Namespace) -> int:
    with _client() as client:
        envs = client.get("/api/v1/environments").get("environments") or []
    output.emit({"environments": envs}, _fmt(args),
                lambda: print_table(envs, ENV_COLUMNS, empty="No environments found."))
    return EXIT_OK


def cmd_envs_get(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(_env_path(args.name))
    output.emit(response, _fmt(args), lambda: _print_env(response.get("environment") or {}))
    return EXIT_OK


def cmd_envs_create(args: argparse.Namespace) -> int:
    env: dict[str, Any] = {"name": segment(args.name, "environments"), "type": args.type}
    if args.require_approval is not None:
        env["requiresApproval"] = args.require_approval
    if args.approvers:
        env["approvers"] = args.approvers
    with _client() as client:
        response = client.post("/api/v1/environments", {"environment": env})
    output.emit(response, _fmt(args), lambda: _print_env(response.get("environment") or {}))
    return EXIT_OK


def cmd_envs_update(args: argparse.Namespace) -> int:
    if args.clear_approvers and args.approvers:
        raise ApiError("use either --approver or --clear-approvers, not both", exit_code=EXIT_USAGE)
    env: dict[str, Any] = {}
    mask: list[str] = []
    if args.require_approval is not None:
        env["requiresApproval"] = args.require_approval
        mask.append("requiresApproval")
    if args.approvers or args.clear_approvers:
        env["approvers"] = [] if args.clear_approvers else args.approvers
        mask.append("approvers")
    if not mask:
        raise ApiError("nothing to change: pass --approver, --clear-approvers or --[no-]require-approval",
                       exit_code=EXIT_USAGE)
    if args.etag:
        env["etag"] = args.etag
    with _client() as client:
        response = client.request("PATCH", _env_path(args.name), params={"updateMask": ",".join(mask)},
                                  json_body=env)
    output.emit(response, _fmt(args), lambda: _print_env(response.get("environment") or {}))
    return EXIT_OK


def _waiting_note(run: dict) -> str:
    return (f"{run.get('waitingFor')} (runs of concurrency group {run.get('concurrencyGroup', '')} "
            "run one at a time; this one starts when the runs ahead of it have ended)")


def _print_run_outcome(run: dict, waited: bool) -> None:
    """The end of a command that started a run: its steps when we waited for it, else how to follow it."""
    if not waited and run.get("waitingFor"):
        print(f"Waiting for {_waiting_note(run)}")
    if waited:
        _print_steps(run)
    if run.get("error"):
        print(f"Error: {run['error']}")
    if not waited:
        print(f"Follow it with: innominatus runs get {run.get('name', '')}", file=sys.stderr)


def _run_exit_code(run: dict, waited: bool) -> int:
    if not waited:
        return EXIT_OK
    return EXIT_OK if run.get("state") == "RUN_STATE_SUCCEEDED" else EXIT_FAILED

# -- runs -------------------------------------------------------------------------------

RUN_COLUMNS: list[output.Column] = [
    ("NAME", lambda r: short(r.get("name"))),
    ("WORKFLOW", lambda r: r.get("workflow")),
    ("APP", lambda r: short(r.get("application"))),
    ("ENV", lambda r: r.get("environment")),
    ("STATE", lambda r: enum(r.get("state"))),
    ("CREATED", lambda r: when(r.get("createTime"))),
]


def cmd_runs_list(args: argparse.Namespace) -> int:
    params = {"application": short(args.app) if args.app else None}
    with _client() as client:
        runs = client.paginate("/api/v1/runs", "runs", params, limit=args.limit)
    output.emit({"runs": runs}, _fmt(args), lambda: print_table(runs, RUN_COLUMNS, empty="No runs found."))
    return EXIT_OK


def cmd_runs_get(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(f"/api/v1/runs/{segment(args.name, 'runs')}")
    run = response.get("run") or {}

    def table() -> None:
        print_fields(
            [
                ("Name", run.get("name")),
                ("Workflow", run.get("workflow")),
                ("Application", short(run.get("application"))),
                ("Environment", run.get("environment")),
                ("State", enum(run.get("state"))),
                ("Creator", run.get("creator")),
                ("Created", when(run.get("createTime"))),
                ("Updated", when(run.get("updateTime"))),
                *([("Concurrency group", run["concurrencyGroup"])] if run.get("concurrencyGroup") else []),
                *([("Waiting for", _waiting_note(run))] if run.get("waitingFor") else []),
            ]
        )
        if run.get("error"):
            print(f"Error: {run['error']}")
        _print_steps(run)

    output.emit(response, _fmt(args), table)
    return EXIT_OK


def _run_summary(run: dict[str, Any]) -> None:
    paused = " (paused)" if run.get("paused") else ""
    print_fields([("Name", run.get("name")), ("State", enum(run.get("state")) + paused)])
    if run.get("error"):
        print(f"Error: {run['error']}")
    _print_steps(run)


def cmd_runs_operation(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.post(f"/api/v1/runs/{segment(args.name, 'runs')}:{args.verb}", {})
    output.emit(response, _fmt(args), lambda: _run_summary(response.get("run") or {}))
    return EXIT_OK


def cmd_runs_decide(args: argparse.Namespace) -> int:
    step = args.step.strip()
    if not step or "/" in step:
        raise ApiError(f"invalid step id {args.step!r}", exit_code=EXIT_USAGE)
    path = f"/api/v1/runs/{segment(args.name, 'runs')}/steps/{segment(step, 'steps')}:{args.verb}"
    with _client() as client:
        response = client.post(path, {"reason": args.reason})
    output.emit(response, _fmt(args), lambda: _run_summary(response.get("run") or {}))
    return EXIT_OK


def format_run_event(event: dict[str, Any]) -> str:
    """One event as `time  kind  step  message`."""
    return "  ".join([when(event.get("time")) or "-", event.get("kind") or "-", event.get("step") or "-",
                      event.get("message") or ""]).rstrip()


def cmd_runs_logs(args: argparse.Namespace) -> int:
    path = f"/api/v1/runs/{segment(args.name, 'runs')}:streamEvents"
    after, state, failures = 0, "", 0
    with _client() as client:
        while True:
            try:
                for event in client.stream_ndjson(path, {"afterSeq": after or None,
                                                         "snapshot": None if args.follow else "true"}):
                    print(format_run_event(event), flush=True)
                    after = max(after, int(event.get("seq") or 0))
                    state = event.get("state") or state
                    failures = 0
                break
            except ApiError as exc:
                # A dropped connection while following: reconnect after the last event seen.
                if not args.follow or exc.exit_code != EXIT_UNAVAILABLE or failures >= 5:
                    raise
                failures += 1
                time.sleep(min(2.0 * failures, 10.0))
    if not args.follow:
        return EXIT_OK
    if state == "RUN_STATE_SUCCEEDED":
        return EXIT_OK
    if state in TERMINAL_RUN_STATES:
        print(f"{short(args.name) if '/' in args.name else args.name}: {enum(state)}", file=sys.stderr)
    return EXIT_FAILED


# -- golden paths -----------------------------------------------------------------------

GOLDEN_PATH_COLUMNS: list[output.Column] = [
    ("NAME", lambda g: short(g.get("name"))),
    ("VERSION", lambda g: g.get("version")),
    ("OWNER", lambda g: g.get("owner")),
    ("TAGS", lambda g: ",".join(g.get("tags") or [])),
    ("DESCRIPTION", lambda g: (lambda d: d if len(d) <= 60 else d[:59] + "…")(g.get("description") or "")),
]


def _golden_path(name: str) -> str:
    return f"/api/v1/goldenPaths/{segment(name, 'goldenPaths')}"


def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ApiError(f"--param {item!r}: write KEY=VALUE", exit_code=EXIT_USAGE)
        params[key.strip()] = value
    return params


def cmd_goldenpaths_list(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get("/api/v1/goldenPaths", {"tag": args.tag or None})
    items = response.get("goldenPaths") or []
    invalid = response.get("invalid") or []

    def table() -> None:
        print_table(items, GOLDEN_PATH_COLUMNS, empty="No golden paths found.")
        for bad in invalid:
            for finding in bad.get("findings") or []:
                print(f"invalid: {finding}", file=sys.stderr)

    output.emit(response, _fmt(args), table)
    return EXIT_OK


def cmd_goldenpaths_show(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(_golden_path(args.name), {"version": args.version or None})
    path = response.get("goldenPath") or {}

    def table() -> None:
        print_fields([
            ("Name", short(path.get("name"))),
            ("Version", path.get("version")),
            ("Owner", path.get("owner")),
            ("Tags", ", ".join(path.get("tags") or [])),
            ("Ephemeral", "yes" if path.get("ephemeral") else "no"),
            ("Description", path.get("description")),
        ])
        print()
        print_table(path.get("params") or [], [
            ("PARAM", lambda p: p.get("name")),
            ("TYPE", lambda p: p.get("type")),
            ("REQUIRED", lambda p: "yes" if p.get("required") else ""),
            ("DEFAULT", lambda p: _change_value(p, "defaultValue")),
            ("DESCRIPTION", lambda p: p.get("description")),
        ], empty="No params.")
        print()
        print_table(path.get("steps") or [], [
            ("STEP", lambda s: s.get("id")),
            ("TYPE", lambda s: s.get("type") + (f" ({s['uses']})" if s.get("uses") else "")),
            ("AFTER", lambda s: ",".join(s.get("dependsOn") or [])),
            ("WHEN", lambda s: s.get("condition")),
        ])
        print()
        print_table(path.get("versions") or [], [
            ("VERSION", lambda v: v.get("version")),
            ("HASH", lambda v: (v.get("contentHash") or "")[:12]),
            ("ORIGIN", lambda v: v.get("origin")),
            ("PUBLISHED", lambda v: when(v.get("publishTime"))),
        ])
        for finding in (response.get("invalid") or {}).get("findings") or []:
            print(f"invalid: {finding}", file=sys.stderr)

    output.emit(response, _fmt(args), table)
    return EXIT_OK


def cmd_goldenpaths_run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"params": _parse_params(args.param), "requestId": str(uuid.uuid4())}
    if args.version:
        body["version"] = args.version
    if args.app:
        body["application"] = args.app
    if args.env:
        body["environment"] = args.env
    fmt = _fmt(args)
    with _client() as client:
        response = client.post(f"{_golden_path(args.name)}:run", body)
        run = response.get("run") or {}
        if args.wait:
            run = wait_for_run(client, run, timeout=args.timeout, interval=args.interval)
            response["run"] = run

    def table() -> None:
        print_fields([
            ("Golden path", f"{short(args.name) if '/' in args.name else args.name} {response.get('version', '')}".strip()),
            ("Run", run.get("name")),
            ("State", enum(run.get("state"))),
            ("Expires", when(response.get("expireTime")) if response.get("expireTime") else None),
        ])
        _print_run_outcome(run, args.wait)

    output.emit(response, fmt, table)
    return _run_exit_code(run, args.wait)


# -- users ------------------------------------------------------------------------------

USER_COLUMNS: list[output.Column] = [
    ("USERNAME", lambda u: u.get("username") or short(u.get("name"))),
    ("DISPLAY NAME", lambda u: u.get("displayName")),
    ("ROLES", _roles),
    ("TEAMS", lambda u: [short(t) for t in u.get("teams") or []]),
    ("DISABLED", lambda u: bool(u.get("disabled"))),
    ("CREATED", lambda u: when(u.get("createTime"))),
]


def cmd_users_list(args: argparse.Namespace) -> int:
    with _client() as client:
        users = client.paginate("/api/v1/users", "users")
    output.emit({"users": users}, _fmt(args), lambda: print_table(users, USER_COLUMNS, empty="No users found."))
    return EXIT_OK


def _print_user(user: dict[str, Any]) -> None:
    print_fields(
        [
            ("Username", user.get("username") or short(user.get("name"))),
            ("Display name", user.get("displayName")),
            ("Roles", _roles(user)),
            ("Teams", [short(t) for t in user.get("teams") or []]),
            ("Disabled", bool(user.get("disabled"))),
            ("Created", when(user.get("createTime"))),
            ("Updated", when(user.get("updateTime"))),
        ]
    )


def cmd_users_get(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(f"/api/v1/users/{segment(args.name, 'users')}")
    output.emit(response, _fmt(args), lambda: _print_user(response.get("user") or {}))
    return EXIT_OK


def cmd_users_create(args: argparse.Namespace) -> int:
    user: dict[str, Any] = {"username": args.username, "roles": list(dict.fromkeys(args.roles))}
    if args.display_name:
        user["displayName"] = args.display_name
    if args.password_stdin or (sys.stdin is not None and sys.stdin.isatty()):
        user["password"] = _read_secret(f"Initial password for {args.username}: ", args.password_stdin, "password")
    with _client() as client:
        response = client.post("/api/v1/users", user)
    output.emit(response, _fmt(args), lambda: _print_user(response.get("user") or {}))
    return EXIT_OK


def _update_user(args: argparse.Namespace, fields: dict[str, Any], mask: str) -> int:
    """PATCH /api/v1/users/NAME with ``fields`` and updateMask ``mask`` (UpdateUser)."""
    user = dict(fields)
    if args.etag:
        user["etag"] = args.etag
    with _client() as client:
        response = client.request("PATCH", f"/api/v1/users/{segment(args.name, 'users')}",
                                  params={"updateMask": mask}, json_body=user)
    output.emit(response, _fmt(args), lambda: _print_user(response.get("user") or {}))
    return EXIT_OK


def cmd_users_disable(args: argparse.Namespace) -> int:
    return _update_user(args, {"disabled": True}, "disabled")


def cmd_users_enable(args: argparse.Namespace) -> int:
    return _update_user(args, {"disabled": False}, "disabled")


def cmd_users_set_roles(args: argparse.Namespace) -> int:
    return _update_user(args, {"roles": list(dict.fromkeys(args.roles))}, "roles")


def cmd_users_set_password(args: argparse.Namespace) -> int:
    # Passwords only ever come from a prompt without echo or from stdin, never from argv (which
    # other users of the machine can read in the process list and shells keep in history).
    with _client() as client:
        me = (client.get("/api/v1/users:me").get("user") or {}).get("username") or ""
        username = segment(args.name, "users") if args.name else me
        own = username == me
        body: dict[str, Any] = {}
        if own:
            body["currentPassword"] = _read_secret("Current password: ", args.password_stdin, "current password")
        who = "New password" if own else f"New password for {username}"
        body["newPassword"] = _read_secret(f"{who}: ", args.password_stdin, "new password")
        if not args.password_stdin and _read_secret(f"Repeat {who[0].lower()}{who[1:]}: ", False,
                                                   "new password") != body["newPassword"]:
            raise ApiError("the two new passwords differ; nothing was changed", exit_code=EXIT_USAGE)
        response = client.post(f"/api/v1/users/{username}:changePassword", body)

    def table() -> None:
        print(f"Password of {username} changed." if own else f"Password of {username} reset.")
        print("Access tokens already issued stay valid until they expire; API keys are not affected.",
              file=sys.stderr)

    output.emit(response, _fmt(args), table)
    return EXIT_OK


# -- teams ------------------------------------------------------------------------------

TEAM_COLUMNS: list[output.Column] = [
    ("NAME", lambda t: short(t.get("name"))),
    ("DISPLAY NAME", lambda t: t.get("displayName")),
    ("MEMBERS", lambda t: [short(m) for m in t.get("members") or []]),
    ("CREATED", lambda t: when(t.get("createTime"))),
]


def cmd_teams_list(args: argparse.Namespace) -> int:
    with _client() as client:
        teams = client.paginate("/api/v1/teams", "teams")
    output.emit({"teams": teams}, _fmt(args), lambda: print_table(teams, TEAM_COLUMNS, empty="No teams found."))
    return EXIT_OK


def cmd_teams_get(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get(f"/api/v1/teams/{segment(args.name, 'teams')}")
    team = response.get("team") or {}
    output.emit(response, _fmt(args), lambda: print_fields([
        ("Name", short(team.get("name"))),
        ("Display name", team.get("displayName")),
        ("Members", [short(m) for m in team.get("members") or []]),
        ("Created", when(team.get("createTime"))),
    ]))
    return EXIT_OK


def cmd_teams_create(args: argparse.Namespace) -> int:
    team: dict[str, Any] = {"name": f"teams/{segment(args.name, 'teams')}"}
    if args.display_name:
        team["displayName"] = args.display_name
    with _client() as client:
        response = client.post("/api/v1/teams", team)
    created = response.get("team") or {}
    output.emit(response, _fmt(args), lambda: print_table([created], TEAM_COLUMNS))
    return EXIT_OK


def _change_membership(args: argparse.Namespace, verb: str) -> int:
    """POST /api/v1/teams/TEAM:addMember or :removeMember (both idempotent)."""
    team = segment(args.team, "teams")
    body = {"user": f"users/{segment(args.user, 'users')}"}
    with _client() as client:
        response = client.post(f"/api/v1/teams/{team}:{verb}", body)
    updated = response.get("team") or {}
    output.emit(response, _fmt(args), lambda: print_table([updated], TEAM_COLUMNS))
    return EXIT_OK


def cmd_teams_add_member(args: argparse.Namespace) -> int:
    return _change_membership(args, "addMember")


def cmd_teams_remove_member(args: argparse.Namespace) -> int:
    return _change_membership(args, "removeMember")


# -- apikeys ----------------------------------------------------------------------------

APIKEY_COLUMNS: list[output.Column] = [
    ("ID", lambda k: short(k.get("name"))),
    ("NAME", lambda k: k.get("displayName")),
    ("PREFIX", lambda k: k.get("prefix")),
    ("OWNER", lambda k: short(k.get("owner"))),
    ("CREATED", lambda k: when(k.get("createTime"))),
    ("EXPIRES", lambda k: when(k.get("expireTime"))),
    ("REVOKED", lambda k: when(k.get("revokeTime"))),
]


def cmd_apikeys_list(args: argparse.Namespace) -> int:
    with _client() as client:
        keys = client.paginate("/api/v1/apikeys", "apiKeys")
    output.emit({"apiKeys": keys}, _fmt(args), lambda: print_table(keys, APIKEY_COLUMNS, empty="No API keys found."))
    return EXIT_OK


def cmd_apikeys_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.name:
        body["displayName"] = args.name
    if args.ttl_days:
        body["ttlDays"] = args.ttl_days
    with _client() as client:
        response = client.post("/api/v1/apikeys", body)
    key = response.get("apiKey") or {}

    def table() -> None:
        print_table([key], APIKEY_COLUMNS)
        print()
        print(f"Key: {response.get('key', '')}")
        print("Store the key now: it is not shown again.", file=sys.stderr)

    output.emit(response, _fmt(args), table)
    return EXIT_OK


def cmd_apikeys_revoke(args: argparse.Namespace) -> int:
    key_id = segment(args.id, "apikeys")
    with _client() as client:
        response = client.post(f"/api/v1/apikeys/{key_id}:revoke", {})
    key = response.get("apiKey") or {"name": f"apikeys/{key_id}"}
    output.emit(response, _fmt(args), lambda: print(f"Revoked {key.get('name')}"))
    return EXIT_OK


# -- audit ------------------------------------------------------------------------------

AUDIT_COLUMNS: list[output.Column] = [
    ("SEQ", lambda r: r.get("sequence")),
    ("TIME", lambda r: when((r.get("event") or {}).get("occurTime") or r.get("recordTime"))),
    ("ACTOR", lambda r: (r.get("event") or {}).get("actor")),
    ("SERVICE", lambda r: (r.get("event") or {}).get("service")),
    ("METHOD", lambda r: ((r.get("event") or {}).get("method") or "-").rsplit("/", 1)[-1]),
    ("OUTCOME", lambda r: enum((r.get("event") or {}).get("outcome"))),
    ("RESOURCE", lambda r: _resource(r.get("event") or {})),
]


def _resource(event: dict[str, Any]) -> str:
    kind, name = event.get("resourceType"), event.get("resourceName")
    if kind and name:
        return f"{kind}/{name}"
    return kind or name or "-"


def _audit_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "filter.actor": args.actor,
        "filter.outcome": args.outcome,
        "filter.service": args.service,
        "filter.method": args.method,
        "filter.startTime": args.since,
        "filter.endTime": args.until,
    }


def cmd_audit_list(args: argparse.Namespace) -> int:
    with _client() as client:
        records = client.paginate("/api/v1/audit/records", "records", _audit_params(args), limit=args.limit)
    output.emit({"records": records}, _fmt(args),
                lambda: print_table(records, AUDIT_COLUMNS, empty="No audit records found."))
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    with _client() as client:
        result = client.get("/api/v1/audit:verify")
    ok = bool(result.get("ok"))
    checked = result.get("recordsChecked") or 0
    bad = result.get("firstBadSequence") or 0
    problem = result.get("problem") or "unknown problem"

    def table() -> None:
        if ok:
            print(f"audit chain OK: {checked} records checked")
        else:
            print(f"audit chain BROKEN at sequence {bad}: {problem} ({checked} records checked)")

    output.emit(result, _fmt(args), table)
    if not ok:
        if _fmt(args) != "table":
            print(f"error: audit chain broken at sequence {bad}: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _unwrap_record(item: dict[str, Any]) -> dict[str, Any]:
    if isinstance(item.get("result"), dict):
        item = item["result"]
    if isinstance(item.get("record"), dict):
        item = item["record"]
    return item


def cmd_audit_export(args: argparse.Namespace) -> int:
    fmt = _fmt(args, default="jsonl")
    with _client() as client:
        stream = (_unwrap_record(item) for item in client.stream_ndjson("/api/v1/audit:export", _audit_params(args)))
        if fmt == "jsonl":
            count = 0
            for record in stream:
                output.dump_jsonl(record)
                count += 1
                if count % 100 == 0:
                    sys.stdout.flush()
            sys.stdout.flush()
            return EXIT_OK
        records = list(stream)
    output.emit(records, fmt, lambda: print_table(records, AUDIT_COLUMNS, empty="No audit records found."))
    return EXIT_OK


# -- provisioners and resource definitions ---------------------------------------------------

RESOURCE_DEFINITION_COLUMNS: list[output.Column] = [
    ("NAME", lambda d: short(d.get("name"))),
    ("VERSION", lambda d: "builtin" if d.get("builtin") else d.get("version")),
    ("TYPE", lambda d: d.get("type")),
    ("CLASS", lambda d: d.get("class") or "*"),
    ("CRITERIA", lambda d: ",".join(f"{k}={v}" for k, v in sorted((d.get("criteria") or {}).items())) or "*"),
    ("PROVISIONER", lambda d: "/".join(filter(None, [(d.get("provisioner") or {}).get("kind"),
                                                    (d.get("provisioner") or {}).get("driver")]))),
]


def cmd_provisioners_list(args: argparse.Namespace) -> int:
    with _client() as client:
        response = client.get("/api/v1/resourceDefinitions:provisioners")

    def table() -> None:
        print_table(response.get("drivers") or [], [("DRIVER", lambda d: d.get("name")),
                                                    ("TYPES", lambda d: ",".join(d.get("types") or [])),
                                                    ("DESCRIPTION", lambda d: d.get("description"))])
        print()
        print_table(response.get("kinds") or [], [("KIND", lambda k: k.get("kind")),
                                                  ("DESCRIPTION", lambda k: k.get("description"))])

    output.emit(response, _fmt(args), table)
    return EXIT_OK


def cmd_resource_definitions(args: argparse.Namespace) -> int:
    import yaml

    name = f"resourceDefinitions/{args.name.removeprefix('resourceDefinitions/')}" if getattr(args, "name", None) else ""
    with _client() as client:
        if args.verb == "list":
            response = client.get("/api/v1/resourceDefinitions", {"type": args.type or None, "pageSize": 1000})
            output.emit(response, _fmt(args), lambda: print_table(
                response.get("resourceDefinitions") or [], RESOURCE_DEFINITION_COLUMNS, empty="No resource definitions."))
        elif args.verb == "get":
            response = client.get(f"/api/v1/{name}")
            output.emit(response, _fmt(args, "yaml"))
        elif args.verb == "create":
            body = yaml.safe_load(_read_text(args.file))
            if not isinstance(body, dict):
                print(f"error: {args.file} must hold one resource definition (a mapping)", file=sys.stderr)
                return EXIT_USAGE
            response = client.post("/api/v1/resourceDefinitions", body)
            created = response.get("resourceDefinition") or {}
            output.emit(response, _fmt(args), lambda: print(
                f"created {created.get('name')} (version {created.get('version')})"))
        else:
            client.request("DELETE", f"/api/v1/{name}")
            print(f"deleted {name}")
    return EXIT_OK


# -- resource instances -------------------------------------------------------------------


def _resource_state(value: Any) -> str:
    text = enum(value)
    return text.removeprefix("RESOURCE_STATE_")


def _reason_cell(text: Any, width: int = 60) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


RESOURCE_COLUMNS: list[output.Column] = [
    ("NAME", lambda r: short(r.get("name"))),
    ("APP/WORKLOAD(S)", lambda r: r.get("workloads") or f"{r.get('application', '-')}/{r.get('workload', '-')}"),
    ("TYPE", lambda r: (r.get("claim") or {}).get("type")),
    ("CLASS", lambda r: (r.get("claim") or {}).get("class") or "default"),
    ("ID", lambda r: (r.get("claim") or {}).get("id")),
    ("STATE", lambda r: _resource_state(r.get("state"))),
    ("REASON", lambda r: _reason_cell(r.get("statusReason"))),
]

TRANSITION_COLUMNS: list[output.Column] = [
    ("TIME", lambda t: when(t.get("time"))),
    ("FROM", lambda t: _resource_state(t.get("from"))),
    ("TO", lambda t: _resource_state(t.get("to"))),
    ("ACTOR", lambda t: t.get("actor")),
    ("REASON", lambda t: t.get("reason")),
]


def _resource_path(name: str) -> str:
    return f"/api/v1/resources/{segment(name, 'resources')}"


def _value(value: Any) -> Any:
    """Outputs travel as a protobuf Struct, whose numbers are doubles: show port 5432, not 5432.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _print_resource(resource: dict[str, Any], secrets: dict[str, str] | None) -> None:
    claim = resource.get("claim") or {}
    print_fields(
        [
            ("Name", resource.get("name")),
            ("Application", resource.get("application")),
            ("Environment", resource.get("environment")),
            ("Environment type", resource.get("environmentType")),
            ("Team", resource.get("team")),
            ("Workloads", resource.get("workloads")),
            ("Type", claim.get("type")),
            ("Class", claim.get("class") or "default"),
            ("Shared id", claim.get("id")),
            ("State", _resource_state(resource.get("state"))),
            ("Reason", resource.get("statusReason")),
            ("Definition", resource.get("definition")),
            ("Created", when(resource.get("createTime"))),
            ("Updated", when(resource.get("updateTime"))),
        ]
    )
    outputs = resource.get("outputs") or {}
    refs = resource.get("secretRefs") or {}
    if claim.get("params"):
        print("\nParams:")
        print_fields([(f"  {k}", _value(v)) for k, v in sorted(claim["params"].items())])
    print("\nOutputs:")
    if outputs:
        print_fields([(f"  {k}", _value(v)) for k, v in sorted(outputs.items())])
    else:
        print("  (none)")
    if refs:
        if secrets is None:
            print("\nSecret outputs (references; --reveal prints the values):")
            print_fields([(f"  {k}", v) for k, v in sorted(refs.items())])
        else:
            print("\nSecret outputs (plaintext):")
            print_fields([(f"  {k}", secrets.get(k, "(not in the secret store)")) for k in sorted(refs)])


def cmd_resources_list(args: argparse.Namespace) -> int:
    params = {"application": short(args.app) if args.app else None, "environment": args.env or None}
    with _client() as client:
        items = client.paginate("/api/v1/resources", "resources", params=params, limit=args.limit)
    output.emit({"resources": items}, _fmt(args),
                lambda: print_table(items, RESOURCE_COLUMNS, empty="No resources found."))
    return EXIT_OK


def cmd_resources_get(args: argparse.Namespace) -> int:
    path = _resource_path(args.name)
    secrets: dict[str, str] | None = None
    with _client() as client:
        response = client.get(path)
        resource = response.get("resource") or {}
        if args.reveal:
            if resource.get("secretRefs"):
                # Fetched before anything is printed: a refused reveal prints only the error.
                secrets = client.post(f"{path}:reveal", {}).get("secrets") or {}
            else:
                print(f"{resource.get('name', args.name)} has no secret outputs: nothing to reveal", file=sys.stderr)
    if secrets is not None:
        print(f"warning: printing the plaintext secret outputs of {resource.get('name', args.name)} "
              "(this reveal is recorded in the audit chain)", file=sys.stderr)
        response = {**response, "secrets": secrets}
    output.emit(response, _fmt(args), lambda: _print_resource(resource, secrets))
    return EXIT_OK


def cmd_resources_check(args: argparse.Namespace) -> int:
    with _client() as client:
        result = client.post(f"{_resource_path(args.name)}:check", {})
    resource = result.get("resource") or {}
    healthy, drifted = bool(result.get("healthy")), bool(result.get("drifted"))
    # proto3 JSON leaves out false booleans; the verdict is spelled out for scripts.
    result = {**result, "healthy": healthy, "drifted": drifted}
    ok = healthy and not drifted
    fmt = _fmt(args)

    def table() -> None:
        print_fields(
            [
                ("Resource", resource.get("name")),
                ("Healthy", healthy),
                ("Drifted", drifted),
                ("State", _resource_state(resource.get("state"))),
                ("Reason", result.get("reason")),
            ]
        )

    output.emit(result, fmt, table)
    if not ok:
        if fmt != "table":
            problem = "unhealthy and drifted" if drifted and not healthy else ("drifted" if drifted else "unhealthy")
            print(f"error: {resource.get('name', args.name)} is {problem}: {result.get('reason') or 'no reason given'}",
                  file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_resources_history(args: argparse.Namespace) -> int:
    with _client() as client:
        resource = client.get(_resource_path(args.name)).get("resource") or {}
    transitions = resource.get("transitions") or []
    output.emit({"name": resource.get("name"), "transitions": transitions}, _fmt(args),
                lambda: print_table(transitions, TRANSITION_COLUMNS, empty="No state transitions recorded."))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
