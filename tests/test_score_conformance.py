"""Score v1b1 conformance: our validator against the reference material in ../shared/reference.

1. Every Score file under ../shared/reference is accepted (the deprecated sample with its upgrade
   warning).
2. A property-based corpus (hypothesis) of generated and mutated documents: our SCHEMA-LEVEL
   verdict equals the verdict of the official schema (score-spec's score-v1b1.json, validated
   with jsonschema's Draft 2020-12 validator, format checks off as the official tools do).

   "Schema level" means: an error finding from the parsing and schema steps (codes SCORE-10xx).
   The documents are generated freely — placeholders, `before`, `files.source` and all — and the
   codes the official schema cannot express are left out of the comparison: the semantic checks
   (SCORE-11xx, which only run once the schema passed) and the upgrade errors of the deprecated
   list forms (SCORE-1021 duplicate target, SCORE-1022 item without a target; score-go refuses
   those when it upgrades, its schema does not). Generating freely keeps those parts of the
   schema under test instead of avoiding them.

   Every disagreement is printed (document, YAML text, both verdicts, our findings) before the
   test fails. The runs are derandomized, so CI sees the same corpus every time.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from innominatus.specs.score import parsing
from innominatus.specs.validation import SCHEMA_PATH, validate_score
from tests.helpers.shared import shared_reference

UPGRADE_ERRORS = {"SCORE-1021", "SCORE-1022"}
EXAMPLES = 350  # per corpus; two corpora, so 700 documents


# -- 1. the reference files ------------------------------------------------------------------------


def _score_files() -> list[Path]:
    root = shared_reference()
    files = []
    for path in sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.yml")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "apiVersion: score.dev/" in text:  # Score workloads only, not other YAML that may sit there
            files.append(path)
    return files


def _missing_sources(path: Path, document: dict) -> set[str]:
    """Pointers of files.source entries whose file the reference directory does not ship (the
    official score-full.yaml sample names a file.txt that is not part of the spec repository)."""
    out = set()
    for cname, container in (document.get("containers") or {}).items():
        files = container.get("files") or {}
        for target, spec in files.items():
            source = spec.get("source") if isinstance(spec, dict) else None
            if isinstance(source, str) and not (path.parent / source).exists():
                pointer = "/".join(["", "containers", cname, "files", target.replace("~", "~0").replace("/", "~1"),
                                    "source"])
                out.add(pointer)
    return out


def test_reference_directory_holds_score_files():
    files = _score_files()
    assert len(files) >= 15, files
    assert any(p.name == "score-full.yaml" for p in files)
    assert any(p.name == "score-deprecated-files-and-volumes.yaml" for p in files)


def test_every_reference_score_file_is_accepted():
    problems = []
    for path in _score_files():
        result = validate_score(path.read_bytes(), str(path))
        assert result.document is not None, (path, result.findings)
        allowed = _missing_sources(path, result.document)
        errors = [f for f in result.errors if not (f.code == "SCORE-1121" and f.pointer in allowed)]
        if errors:
            problems.append((str(path), [f.to_dict() for f in errors]))
    assert not problems, json.dumps(problems, indent=2)


def test_deprecated_sample_is_accepted_with_the_upgrade_warning():
    path = shared_reference("score-spec", "samples", "score-deprecated-files-and-volumes.yaml")
    result = validate_score(path.read_text(encoding="utf-8"), str(path))
    assert result.valid, result.findings
    upgrades = [f for f in result.findings if f.code == "SCORE-1020"]
    assert [(f.severity, f.pointer, f.line) for f in upgrades] == [
        ("warning", "/containers/main/files", 11),
        ("warning", "/containers/main/volumes", 14),
    ]
    assert "map keyed by target" in upgrades[0].hint and "/mnt/some-path" in upgrades[0].hint
    main = result.document["containers"]["main"]
    assert main["files"] == {"/mnt/some-path": {"content": "my content here"}}
    assert main["volumes"] == {"/mnt/vol": {"source": "some-volume"}}


def test_files_with_relative_sources_are_checked_against_their_directory():
    path = shared_reference("score-compose-examples", "03-files", "score.yaml")
    result = validate_score(path.read_text(encoding="utf-8"), str(path))
    assert result.valid, result.findings
    assert result.document["containers"]["hello"]["files"]["/fileA.txt"] == {"source": "fileA.txt"}


def test_score_full_sample_reads_every_field():
    path = shared_reference("score-spec", "samples", "score-full.yaml")
    result = validate_score(path.read_text(encoding="utf-8"), str(path))
    assert not [f for f in result.errors if f.code.startswith("SCORE-10")], result.findings
    doc = result.document
    assert result.workload == "example-workload-name123"
    assert doc["metadata"]["extra-key"] == "extra-value"
    one = doc["containers"]["container-one1"]
    assert one["files"]["/my/file"] == {"mode": "0600", "source": "file.txt"}
    assert one["resources"]["limits"] == {"cpu": "0.24", "memory": "128M"}
    assert one["readinessProbe"]["httpGet"]["httpHeaders"] == [{"name": "SOME_HEADER", "value": "some-value-here"}]
    assert doc["service"]["ports"]["port-one"] == {"port": 1000, "protocol": "TCP", "targetPort": 10000}
    assert doc["resources"]["resource-three"] == {"type": "Type-Three", "id": "shared-type-three"}


# -- 2. the property-based corpus ------------------------------------------------------------------


@pytest.fixture(scope="module")
def official() -> jsonschema.Draft202012Validator:
    schema = json.loads(shared_reference("score-spec", "score-v1b1.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)  # no format_checker: format is an annotation


def test_our_schema_is_not_the_official_file():
    ours = SCHEMA_PATH.read_text(encoding="utf-8")
    assert "score.dev/schemas" not in ours and "innominatus" in ours


# Strings: printable and not, unicode, nothing that cannot be UTF-8 (surrogates).
_chars = st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF)
text = st.text(_chars, max_size=10)
label = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,8}[a-z0-9]\Z")


def mostly(good, bad):
    """``good`` about nineteen times in twenty: a generated document is then often entirely valid."""
    return st.integers(0, 19).flatmap(lambda i: bad if i == 7 else good)  # 7: hypothesis favours the ends


near_label = mostly(label, st.one_of(
    st.sampled_from(["a", "-ab", "ab-", "Ab", "a_b", "a" * 64, "a" * 63, "0", "00", "a.b", "", "a b", "ab\n"]), text))
placeholder = st.sampled_from(["${metadata.name}", "${resources.db.host}", "$${literal}", "${resources.}", "${oops",
                               "${resources.db.port}", "${metadata.annotations.x\\.io/y}", "$$", "${}"])
string = st.one_of(text, placeholder, st.sampled_from(["yes", "no", "on", "true", "1", "0o17", "1e3", "~", "null",
                                                       ".inf", "0x1F", "2024-01-01", "# x", "- a", "a: b", "'", '"']))
scalar = st.one_of(string, st.integers(-3, 70000), st.booleans(), st.none(),
                   st.floats(allow_nan=False, allow_infinity=False, width=32))
anything = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(string, inner, max_size=3)), max_leaves=6)
port = mostly(st.integers(1, 65535), st.sampled_from([0, -1, 65536, 80.0, 8080.5, "80", True]))
memory = mostly(st.sampled_from(["128M", "1.5Gi", "10Gi", "0.5", "64", "125Ki", "1E"]),
                st.sampled_from(["1e3", "128m", "-1", "1.", "Mi", "01"]))
cpu = mostly(st.sampled_from(["1", "250m", "0.5", "1000m", "2.25"]), st.sampled_from(["1.", ".5", "abc", "-1", "1.5m", "1Ki"]))
mode = mostly(st.sampled_from(["0644", "644", "0600", "777"]), st.sampled_from(["0999", "rw", "0o644", "06444"]))
annotation_key = mostly(st.one_of(st.sampled_from(["ab", "example.com/key", "x.io/y", "Upper_case.2",
                                                   "prefix.com/Another-Key_Annotation.2"]),
                                  st.from_regex(r"\A([a-z]{2,5}\.[a-z]{2,3}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,6}[A-Za-z0-9]\Z")),
                        st.one_of(st.sampled_from(["a", "-x", "a/b/c", "k" * 70, "bad..dom/x", "ok/"]), text))


def _maybe(draw, strategy, p_keep=st.booleans()):
    return draw(strategy) if draw(p_keep) else None


@st.composite
def file_spec(draw, in_list: bool):
    spec = {}
    kinds = draw(mostly(st.sampled_from([["content"], ["source"], ["binaryContent"]]),
                        st.sampled_from([[], ["content", "source"], ["binaryContent", "content"]])))
    for kind in kinds:
        spec[kind] = draw(st.sampled_from(["hello ${metadata.name}", "", "cfg/app.conf", "aGVsbG8=", "../x"])
                          if kind != "binaryContent" else st.sampled_from(["aGVsbG8=", "", "!!"]))
    if draw(st.booleans()):
        spec["mode"] = draw(mode)
    if draw(st.integers(0, 3)) == 0:
        spec["noExpand"] = draw(st.one_of(st.booleans(), st.just("true")))
    if in_list and draw(st.integers(0, 7)) > 0:
        spec["target"] = draw(st.sampled_from(["/etc/a.conf", "/etc/b.conf", "/tmp/x", ""]))
    elif not in_list and draw(st.integers(0, 19)) == 0:
        spec["target"] = "/etc/again"
    return spec


@st.composite
def volume_spec(draw, in_list: bool):
    spec = {}
    if draw(st.integers(0, 15)) > 0:
        spec["source"] = draw(st.sampled_from(["data", "${resources.vol}", "", "other"]))
    if draw(st.booleans()):
        spec["path"] = draw(st.sampled_from(["/sub", "", "x"]))
    if draw(st.booleans()):
        spec["readOnly"] = draw(st.one_of(st.booleans(), st.just("no")))
    if in_list and draw(st.integers(0, 7)) > 0:
        spec["target"] = draw(st.sampled_from(["/data", "/cache", ""]))
    elif not in_list and draw(st.integers(0, 19)) == 0:
        spec["target"] = "/again"
    return spec


def _mounts(draw, spec, targets):
    if draw(st.integers(0, 3)) == 0:  # deprecated list form
        return draw(st.lists(spec(in_list=True), min_size=0, max_size=3))
    return draw(st.dictionaries(targets, spec(in_list=False), max_size=3))


@st.composite
def probe(draw):
    out = {}
    kinds = draw(mostly(st.sampled_from([["httpGet"], ["exec"], ["httpGet", "exec"]]), st.just([])))
    if "httpGet" in kinds:
        get = {"port": draw(port), "path": draw(st.sampled_from(["/healthz", "", "x"]))}
        if draw(st.booleans()):
            get["host"] = draw(mostly(st.sampled_from(["localhost", "127.0.0.1"]), st.just("")))
        if draw(st.booleans()):
            get["scheme"] = draw(mostly(st.sampled_from(["HTTP", "HTTPS"]), st.sampled_from(["http", "TCP"])))
        if draw(st.booleans()):
            get["httpHeaders"] = draw(st.lists(st.fixed_dictionaries(
                {"name": mostly(st.sampled_from(["X-Token", "A_b-1"]), st.sampled_from(["bad name", ""])),
                 "value": mostly(st.sampled_from(["v", "${metadata.name}"]), st.just(""))}), max_size=2))
        out["httpGet"] = get
    if "exec" in kinds:
        out["exec"] = {"command": draw(st.lists(string, max_size=3))}
    return out


@st.composite
def container(draw, names):
    c = {"image": draw(mostly(st.sampled_from(["nginx:1.27", "busybox", ".", "repo/app@sha256:abcd", "nginx:latest"]),
                              st.one_of(st.just(""), text)))}
    if draw(st.booleans()):
        c["command"] = draw(st.lists(string, max_size=3))
    if draw(st.booleans()):
        c["args"] = draw(st.lists(string, max_size=3))
    if draw(st.booleans()):
        c["variables"] = draw(st.dictionaries(
            mostly(st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,6}\Z"), st.sampled_from(["", "A=B", "=", "a b", "é"])),
            string, max_size=3))
    if draw(st.booleans()):
        c["files"] = _mounts(draw, file_spec, st.sampled_from(["/etc/app.conf", "/x", "relative", ""]))
    if draw(st.integers(0, 2)) == 0:
        c["volumes"] = _mounts(draw, volume_spec, st.sampled_from(["/data", "/cache", ""]))
    if draw(st.integers(0, 2)) == 0:
        limits = {k: draw(v) for k, v in (("memory", memory), ("cpu", cpu)) if draw(st.booleans())}
        requests = {k: draw(v) for k, v in (("memory", memory), ("cpu", cpu)) if draw(st.booleans())}
        c["resources"] = {k: v for k, v in (("limits", limits), ("requests", requests)) if draw(st.booleans())}
    if draw(st.integers(0, 2)) == 0:
        c["livenessProbe"] = draw(probe())
    if draw(st.integers(0, 2)) == 0:
        c["readinessProbe"] = draw(probe())
    if draw(st.integers(0, 3)) == 0:
        c["before"] = draw(st.dictionaries(st.one_of(st.sampled_from(names), near_label), mostly(
            st.fixed_dictionaries({"ready": st.sampled_from(["started", "healthy", "complete"])}),
            st.sampled_from([{}, {"ready": "started", "extra": 1}, {"ready": "ready"}])), max_size=2))
    return c


@st.composite
def resource(draw):
    r = {"type": draw(mostly(st.sampled_from(["postgres", "redis", "Resource-One", "dns", "kafka-topic"]),
                             st.one_of(st.sampled_from(["a", "x#y", "-bad"]), near_label)))}
    if draw(st.booleans()):
        r["class"] = draw(mostly(st.sampled_from(["default", "Large", "small-1"]), st.sampled_from(["a", "x_y"])))
    if draw(st.booleans()):
        r["id"] = draw(mostly(st.sampled_from(["main-db", "shared.db", "a--b", "x.y-z"]),
                              st.sampled_from(["a", "A", "a..b", "-x"])))
    if draw(st.booleans()):
        r["metadata"] = {"annotations": draw(st.dictionaries(annotation_key, string, max_size=2))}
        if draw(st.booleans()):
            r["metadata"]["extra"] = draw(anything)
    if draw(st.booleans()):
        r["params"] = draw(st.dictionaries(string, anything, max_size=3))
    return r


@st.composite
def document(draw):
    names = draw(st.lists(near_label, min_size=1, max_size=3, unique=True))
    doc = {"apiVersion": draw(mostly(st.just("score.dev/v1b1"),
                                     st.sampled_from(["score.dev/v1b2", "score.dev/v1b1\n", "v1b1", ""])))}
    metadata = {"name": draw(near_label)}
    if draw(st.booleans()):
        metadata["annotations"] = draw(st.dictionaries(annotation_key, string, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        metadata[draw(st.sampled_from(["extra-key", "innominatus.dev/golden-path", "labels"]))] = draw(anything)
    doc["metadata"] = metadata
    if draw(st.booleans()):
        ports = draw(st.dictionaries(near_label, st.fixed_dictionaries(
            {"port": port}, optional={"protocol": mostly(st.sampled_from(["TCP", "UDP"]), st.sampled_from(["SCTP", "tcp"])),
                                      "targetPort": port}),
            max_size=2))
        doc["service"] = {"ports": ports}
    doc["containers"] = {name: draw(container(names)) for name in names}
    if draw(st.booleans()):
        doc["resources"] = draw(st.dictionaries(near_label, resource(), max_size=3))
    return doc


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


@st.composite
def mutated(draw):
    """A document with one to three random edits anywhere in it: a key dropped, a value of
    another type or shape, an unknown key added, a list or map emptied."""
    doc = copy.deepcopy(draw(document()))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["drop", "replace", "add-key", "empty", "add-known-top"]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        target = parent[path[-1]] if path else doc
        if op == "drop" and path:
            del parent[path[-1]]
        elif op == "replace" and path:
            parent[path[-1]] = draw(anything)
        elif op == "add-key" and isinstance(target, dict):
            target[draw(st.one_of(string, st.sampled_from(["varaibles", "environment", "workflows", "target"])))] = draw(anything)
        elif op == "empty" and isinstance(target, (dict, list)):
            target.clear()
        elif op == "add-known-top":
            doc[draw(st.sampled_from(["service", "resources", "metadata", "containers"]))] = draw(anything)
    return doc


class _Dumper(yaml.SafeDumper):
    """Block-style YAML in which every string that our YAML 1.2 resolver would read as something
    else (0o17, 1e3, ...) is quoted, on top of what PyYAML quotes for YAML 1.1."""


def _represent_str(dumper, value):
    if any(c in value for c in "\x85\u2028\u2029"):  # line breaks to YAML 1.1 readers: escape them
        style = '"'
    elif (not isinstance(parsing.resolve_plain(value), str) or value != value.strip()) and "\n" not in value:
        style = "'"
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _render(doc, as_json: bool) -> str:
    if as_json:
        return json.dumps(doc)  # \u escapes: raw C0/C1 controls are not allowed in YAML text
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def _ours(text: str) -> tuple[bool, list]:
    result = validate_score(text)
    schema_errors = [f for f in result.errors if f.code.startswith("SCORE-10") and f.code not in UPGRADE_ERRORS]
    return not schema_errors, schema_errors


def _compare(official, strategy, label_: str, at_least: dict) -> None:
    seen: Counter = Counter()
    disagreements: list[str] = []
    parse_mismatches: list[str] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(doc=strategy, as_json=st.booleans())
    def check(doc, as_json):
        text = _render(doc, as_json)
        parsed = parsing.parse(text)
        if getattr(parsed, "document", None) != doc:
            parse_mismatches.append(f"{text!r}\n  parsed: {getattr(parsed, 'document', parsed)!r}\n  wanted: {doc!r}")
            return
        theirs = official.is_valid(doc)
        ours, errors = _ours(text)
        seen[(ours, theirs)] += 1
        if ours != theirs:
            official_errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in official.iter_errors(doc)]
            disagreements.append(
                f"--- document: {json.dumps(doc, ensure_ascii=False)}\n--- YAML:\n{text}\n"
                f"--- official: {'valid' if theirs else 'invalid'} {official_errors}\n"
                f"--- ours: {'valid' if ours else 'invalid'} {[(f.code, f.pointer, f.message) for f in errors]}\n")

    check()
    total = sum(seen.values())
    print(f"{label_}: {total} documents compared; (ours, official) verdicts: {dict(seen)}")
    for d in disagreements:
        print(d)
    for m in parse_mismatches[:20]:
        print("round trip changed the document:", m)
    assert not parse_mismatches, f"{len(parse_mismatches)} documents did not survive YAML round trip"
    assert not disagreements, f"{len(disagreements)} of {total} documents got a verdict different from the official schema"
    assert total >= 300
    for verdict, count in at_least.items():  # the corpus exercises both verdicts
        assert seen[(verdict, verdict)] >= count, seen


def test_generated_documents_match_the_official_verdict(official):
    _compare(official, document(), "generated", {True: 80, False: 80})


def test_mutated_documents_match_the_official_verdict(official):
    _compare(official, mutated(), "mutated", {True: 30, False: 150})
