"""Workflow definitions: the YAML format, its published schema, findings with line:col, params."""

from __future__ import annotations

import textwrap

import jsonschema
import pytest

from innominatus.engine.definition import (
    CODES,
    KNOWN_STEP_TYPES,
    ParamsError,
    WorkflowFinding,
    bind_params,
    load_workflow,
    parse_duration,
    workflow_schema,
)
from innominatus.engine.expressions import compile_expression, evaluate
from innominatus.engine.model import ParamDef, RetryPolicy, StepDef, WorkflowDef
from innominatus.specs.findings import Finding

HEAD = 'apiVersion: innominatus.dev/v1\nkind: Workflow\nmetadata: {name: demo, version: "1.0.0"}\nspec:\n'

FULL = textwrap.dedent("""\
    apiVersion: innominatus.dev/v1
    kind: Workflow
    metadata: {name: deploy-app, version: "1.2.0", description: Deploy an app, tags: [deploy, k8s], owner: team-x}
    spec:
      params:
        app: {type: string, pattern: "^[a-z0-9-]+$", required: true, description: The app}
        replicas: {type: integer, minimum: 1, default: 2}
        regions: {type: array, items: {type: string}, default: [eu-1]}
      variables: {region: eu-1}
      concurrency: 4
      deadline: 30m
      steps:
        - id: build
          type: shell
          with: {command: ["echo", "${params.app}"]}
          retry: {max_attempts: 3, initial_interval: 1s, multiplier: 2, max_interval: 30s, jitter: 0.1, non_retryable: [invalid_input]}
          timeout: 5m
          outputs: {image: "${result.stdout}"}
        - id: deploy
          type: http
          depends_on: [build]
          when: "params.replicas > 1"
          for_each: "params.regions"
          with: {url: "https://deploy.example.test/${item}/${steps.build.outputs.image}", region: "${vars.region}"}
          on_failure:
            - {id: rollback, type: shell, with: {command: ["undo", "${steps.deploy.outputs.id}", "${workflow.run_id}"]}}
        - {id: gate, type: approval, depends_on: [deploy], approval: {approvers: [platform-engineer], timeout: 24h}}
        - {id: sub, type: workflow, uses: db-lifecycle, depends_on: [gate], unless: "vars.region == 'none'", with: {app: "${params.app}"}}
    """)


def _wf(body: str) -> str:
    """HEAD plus ``body`` (the keys under spec:, written flush left)."""
    return HEAD + textwrap.indent(textwrap.dedent(body), "  ")


def test_the_full_example_parses_into_the_exact_workflow():
    wf, findings = load_workflow(FULL, "deploy-app.yaml", workflows=["db-lifecycle"])
    assert findings == []
    assert wf == WorkflowDef(
        name="deploy-app",
        version="1.2.0",
        description="Deploy an app",
        tags=("deploy", "k8s"),
        owner="team-x",
        params=(
            ParamDef("app", {"type": "string", "pattern": "^[a-z0-9-]+$"}, None, True, "The app"),
            ParamDef("replicas", {"type": "integer", "minimum": 1}, 2, False, ""),
            ParamDef("regions", {"type": "array", "items": {"type": "string"}}, ["eu-1"], False, ""),
        ),
        variables={"region": "eu-1"},
        concurrency=4,
        deadline=1800.0,
        source=FULL,
        steps=(
            StepDef(
                id="build", type="shell", with_={"command": ["echo", "${params.app}"]},
                retry=RetryPolicy(max_attempts=3, initial_interval=1.0, multiplier=2.0, max_interval=30.0, jitter=0.1,
                                  non_retryable=("invalid_input",)),
                timeout=300.0, outputs={"image": "${result.stdout}"}, line=13, column=7,
            ),
            StepDef(
                id="deploy", type="http", depends_on=("build",), when="params.replicas > 1", for_each="params.regions",
                with_={"url": "https://deploy.example.test/${item}/${steps.build.outputs.image}", "region": "${vars.region}"},
                on_failure=(StepDef(id="rollback", type="shell",
                                    with_={"command": ["undo", "${steps.deploy.outputs.id}", "${workflow.run_id}"]},
                                    line=26, column=11),),
                line=19, column=7,
            ),
            StepDef(id="gate", type="approval", depends_on=("deploy",),
                    approval={"approvers": ["platform-engineer"], "timeout": 86400.0}, line=27, column=7),
            StepDef(id="sub", type="workflow", uses="db-lifecycle", depends_on=("gate",), unless="vars.region == 'none'",
                    with_={"app": "${params.app}"}, line=28, column=7),
        ),
    )


