"""Findings point at the right place: exact code, line, column and JSON pointer on broken Score
files, "did you mean" hints, and the CLI's compiler-style and JSON output."""

from __future__ import annotations

import json

import pytest

from innominatus.cli.main import main
from innominatus.specs.validation import validate_score

HEAD = "apiVersion: score.dev/v1b1\nmetadata:\n  name: web\n"

# name: (text, [(code, line, column, pointer), ...] of the errors, hint fragment of the first error)
CASES = {
    "misspelled key": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\n    varaibles:\n      A: b\n",
        [("SCORE-1002", 7, 5, "/containers/main/varaibles")],
        "did you mean 'variables'",
    ),
    "wrong type deep inside": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\n    livenessProbe:\n      httpGet:\n"
               "        path: /\n        port: eighty\n",
        [("SCORE-1004", 10, 15, "/containers/main/livenessProbe/httpGet/port")],
        "integer",
    ),
    "missing image": (
        HEAD + "containers:\n  main:\n    command: [run]\n",
        [("SCORE-1003", 5, 3, "/containers/main")],
        "add `image:`",
    ),
    "bad metadata.name": (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: Web_App\ncontainers:\n  main:\n    image: nginx:1.27\n",
        [("SCORE-1005", 3, 9, "/metadata/name")],
        "lowercase letters",
    ),
    "bad port": (
        HEAD + "service:\n  ports:\n    http:\n      port: 70000\ncontainers:\n  main:\n    image: nginx:1.27\n",
        [("SCORE-1005", 7, 13, "/service/ports/http/port")],
        "1 to 65535",
    ),
    "top-level environment and workflows": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\nenvironment: dev\nworkflows:\n  deploy: {}\n",
        [("SCORE-1002", 7, 1, "/environment"), ("SCORE-1002", 8, 1, "/workflows")],
        "deploy --env",
    ),
    "wrong apiVersion": (
        "apiVersion: score.dev/v1\nmetadata:\n  name: web\ncontainers:\n  main:\n    image: nginx:1.27\n",
        [("SCORE-1006", 1, 13, "/apiVersion")],
        "score.dev/v1b1",
    ),
    "YAML syntax error": (
        HEAD + "   bad: x\ncontainers: {}\n",
        [("SCORE-1000", 4, 7, "")],
        "indentation",
    ),
    "unclosed quote": (
        HEAD + "containers:\n  main:\n    image: \"nginx:1.27\n",
        [("SCORE-1000", 7, 1, "")],
        "quoting",
    ),
    "tab indentation": (
        HEAD + "containers:\n\tmain:\n",
        [("SCORE-1000", 5, 1, "")],
        "spaces",
    ),
    "bad annotation key": (
        HEAD + "  annotations:\n    -bad: x\ncontainers:\n  main:\n    image: nginx:1.27\n",
        [("SCORE-1005", 5, 5, "/metadata/annotations/-bad")],
        "DNS prefix",
    ),
    "file without contents": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\n    files:\n      /etc/x:\n        mode: '0644'\n",
        [("SCORE-1007", 9, 9, "/containers/main/files/~1etc~1x")],
        "exactly one of source, content, binaryContent",
    ),
    "duplicate target in the list form": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\n    files:\n      - target: /etc/x\n        content: a\n"
               "      - target: /etc/x\n        content: b\n",
        [("SCORE-1021", 10, 17, "/containers/main/files/1/target")],
        "mounted once",
    ),
    "list item without a target": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\n    volumes:\n      - source: data\n",
        [("SCORE-1022", 8, 9, "/containers/main/volumes/0")],
        "target",
    ),
    "duplicate key": (
        HEAD + "containers:\n  main:\n    image: a\n    image: b\n",
        [("SCORE-1016", 7, 5, "/containers/main/image")],
        "unique",
    ),
    "misspelled container field in a list-form file": (
        HEAD + "containers:\n  main:\n    image: nginx:1.27\n    files:\n      - target: /x\n        contnet: a\n",
        [("SCORE-1002", 9, 9, "/containers/main/files/0/contnet")],
        "did you mean 'content'",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_positions(name):
    text, expected, hint = CASES[name]
    result = validate_score(text)
    got = [(f.code, f.line, f.column, f.pointer) for f in result.errors]
    assert got == expected, [f.to_dict() for f in result.findings]
    assert hint in result.errors[0].hint or hint in result.errors[0].message, result.errors[0]
    assert not result.valid


def test_top_level_hints_say_where_things_belong():
    text, _, _ = CASES["top-level environment and workflows"]
    environment, workflows = validate_score(text).errors
    assert "metadata.annotations" in environment.hint and "deploy --env" in environment.hint
    assert "metadata.annotations" in workflows.hint and "golden-path" in workflows.hint


def test_semantic_findings_locate_upgraded_list_items():
    """Paths into the upgraded map form locate the original list item."""
    text = HEAD + ("containers:\n  main:\n    image: nginx:1.27\n    files:\n      - target: /etc/a\n"
                   "        content: ${resources.nope.x}\n")
    result = validate_score(text)
    placeholder = [f for f in result.errors if f.pointer.startswith("/containers/main/files/")]
    assert placeholder, result.findings
    assert (placeholder[0].line, placeholder[0].column) == (9, 18)
    upgrade = [f for f in result.findings if f.code == "SCORE-1020"]
    assert [(f.line, f.column, f.severity) for f in upgrade] == [(7, 5, "warning")]


def test_findings_are_sorted_by_position():
    text = HEAD + "containers:\n  main:\n    image: nginx:1.27\n    varaibles: {}\n    comand: []\nenvironment: x\n"
    result = validate_score(text)
    positions = [(f.line, f.column) for f in result.findings]
    assert positions == sorted(positions)
    assert [f.code for f in result.errors] == ["SCORE-1002"] * 3


def test_cli_prints_compiler_style_lines(tmp_path, capsys):
    path = tmp_path / "score.yaml"
    path.write_text(CASES["misspelled key"][0], encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "SCORE-1002" in line)
    assert line == (f"{path}:7:5: error SCORE-1002: unknown key 'varaibles' in containers.main "
                    "(hint: did you mean 'variables'?)")


def test_cli_json_output_shape(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CASES["bad port"][0], encoding="utf-8")
    good = tmp_path / "good.yaml"
    # A different workload name: files named together form one application.
    good.write_text(HEAD.replace("name: web", "name: web-two") + "containers:\n  main:\n    image: nginx:1.27\n",
                    encoding="utf-8")
    assert main(["validate", "-o", "json", str(good), str(bad)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False
    assert [f["path"] for f in data["files"]] == [str(good), str(bad)]
    for entry in data["files"]:
        for finding in entry["findings"]:
            assert set(finding) == {"code", "severity", "message", "pointer", "line", "column", "hint"}
    errors = [f for f in data["files"][1]["findings"] if f["severity"] == "error"]
    assert errors == [{
        "code": "SCORE-1005", "severity": "error", "message": errors[0]["message"],
        "pointer": "/service/ports/http/port", "line": 7, "column": 13, "hint": "use a port number from 1 to 65535",
    }]
    assert not [f for f in data["files"][0]["findings"] if f["severity"] == "error"]
