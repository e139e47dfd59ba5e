"""Render preview: a workload with every placeholder resolved from given resource outputs
(innominatus.specs.render) and the offline `innominatus render` command."""

from __future__ import annotations

import copy
import json
import textwrap

import pytest
from ruamel.yaml import YAML

from innominatus.cli.main import main
from innominatus.specs.render import (
    OutputsError,
    RenderError,
    load_outputs,
    position_of,
    render_workload,
)

SCORE = textwrap.dedent(
    """\
    apiVersion: score.dev/v1b1
    metadata:
      name: checkout
      annotations:
        example.com/team: payments
    containers:
      api:
        image: ghcr.io/acme/checkout:1.4.2
        variables:
          DB_ADDRESS: "${resources.db.host}:${resources.db.port}"
          DB_URL: "postgres://${resources.db.username}@${resources.db.host}:${resources.db.port}/${metadata.name}"
          TEAM: "${metadata.annotations.example\\\\.com/team}"
          SHELL_VAR: "$${HOME} costs $$5"
        files:
          /etc/checkout/app.conf:
            content: |
              service=${metadata.name}
              database=${resources.db.host}
              literal=$${not.a.placeholder}
          /etc/checkout/template.tmpl:
            content: "left as written: ${resources.db.host} $$"
            noExpand: true
          /etc/checkout/blob.bin:
            binaryContent: JHtyZXNvdXJjZXMuZGIuaG9zdH0=
        volumes:
          /var/data:
            source: ${resources.data}
            readOnly: true
    resources:
      db:
        type: postgres
      data:
        type: volume
      dns:
        type: dns
        params:
          target: ${resources.db.host}
          labels:
            - ${metadata.name}
            - {port: "${resources.db.port}", literal: "$${x}"}
      route:
        type: route
        params:
          host: ${resources.dns.host}
          path: /
    """
)

OUTPUTS = {
    "db": {"host": "db.internal", "port": 5432, "username": "app"},
    "data": {"type": "volume", "source": "checkout-data"},
    "dns": {"host": "checkout.example.com"},
    "route": {},
}


def _document(text: str = SCORE) -> dict:
    return json.loads(json.dumps(YAML(typ="safe", pure=True).load(text)))


def test_render_realistic_workload():
    document = _document()
    before = copy.deepcopy(document)
    rendered = render_workload(document, OUTPUTS)
    assert document == before  # the input is not modified

    api = rendered["containers"]["api"]
    assert api["variables"] == {
        "DB_ADDRESS": "db.internal:5432",
        "DB_URL": "postgres://app@db.internal:5432/checkout",
        "TEAM": "payments",
        "SHELL_VAR": "${HOME} costs $5",
    }
    files = api["files"]
    assert files["/etc/checkout/app.conf"]["content"] == (
        "service=checkout\ndatabase=db.internal\nliteral=${not.a.placeholder}\n"
    )
    assert files["/etc/checkout/template.tmpl"] == {
        "content": "left as written: ${resources.db.host} $$",
        "noExpand": True,
    }
    assert files["/etc/checkout/blob.bin"] == {"binaryContent": "JHtyZXNvdXJjZXMuZGIuaG9zdH0="}
    assert api["volumes"] == {"/var/data": {"source": "checkout-data", "readOnly": True}}
    assert api["image"] == "ghcr.io/acme/checkout:1.4.2"

    resources = rendered["resources"]
    assert resources["dns"]["params"] == {
        "target": "db.internal",
        "labels": ["checkout", {"port": "5432", "literal": "${x}"}],
    }
    assert resources["route"]["params"] == {"host": "checkout.example.com", "path": "/"}
    assert list(resources) == ["db", "data", "dns", "route"]  # document order kept
    assert rendered["metadata"] == document["metadata"]


def test_volume_source_with_an_output_key_and_deprecated_list_forms():
    document = _document()
    api = document["containers"]["api"]
    api["volumes"] = [{"target": "/var/data", "source": "${resources.data.source}-x"}]
    api["files"] = [{"target": "/etc/a", "content": "${metadata.name}"},
                    {"target": "/etc/b", "content": "${metadata.name}", "noExpand": True}]
    rendered = render_workload(document, OUTPUTS)["containers"]["api"]
    assert rendered["volumes"] == [{"target": "/var/data", "source": "checkout-data-x"}]
    assert [f["content"] for f in rendered["files"]] == ["checkout", "${metadata.name}"]