def test_defaults_aliases_and_literal_lists():
    wf, findings = load_workflow(_wf("""\
          steps:
            - {id: a, type: shell, if: "1 < 2"}
            - {id: b, type: wait, when: false, unless: true, retry: {max_attempts: 5}}
            - {id: c, type: shell, for_each: [eu-1, {zone: "b"}, 3], with: {z: "${item}"}}
            - {id: d, type: shell, timeout: 90, retry: {initial_interval: 250ms, max_interval: "1h30m"}}
        """))
    assert findings == []
    a, b, c, d = wf.steps
    assert (wf.concurrency, wf.deadline, wf.params, wf.variables, wf.tags, wf.owner) == (0, None, (), {}, (), "")
    assert a.when == "1 < 2" and a.retry == RetryPolicy() and a.timeout is None
    assert (b.when, b.unless, b.retry) == ("false", "true", RetryPolicy(max_attempts=5))
    assert evaluate(compile_expression(c.for_each), {}) == ["eu-1", {"zone": "b"}, 3]
    assert d.timeout == 90.0 and d.retry == RetryPolicy(initial_interval=0.25, max_interval=5400.0)


@pytest.mark.parametrize("text,seconds", [
    (10, 10.0), (2.5, 2.5), ("90", 90.0), ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0),
    ("250ms", 0.25), ("2d", 172800.0), ("1.5s", 1.5), ("0", 0.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "1y", "-1s", "s", "", True, None, [1], -3, float("inf")])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_the_published_schema_is_valid_and_accepts_the_example():
    from ruamel.yaml import YAML

    schema = workflow_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(YAML(typ="safe", pure=True).load(FULL))
    assert schema["properties"]["apiVersion"]["const"] == "innominatus.dev/v1"


def test_every_code_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "workflows.md").read_text()
    for code in CODES:
        assert code in doc, code