def test_missing_outputs_lists_every_problem_with_its_pointer():
    outputs = {"db": {"host": "db.internal", "port": 5432, "user": "app"}, "dns": {"hostname": "x"}}
    with pytest.raises(RenderError) as caught:
        render_workload(_document(), outputs)
    problems = [(p.pointer, p.message) for p in caught.value.problems]
    assert problems == [
        ("/containers/api/variables/DB_URL",
         "cannot resolve ${resources.db.username}: resources.db has no output 'username' "
         "(outputs: host, port, user); did you mean 'user'?"),
        ("/containers/api/volumes/~1var~1data/source",
         "cannot resolve ${resources.data}: no outputs were given for resources.data: add `data:` with its "
         "outputs to the outputs file"),
        ("/resources/route/params/host",
         "cannot resolve ${resources.dns.host}: resources.dns has no output 'host' (outputs: hostname); "
         "did you mean 'hostname'?"),
    ]
    assert caught.value.problems[0].placeholder == "${resources.db.username}"
    assert str(caught.value).startswith("3 problems rendering the workload:\n  /containers/api/variables/DB_URL: ")


def test_missing_output_message_names_resource_key_and_outputs():
    document = _document("apiVersion: score.dev/v1b1\nmetadata: {name: w}\ncontainers:\n  c:\n    image: x:1\n"
                         "    variables: {DB: '${resources.db.hostname}'}\nresources:\n  db: {type: postgres}\n")
    with pytest.raises(RenderError) as caught:
        render_workload(document, {"db": {"host": "h", "port": 5432, "username": "u"}})
    (problem,) = caught.value.problems
    assert problem.pointer == "/containers/c/variables/DB"
    assert "resources.db has no output 'hostname' (outputs: host, port, username)" in problem.message


def test_params_resolve_in_dependency_order_and_cycles_are_named():
    document = _document(
        "apiVersion: score.dev/v1b1\nmetadata: {name: w}\ncontainers: {c: {image: 'x:1'}}\nresources:\n"
        "  a: {type: t, params: {x: '${resources.b.out}'}}\n"
        "  b: {type: t, params: {y: '${resources.a.out}'}}\n"
    )
    with pytest.raises(RenderError) as caught:
        render_workload(document, {"a": {"out": 1}, "b": {"out": 2}})
    (problem,) = caught.value.problems
    assert problem.pointer == "/resources/a/params"
    assert problem.message == "resources depend on each other's outputs in a cycle: a → b → a"


def test_unknown_root_malformed_and_undeclared_resources_are_problems():
    document = _document(
        "apiVersion: score.dev/v1b1\nmetadata: {name: w}\ncontainers:\n  c:\n    image: x:1\n"
        "    variables: {A: '${env.HOME}', B: '${a..b}', C: '${resources.queue.url}', D: '${metadata.name'}\n"
    )
    with pytest.raises(RenderError) as caught:
        render_workload(document, {})
    messages = {p.pointer.rsplit("/", 1)[1]: p.message for p in caught.value.problems}
    assert messages == {
        "A": "cannot resolve ${env.HOME}: unknown placeholder root 'env': placeholders start with 'metadata.' or "
             "'resources.' (write '$${' for a literal '${')",
        "B": "malformed placeholder '${a..b}': empty key (a dot at the start or end, or two dots in a row); "
             "escape a dot inside a key as '\\.'",
        "C": "cannot resolve ${resources.queue.url}: resources.queue is not declared under `resources:` in this "
             "workload (declared: none)",
        "D": "unterminated placeholder '${metadata.name': '${' has no closing '}' (write '$${' for a literal '${')",
    }


def test_load_outputs():
    assert load_outputs("db: {host: db.internal, port: 5432}\nempty:\n") == {
        "db": {"host": "db.internal", "port": 5432}, "empty": {}}
    assert load_outputs('{"db": {"host": "h"}}') == {"db": {"host": "h"}}
    assert load_outputs("") == {}
    with pytest.raises(OutputsError, match="expected a map of resource names"):
        load_outputs("- a\n- b\n")
    with pytest.raises(OutputsError, match="the outputs of 'db' must be a map"):
        load_outputs("db: db.internal\n")
    with pytest.raises(OutputsError, match="not valid YAML at line 2, column 1"):
        load_outputs("db: {host: [\n")