# Each bad definition: (YAML after HEAD, code, line, column, part of the message, part of the hint).
BAD = {
    "yaml syntax": ("  steps: [\n", "WF-1000", 6, 1, "not valid YAML", ""),
    "unknown key (did you mean)": (
        "  steps:\n    - id: a\n      type: shell\n      depend_on: [b]\n", "WF-1002", 8, 7, "unknown key 'depend_on'",
        "did you mean 'depends_on'?"),
    "missing key": ("  steps:\n    - id: a\n    - {id: b, type: shell}\n", "WF-1003", 6, 7,
                    "missing the required key 'type'", "add `type:`"),
    "wrong type": ("  concurrency: many\n  steps: [{id: a, type: shell}]\n", "WF-1004", 5, 16,
                   "'many' is not of type 'integer'", ""),
    "bad format": ("  steps: [{id: a, type: shell, retry: {jitter: 2}}]\n", "WF-1005", 5, 48,
                   "greater than the maximum of 1", ""),
    "bad duration (schema)": ("  steps:\n    - {id: a, type: shell, timeout: 5 minutes}\n", "WF-1107", 6, 37,
                              "'5 minutes' is not a duration", "1h30m"),
    "zero timeout": ("  steps:\n    - {id: a, type: shell, timeout: 0s}\n", "WF-1107", 6, 37,
                     "must be longer than 0 seconds", ""),
    "bad deadline": ("  deadline: 3 days\n  steps: [{id: a, type: shell}]\n", "WF-1107", 5, 13, "not a duration", ""),
    "duplicate ids": ("  steps:\n    - {id: a, type: shell}\n    - {id: a, type: http}\n", "WF-1100", 7, 12,
                      "step id 'a' is used twice (first at line 6)", ""),
    "unknown depends_on": ("  steps:\n    - {id: build, type: shell}\n    - {id: b, type: shell, depends_on: [biuld]}\n",
                           "WF-1101", 7, 41, "depends on 'biuld', which is not a step", "did you mean 'build'?"),
    "cycle": ("  steps:\n    - {id: a, type: shell, depends_on: [c]}\n    - {id: b, type: shell, depends_on: [a]}\n"
              "    - {id: c, type: shell, depends_on: [b]}\n", "WF-1102", 7, 41,
              "dependency cycle: a → c → b → a", ""),
    "self dependency": ("  steps:\n    - {id: a, type: shell, depends_on: [a]}\n", "WF-1102", 6, 41,
                        "step 'a' depends on itself", ""),
    "unknown type": ("  steps:\n    - id: a\n      type: shel\n", "WF-1103", 7, 13, "unknown type 'shel'",
                     "did you mean 'shell'?"),
    "workflow without uses": ("  steps:\n    - {id: a, type: workflow}\n", "WF-1104", 6, 7, "`uses` is missing", ""),
    "uses on another type": ("  steps:\n    - {id: a, type: shell, uses: db-lifecycle}\n", "WF-1104", 6, 28,
                             "has `uses` but is of type 'shell'", ""),
    "approval without settings": ("  steps:\n    - {id: a, type: approval}\n", "WF-1105", 6, 7,
                                  "approval gate without `approval` settings", "approvers"),
    "unknown workflow": ("  steps:\n    - {id: a, type: workflow, uses: db-lifecycel}\n", "WF-1106", 6, 37,
                         "'db-lifecycel', which the catalog does not hold", "did you mean 'db-lifecycle'?"),
    "uses itself": ("  steps:\n    - {id: a, type: workflow, uses: demo}\n", "WF-1106", 6, 37,
                    "uses the workflow 'demo' itself", ""),
    "bad param schema": ("  params:\n    p: {type: strin}\n  steps: [{id: a, type: shell}]\n", "WF-1108", 6, 15,
                         "param 'p': invalid JSON schema", ""),
    "default mismatch": ("  params:\n    q: {type: integer, minimum: 1, default: 0}\n  steps: [{id: a, type: shell}]\n",
                         "WF-1109", 6, 45, "the default 0 does not match", ""),
    "when and if": ("  steps:\n    - {id: a, type: shell, when: 'true', if: 'false'}\n", "WF-1110", 6, 42,
                    "both `when` and `if`", ""),
    "depends_on in compensation": (
        "  steps:\n    - id: a\n      type: shell\n      on_failure:\n        - {id: undo, type: shell, depends_on: [a]}\n",
        "WF-1111", 9, 35, "compensation step 'undo' cannot have 'depends_on'", ""),
    "cel syntax (quoted)": ('  params: {n: {type: integer}}\n  steps:\n    - id: a\n      type: shell\n'
                            '      when: "params.n >> 1"\n', "WF-1200", 9, 24, "syntax error: unexpected '>'", ""),
    "cel syntax (end)": ("  steps:\n    - id: a\n      type: shell\n      unless: 'size(['\n", "WF-1200", 8, 22,
                         "unexpected end of expression", ""),
    "cel syntax (block)": ("  params: {n: {type: integer}}\n  steps:\n    - id: a\n      type: shell\n      when: |\n"
                           "        params.n > 1 &&\n          params.n < )\n", "WF-1200", 11, 22,
                           "unexpected ')'", ""),
    "cel syntax (for_each)": ("  steps:\n    - {id: a, type: shell, for_each: 'params.x.'}\n", "WF-1200", 6, 48,
                              "syntax error", ""),
    "placeholder in cel": ("  steps:\n    - {id: a, type: shell, when: '${params.x} > 1'}\n", "WF-1200", 6, 35,
                           "syntax error", "write params.x, not ${params.x}"),
    "malformed placeholder": ('  params: {app: {type: string}}\n  steps:\n    - id: a\n      type: shell\n'
                              '      with: {cmd: "run ${params.app"}\n', "WF-1201", 9, 24, "", ""),
    "malformed placeholder chars": ('  steps:\n    - id: a\n      type: shell\n      with: {cmd: ["x", "${params app}"]}\n',
                                    "WF-1201", 8, 26, "malformed", ""),
    "unknown root": ('  params: {app: {type: string}}\n  steps:\n    - id: a\n      type: shell\n'
                     '      with: {command: ["echo", "x ${param.app}"]}\n', "WF-1202", 9, 35,
                     "names 'param', which is not a known root", "did you mean 'params'?"),
    "unknown root in cel": ("  steps:\n    - {id: a, type: shell, when: 'env == 1'}\n", "WF-1202", 6, 35,
                            "names 'env', which is not a known root", ""),
    "item outside for_each": ("  steps:\n    - {id: a, type: shell, with: {x: '${item}'}}\n", "WF-1202", 6, 39,
                              "uses 'item' outside a for_each step", ""),
    "item in its own for_each": ("  steps:\n    - {id: a, type: shell, for_each: 'item'}\n", "WF-1202", 6, 39,
                                 "uses 'item' outside a for_each step", ""),
    "result outside outputs": ("  steps:\n    - {id: a, type: shell, with: {x: '${result.stdout}'}}\n", "WF-1202", 6, 39,
                               "only outputs: can read", ""),
    "placeholder in variables": ("  variables: {x: 'a', y: {z: 'b-${params.app}'}}\n  steps: [{id: a, type: shell}]\n",
                                 "WF-1208", 5, 33, "variable 'y/z' holds a placeholder; variables are constants", ""),
    "bad output expression": ("  steps:\n    - {id: a, type: shell, outputs: {n: 'size(result.lines'}}\n", "WF-1200", 6, 59,
                              "unexpected end of expression", ""),
    "result in with": ("  steps:\n    - {id: a, type: shell, when: 'result.ok'}\n", "WF-1202", 6, 35,
                       "only outputs: can read", ""),
    "index outside for_each": ("  steps:\n    - {id: a, type: shell, with: {n: '${index}'}}\n", "WF-1202", 6, 39,
                               "uses 'index' outside a for_each step", ""),
    "unknown param in cel": ("  params: {count: {type: integer}}\n  steps:\n    - id: a\n      type: shell\n"
                             '      when: "size(params.regions) > 0 && params.cnt > 1"\n', "WF-1203", 9, 19,
                             "names the param 'regions', which the workflow does not declare", "declared: count"),
    "unknown param in placeholder": ('  params: {count: {type: integer}}\n  steps:\n    - id: a\n      type: shell\n'
                                     '      with: {n: "${params.cuont}"}\n', "WF-1203", 9, 18, "param 'cuont'",
                                     "did you mean 'count'?"),
    "step not upstream": ("  steps:\n    - {id: a, type: shell}\n    - {id: b, type: shell, with: {x: '${steps.a.outputs.y}'}}\n",
                          "WF-1204", 7, 39, "reads the outputs of 'a', which step 'b' does not depend on",
                          "add 'a' to the depends_on of 'b'"),
    "step not upstream in cel": (
        "  steps:\n    - {id: a, type: shell}\n    - {id: b, type: shell, depends_on: [a]}\n"
        "    - {id: c, type: shell, depends_on: [a], when: \"steps['b'].outputs.ok\"}\n",
        "WF-1204", 8, 52, "reads the outputs of 'b', which step 'c' does not depend on", ""),
    "unknown step in reference": ("  steps:\n    - {id: a, type: shell, with: {x: '${steps.nope.outputs.y}'}}\n",
                                  "WF-1204", 6, 39, "'nope', which is not a step of this workflow", ""),
    "unknown variable": ("  variables: {region: eu}\n  steps:\n    - {id: a, type: shell, with: {x: '${vars.regoin}'}}\n",
                         "WF-1205", 7, 39, "variable 'regoin'", "did you mean 'region'?"),
    "unknown workflow field": ("  steps:\n    - {id: a, type: shell, with: {x: '${workflow.runid}'}}\n", "WF-1206", 6, 39,
                               "workflow.runid", "did you mean 'run_id'?"),
    "incomplete step reference": (
        "  steps:\n    - {id: a, type: shell}\n    - {id: b, type: shell, depends_on: [a], with: {x: '${steps.a.image}'}}\n",
        "WF-1207", 7, 56, "a step has only outputs and state", "steps.a.outputs.image"),
    "placeholder in shell script": ('  params: {app: {type: string}}\n  steps:\n    - id: a\n      type: shell\n'
                                    '      with: {script: "echo ${params.app}", env: {APP: "${params.app}"}}\n',
                                    "WF-1209", 9, 22, "placeholder in its shell script",
                                    'pass values to the script through `env:` and refer to them as "$NAME"'),
    "placeholder in compensation script": (
        '  params: {app: {type: string}}\n  steps:\n    - id: a\n      type: shell\n      on_failure:\n'
        '        - id: undo\n          type: shell\n          with:\n            script: |\n'
        '              echo undo\n              rm -rf "/srv/${params.app}"\n',
        "WF-1209", 13, 21, "step 'undo' has a ${...} placeholder", "through `env:`"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_definitions_give_a_finding_at_the_right_place(name):
    body, code, line, column, message, hint = BAD[name]
    wf, findings = load_workflow(HEAD + body, "wf.yaml", workflows=["db-lifecycle"])
    assert wf is None
    matching = [f for f in findings if f.code == code]
    assert matching, findings
    f = matching[0]
    assert (f.line, f.column) == (line, column), f
    assert message in f.message and hint in f.hint, f
    assert f.severity == "error" and f.file == "wf.yaml" and f.code in CODES
    assert isinstance(f, Finding) and str(f).startswith(f"wf.yaml:{line}:{column}: error {code}: ")


@pytest.mark.parametrize("text,code,message", [
    ("- a\n- b\n", "WF-1014", "not a mapping"),
    (HEAD + "  steps: [{id: a, type: shell}]\n---\n" + HEAD, "WF-1011", "more than one YAML document"),
    (HEAD.replace("innominatus.dev/v1", "innominatus.dev/v2") + "  steps: [{id: a, type: shell}]\n", "WF-1006",
     "apiVersion 'innominatus.dev/v2' is not supported"),
    (HEAD.replace("Workflow", "Flow") + "  steps: [{id: a, type: shell}]\n", "WF-1006", "kind 'Flow'"),
    (HEAD.replace('"1.0.0"', "1.0") + "  steps: [{id: a, type: shell}]\n", "WF-1004", "1.0 is not of type 'string'"),
    ("a: &a [1]\n" + "".join(f"b{i}: *a\n" for i in range(60)), "WF-1012", "aliases"),
    ("x: " + "[" * 70 + "]" * 70 + "\n", "WF-1012", "nested deeper"),
])
def test_bad_documents(text, code, message):
    wf, findings = load_workflow(text)
    assert wf is None
    assert findings[0].code == code and message in findings[0].message, findings


def test_bytes_limits():
    assert load_workflow(b"\xff\xfe")[1][0].code == "WF-1013"
    assert load_workflow(b"x: '" + b"a" * 600_000 + b"'")[1][0].code == "WF-1010"
    wf, findings = load_workflow((HEAD + "  steps: [{id: a, type: shell}]\n").encode())
    assert findings == [] and wf.name == "demo"


def test_every_problem_is_reported_sorted_by_position():
    _, findings = load_workflow(_wf("""\
          steps:
            - {id: a, type: shel, depends_on: [zz]}
            - {id: b, type: workflow, when: "params.x >"}
        """))
    assert [(f.code, f.line, f.column) for f in findings] == [
        ("WF-1103", 6, 21), ("WF-1101", 6, 40), ("WF-1104", 7, 7), ("WF-1200", 7, 48)]


def test_step_type_registry_and_catalog_are_pluggable():
    text = HEAD + "  steps:\n    - {id: a, type: custom.thing}\n    - {id: b, type: workflow, uses: anything}\n"
    wf, findings = load_workflow(text, step_types=[*KNOWN_STEP_TYPES, "custom.thing"])
    assert findings == [] and wf.steps[0].type == "custom.thing"  # no catalog given: any `uses` is accepted
    _, findings = load_workflow(text, step_types=["shell"], workflows=[])
    assert {(f.code, f.line) for f in findings} == {("WF-1103", 6), ("WF-1103", 7), ("WF-1106", 7)}


def test_references_that_are_allowed():
    wf, findings = load_workflow(_wf("""\
          params:
            app: {type: string, default: shop}
            cfg: {type: object, required: [a], properties: {a: {type: string}}}
          variables: {image: "registry.test/app", price: "$$5"}
          steps:
            - {id: a, type: shell, outputs: {out: "${result.stdout}"}}
            - {id: b, type: shell, depends_on: [a]}
            - id: c
              type: shell
              depends_on: [b]
              for_each: "steps.a.outputs.list.filter(x, x != params.app)"
              when: "item != '' && steps['a'].state == 'succeeded' && params.cfg.a == 'x' && vars.image != ''"
              with: {x: "${steps.a.outputs.out}", y: "${item}", z: "${resources.db.host}", e: "$${not.a.placeholder}"}
              outputs: {n: "${result.n} for ${item} (${index}) in ${workflow.environment}", lines: "size(result.lines)"}
              on_failure:
                - {id: undo-c, type: shell, with: {x: "${steps.c.outputs.n} ${steps.a.outputs.out}"}}
                - {id: undo-c2, type: shell, with: {x: "${steps.undo-c.outputs.ok}"}}
        """))
    assert findings == [], findings
    assert wf.params[1] == ParamDef("cfg", {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}})


def test_shell_scripts_take_values_only_through_env():
    ok = _wf("""\
          params: {app: {type: string}}
          steps:
            - id: a
              type: shell
              with:
                script: 'echo "deploying $APP" "$${HOME}" $1'
                env: {APP: "${params.app}"}
              on_failure:
                - {id: undo, type: shell, with: {script: 'echo "undo $APP"', env: {APP: "${params.app}"}}}
            - {id: b, type: http, depends_on: [a], with: {script: "${params.app}"}}
        """)
    wf, findings = load_workflow(ok)
    assert findings == [], findings
    assert wf.steps[0].with_["script"] == 'echo "deploying $APP" "$${HOME}" $1'

    bad = _wf("""\
          params: {app: {type: string}}
          steps:
            - id: a
              type: shell
              with: {script: 'echo "$APP" ${params.app}'}
              on_failure:
                - {id: undo, type: shell, with: {script: "echo ${steps.a.outputs.x}"}}
        """)
    wf, findings = load_workflow(bad)
    assert wf is None
    assert [(f.code, f.line, f.column, f.pointer) for f in findings] == [
        ("WF-1209", 9, 22, "/spec/steps/0/with/script"),
        ("WF-1209", 11, 50, "/spec/steps/0/on_failure/0/with/script"),
    ], findings


def test_compensation_cannot_read_later_siblings():
    _, findings = load_workflow(_wf("""\
          steps:
            - id: a
              type: shell
              on_failure:
                - {id: u1, type: shell, with: {x: "${steps.u2.outputs.ok}"}}
                - {id: u2, type: shell}
        """))
    assert [(f.code, f.line, f.column) for f in findings] == [("WF-1204", 9, 44)]


def test_findings_are_workflow_findings_with_the_score_shape():
    _, findings = load_workflow(HEAD + "  steps: [{id: a, type: shel}]\n", "x.yaml")
    assert isinstance(findings[0], WorkflowFinding)
    assert findings[0].to_dict() == {
        "code": "WF-1103", "severity": "error", "message": "step 'a' has the unknown type 'shel'",
        "pointer": "/spec/steps/0/type", "line": 5, "column": 25, "hint": "did you mean 'shell'?", "file": "x.yaml"}


# --- bind_params ------------------------------------------------------------------------------------

PARAMS_WF, _ = load_workflow(_wf("""\
      params:
        app: {type: string, pattern: "^[a-z0-9-]+$", required: true}
        replicas: {type: integer, minimum: 1, default: 2}
        regions: {type: array, items: {type: string}, default: [eu-1]}
        debug: {type: boolean}
        owner: {type: string, format: email}
      steps: [{id: a, type: shell}]
    """))


@pytest.mark.parametrize("given,expected", [
    ({"app": "shop"}, {"app": "shop", "replicas": 2, "regions": ["eu-1"]}),
    ({"app": "shop", "replicas": 5, "debug": True}, {"app": "shop", "replicas": 5, "regions": ["eu-1"], "debug": True}),
    ({"app": "a", "regions": [], "owner": "x@example.test"}, {"app": "a", "replicas": 2, "regions": [], "owner": "x@example.test"}),
])
def test_bind_params(given, expected):
    assert bind_params(PARAMS_WF, given) == expected


@pytest.mark.parametrize("given,problems", [
    ({}, [("app", "required param is missing")]),
    ({"app": "Shop!"}, [("app", "does not match")]),
    ({"app": "shop", "replicas": 0}, [("replicas", "less than the minimum of 1")]),
    ({"app": "shop", "replicas": "3"}, [("replicas", "is not of type 'integer'")]),
    ({"app": "shop", "regions": ["eu", 1]}, [("regions[1]", "is not of type 'string'")]),
    ({"app": "shop", "owner": "nobody"}, [("owner", "is not a 'email'")]),
    ({"app": "shop", "replica": 3}, [("replica", "unknown param; did you mean 'replicas'?")]),
    ({"ap": "shop", "replicas": -1, "debug": "yes"},
     [("ap", "unknown param"), ("app", "required param is missing"), ("replicas", "minimum"), ("debug", "boolean")]),
])
def test_bind_params_reports_every_problem_by_name(given, problems):
    with pytest.raises(ParamsError) as caught:
        bind_params(PARAMS_WF, given)
    error = caught.value
    assert [name for name, _ in error.problems] == [name for name, _ in problems]
    for (_, got), (name, want) in zip(error.problems, problems):
        assert want in got, (name, got)
        assert name in error.message
    assert error.reason == "WORKFLOW_PARAMS_INVALID"
    assert [v.field for v in error.violations] == [f"params.{name}" for name, _ in problems]


def test_bind_params_coerces_command_line_strings():
    got = bind_params(PARAMS_WF, {"app": "shop", "replicas": "3", "debug": "true", "regions": "[eu-1, us-2]"}, coerce=True)
    assert got == {"app": "shop", "replicas": 3, "debug": True, "regions": ["eu-1", "us-2"]}
    assert bind_params(PARAMS_WF, {"app": "123"}, coerce=True)["app"] == "123"  # strings stay strings
    with pytest.raises(ParamsError):
        bind_params(PARAMS_WF, {"app": "shop", "replicas": "three"}, coerce=True)


def test_the_documented_example_loads():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "workflows.md").read_text()
    example = doc.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    wf, findings = load_workflow(example, "docs/workflows.md", workflows=["db-lifecycle"])
    assert findings == [] and wf.name == "deploy-app" and [s.id for s in wf.steps] == ["build", "deploy", "gate", "migrate"]