def test_position_of():
    assert position_of(SCORE, "/containers/api/variables/DB_ADDRESS") == (10, 19)
    assert position_of(SCORE, "/containers/api/volumes/~1var~1data/source") == (27, 17)
    assert position_of(SCORE, "/resources/dns/params/labels/1") == (40, 11)
    assert position_of(SCORE, "/nope") == (0, 0)


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("INNOMINATUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "score.yaml").write_text(SCORE, encoding="utf-8")
    YAML(typ="safe", pure=True).dump(OUTPUTS, tmp_path / "outputs.yaml")
    return tmp_path


def test_cli_render_yaml_by_default(files, capsys):
    assert main(["render", "-f", "score.yaml", "--outputs", "outputs.yaml"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rendered = YAML(typ="safe", pure=True).load(out)
    assert rendered == render_workload(_document(), OUTPUTS)
    assert rendered["containers"]["api"]["variables"]["DB_ADDRESS"] == "db.internal:5432"
    assert out.startswith("apiVersion: score.dev/v1b1\nmetadata:\n")  # document order kept


def test_cli_render_json(files, capsys):
    assert main(["render", "-f", "score.yaml", "--outputs", "outputs.yaml", "-o", "json"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out) == render_workload(_document(), OUTPUTS)
    assert main(["-o", "json", "render", "-f", "score.yaml", "--outputs", "outputs.yaml"]) == 0
    assert json.loads(capsys.readouterr().out)["resources"]["route"]["params"]["host"] == "checkout.example.com"


def test_cli_render_reports_missing_outputs(files, capsys):
    (files / "partial.yaml").write_text("db: {host: db.internal, port: 5432}\n", encoding="utf-8")
    assert main(["render", "-f", "score.yaml", "--outputs", "partial.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == ("score.yaml:11:15: error: cannot resolve ${resources.db.username}: resources.db has no "
                        "output 'username' (outputs: host, port)")
    assert ("score.yaml:27:17: error: cannot resolve ${resources.data}: no outputs were given for resources.data: "
            "add `data:` with its outputs to the outputs file") in lines
    assert lines[-1] == "score.yaml: not rendered: 3 placeholder problem(s)"


def test_cli_render_without_outputs_file_when_nothing_needs_one(files, capsys):
    (files / "simple.yaml").write_text(
        "apiVersion: score.dev/v1b1\nmetadata: {name: hello}\ncontainers:\n  main:\n    image: busybox:1.36\n"
        "    variables: {GREETING: 'hello ${metadata.name}', PRICE: '$$5'}\n", encoding="utf-8")
    assert main(["render", "-f", "simple.yaml", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["containers"]["main"]["variables"] == {
        "GREETING": "hello hello", "PRICE": "$5"}


def test_cli_render_missing_or_invalid_outputs_file(files, capsys):
    assert main(["render", "-f", "score.yaml", "--outputs", "missing.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: cannot read the outputs file missing.yaml: No such file or directory\n"

    (files / "list.yaml").write_text("- db\n", encoding="utf-8")
    assert main(["render", "-f", "score.yaml", "--outputs", "list.yaml"]) == 1
    assert capsys.readouterr().err.startswith("error: the outputs file list.yaml is invalid: expected a map")

    (files / "broken.yaml").write_text("db: {host: [\n", encoding="utf-8")
    assert main(["render", "-f", "score.yaml", "--outputs", "broken.yaml"]) == 1
    assert "is invalid: not valid YAML at line" in capsys.readouterr().err


def test_cli_render_validates_first(files, capsys):
    (files / "bad.yaml").write_text(
        "apiVersion: score.dev/v1b1\nmetadata: {name: hello}\ncontainers:\n  main:\n    image: busybox:1.36\n"
        "    varaibles: {A: b}\n", encoding="utf-8")
    assert main(["render", "-f", "bad.yaml", "--outputs", "outputs.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "bad.yaml:6:5: error SCORE-1002: unknown key 'varaibles'" in err
    assert err.splitlines()[-1] == "bad.yaml: not rendered: fix the errors above (`innominatus validate bad.yaml`)"


def test_cli_render_missing_score_file_and_usage(files, capsys):
    assert main(["render", "-f", "nope.yaml"]) == 1
    assert capsys.readouterr().err == "error: cannot read the Score file nope.yaml: No such file or directory\n"
    assert main(["render"]) == 2  # -f is required


def test_resources_are_rendered_in_dependency_order():
    from innominatus.specs.checks import resource_order

    document = _document()
    assert resource_order(document) == ["data", "db", "dns", "route"]
    cyclic = {"resources": {"a": {"params": {"x": "${resources.b.o}"}}, "b": {"params": {"y": ["${resources.a.o}"]}},
                            "c": {"params": {"z": "${resources.c.o}"}}}}
    with pytest.raises(ValueError, match="resource dependency cycle: a → b → a"):
        resource_order(cyclic)
