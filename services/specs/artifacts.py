"""Rendering a deployment set's artifacts: Kubernetes manifests and a Docker Compose file.

:func:`render_artifacts` takes the inputs of a deployment set (application, environment,
workloads, resources -- a :class:`~innominatus.specs.deployment_sets.DeploymentSet` or a map with
those keys) and returns ``{relative path: text}``. The output is deterministic: keys sorted,
containers, variables, ports, files and routes in sorted order, so identical inputs give
identical bytes (and the set the same content hash).

Placeholders are resolved with :func:`innominatus.specs.render.render_workload`. A secret output
is handed to it as its ``secret://`` reference, so a variable (or file) using a secret carries the
reference, never the value; such values are detected with
:func:`innominatus.resources.secrets.is_secret_ref` and never written inline:

- Kubernetes: the variable becomes ``valueFrom.secretKeyRef`` (Secret ``<workload>-secrets``,
  key ``<VAR>``); a file becomes a key of that Secret mounted at its path. The Secret itself is
  not in Git: ``secret-refs.yaml`` is an ``ExternalSecret`` (external-secrets.io/v1beta1) saying
  which store, path and key each value comes from (and a template when the value mixes text and
  secrets, e.g. a connection URL); the operator in the cluster creates the Secret.
- Compose: the variable becomes ``${NAME}`` (``NAME`` = ``<WORKLOAD>_<CONTAINER>_<VAR>``,
  upper-cased, non-alphanumerics as ``_``), to be filled from an env file generated at deploy
  time; ``x-innominatus-secrets`` in the file lists each ``NAME`` as parts (literal
  text and references), and :func:`compose_env_file` builds that env file from a resolver.

Every object is labelled ``app.kubernetes.io/name: <workload>``,
``app.kubernetes.io/part-of: <application>``, ``app.kubernetes.io/managed-by: innominatus`` and
annotated ``innominatus.dev/deployment-inputs: sha256:<hash>``: :func:`workload_inputs_hash`, the
hash of what that workload's manifests are rendered from (not the set's content hash, which covers
the artifacts and so cannot appear in them; and per workload, so a change to one workload leaves
the other workloads' manifests byte for byte the same).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import yaml

from innominatus.kit.secretrefs import is_secret_ref
from innominatus.specs.deployment_sets import DeploymentSetError, inputs_hash, resource_for, thaw
from innominatus.specs.render import RenderError, render_workload

__all__ = ["ArtifactError", "INPUTS_ANNOTATION", "compose_env_file", "render_artifacts", "secret_parts",
           "workload_inputs_hash"]

INPUTS_ANNOTATION = "innominatus.dev/deployment-inputs"
SECRET_API = "external-secrets.io/v1beta1"
SECRET_STORE_KIND = "ClusterSecretStore"

# A secret reference inside a longer text (e.g. postgres://app:secret://.../db#password@host):
# the key part stops at characters a key cannot contain.
_REF_IN_TEXT = re.compile(r"secret://[a-z][a-z0-9-]{0,31}/[A-Za-z0-9_./-]+?(?:\?version=[0-9]+)?#[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class ArtifactError(ValueError):
    """The inputs cannot be rendered (placeholders, files given by path, bad ports...)."""


# -- helpers ---------------------------------------------------------------------------------


def secret_parts(value: str) -> list[tuple[bool, str]]:
    """``value`` split into (is_ref, text) pieces; a value that is one reference is one piece."""
    if is_secret_ref(value):
        return [(True, value)]
    parts: list[tuple[bool, str]] = []
    last = 0
    for match in _REF_IN_TEXT.finditer(value):
        if not is_secret_ref(match.group(0)):
            continue
        if match.start() > last:
            parts.append((False, value[last:match.start()]))
        parts.append((True, match.group(0)))
        last = match.end()
    if last < len(value):
        parts.append((False, value[last:]))
    return parts


def _k8s_text(value: str) -> str:
    """Kubernetes expands ``$(VAR)`` in env values, command and args and reduces ``$$`` to ``$``:
    escape when either appears, so the container receives the text as written."""
    return value.replace("$", "$$") if "$(" in value or "$$" in value else value


def _has_ref(value: str) -> bool:
    return any(is_ref for is_ref, _ in secret_parts(value))


def _dump(*documents: Any) -> str:
    return "---\n".join(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True,
                                       width=4096) for doc in documents)


def _dns(text: str, limit: int = 63) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", str(text).lower()).strip("-")[:limit].strip("-")
    return name or "x"


def _key(text: str) -> str:
    """A ConfigMap/Secret key for a file path: ``/etc/app.conf`` -> ``etc-app.conf``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "file"


def _env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", "_".join(parts).upper())


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json  # noqa: PLC0415

    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ArtifactError(f"{where}: {value!r} is not a port number")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ArtifactError(f"{where}: {value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ArtifactError(f"{where}: {port} is not a port number (1-65535)")
    return port


def _inputs(set_inputs: Any) -> tuple[str, str, dict, dict]:
    if isinstance(set_inputs, Mapping):
        get = set_inputs.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(set_inputs, name, default)
    application, environment = get("application"), get("environment")
    workloads, resources = thaw(get("workloads") or {}), thaw(get("resources") or {})
    if not isinstance(application, str) or not application or not isinstance(environment, str) or not environment:
        raise ArtifactError("the inputs need an application and an environment")
    return application, environment, workloads, resources


class _Secrets:
    """The secret values of one workload: Secret key -> template pieces; store refs named once."""

    def __init__(self) -> None:
        self.keys: dict[str, list[tuple[bool, str]]] = {}

    def add(self, key: str, value: str) -> None:
        self.keys[key] = secret_parts(value)

    def refs(self) -> list[str]:
        return sorted({text for parts in self.keys.values() for is_ref, text in parts if is_ref})


def _ref_name(ref: str, taken: dict[str, str]) -> str:
    from innominatus.kit.secretrefs import parse_ref  # noqa: PLC0415

    parsed = parse_ref(ref)
    base = "s_" + re.sub(r"[^a-z0-9]+", "_", f"{parsed.path}_{parsed.key}".lower()).strip("_")
    name, n = base, 2
    while name in taken.values():
        name, n = f"{base}_{n}", n + 1
    taken[ref] = name
    return name


def _go_literal(text: str) -> str:
    """Literal text inside a Go template: ``{{`` must not start an action."""
    return text.replace("{{", '{{ "{{" }}')


# -- Kubernetes ------------------------------------------------------------------------------


def _probe(probe: Any) -> dict | None:
    if not isinstance(probe, dict):
        return None
    out: dict[str, Any] = {}
    http = probe.get("httpGet")
    if isinstance(http, dict):
        get: dict[str, Any] = {"path": http.get("path", "/"), "port": http.get("port")}
        for key in ("host", "scheme"):
            if http.get(key):
                get[key] = http[key]
        headers = http.get("httpHeaders")
        if isinstance(headers, list) and headers:
            get["httpHeaders"] = [{"name": h.get("name"), "value": h.get("value")} for h in headers if isinstance(h, dict)]
        out["httpGet"] = get
    execute = probe.get("exec")
    if isinstance(execute, dict):
        out["exec"] = {"command": list(execute.get("command") or [])}
    return out or None


def _resources(spec: Any) -> dict | None:
    if not isinstance(spec, dict):
        return None
    out = {kind: {k: _text(v) for k, v in _map(spec.get(kind)).items()} for kind in ("limits", "requests")
           if _map(spec.get(kind))}
    return out or None


def _metadata(name: str, workload: str, application: str, digest: str, kind_labels: dict | None = None) -> dict:
    labels = {"app.kubernetes.io/name": workload, "app.kubernetes.io/part-of": application,
              "app.kubernetes.io/managed-by": "innominatus", **(kind_labels or {})}
    return {"name": name, "labels": labels, "annotations": {INPUTS_ANNOTATION: f"sha256:{digest}"}}


def _kubernetes(application: str, environment: str, workload: str, document: dict, rendered: dict,
                routes: list[tuple[str, dict]], digest: str) -> dict[str, str]:
    files_cm: dict[str, str] = {}
    binary_cm: dict[str, str] = {}
    secrets = _Secrets()
    containers: list[dict] = []
    volumes: dict[str, dict] = {}
    secret_name = f"{workload}-secrets"
    files_name = f"{workload}-files"
    base = f"/workloads/{workload}"

    for cname in sorted(_map(rendered.get("containers"))):
        container = _map(rendered["containers"][cname])
        spec: dict[str, Any] = {"name": cname, "image": container.get("image")}
        if container.get("image") in (None, "."):
            raise ArtifactError(f"{base}/containers/{cname}/image: a deployment needs a built image, not "
                                f"{container.get('image')!r} (replace '.' with the image your build produced)")
        if container.get("command"):
            spec["command"] = [_k8s_text(str(x)) for x in container["command"]]
        if container.get("args"):
            spec["args"] = [_k8s_text(str(x)) for x in container["args"]]
        env = []
        for var in sorted(_map(container.get("variables"))):
            value = _text(container["variables"][var])
            if _has_ref(value):
                key = var if var not in secrets.keys else f"{cname}.{var}"
                secrets.add(key, value)
                env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
            else:
                env.append({"name": var, "value": _k8s_text(value)})
        if env:
            spec["env"] = env
        resources = _resources(container.get("resources"))
        if resources:
            spec["resources"] = resources
        for probe in ("livenessProbe", "readinessProbe"):
            mapped = _probe(container.get(probe))
            if mapped:
                spec[probe] = mapped
        mounts: list[dict] = []
        for target in sorted(_map(container.get("files"))):
            fspec = _map(container["files"][target])
            where = f"{base}/containers/{cname}/files/{target}"
            key = _key(f"{cname}-{target}")
            mode = fspec.get("mode")
            if "source" in fspec and "content" not in fspec and "binaryContent" not in fspec:
                raise ArtifactError(f"{where}: files given by `source` must be read into `content` before "
                                    "a deployment set is built (a set holds content, not paths)")
            if isinstance(fspec.get("content"), str) and _has_ref(fspec["content"]):
                secrets.add(f"file.{key}", fspec["content"])
                volume, item_key = "secret-files", f"file.{key}"
                volumes.setdefault(volume, {"name": volume, "secret": {"secretName": secret_name, "items": []}})
                items = volumes[volume]["secret"]["items"]
            else:
                if isinstance(fspec.get("binaryContent"), str):
                    binary_cm[key] = fspec["binaryContent"]
                else:
                    files_cm[key] = _text(fspec.get("content", ""))
                volume, item_key = "files", key
                volumes.setdefault(volume, {"name": volume, "configMap": {"name": files_name, "items": []}})
                items = volumes[volume]["configMap"]["items"]
            item = {"key": item_key, "path": item_key}
            if isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3,4}", mode):
                item["mode"] = int(mode, 8)
            items.append(item)
            mounts.append({"name": volume, "mountPath": target, "subPath": item_key, "readOnly": True})
        for target in sorted(_map(container.get("volumes"))):
            vspec = _map(container["volumes"][target])
            source = _text(vspec.get("source", ""))
            claim = _dns(source)
            volume = f"vol-{claim}"[:63].rstrip("-")
            volumes.setdefault(volume, {"name": volume, "persistentVolumeClaim": {"claimName": claim}})
            mount = {"name": volume, "mountPath": target}
            if vspec.get("path"):
                mount["subPath"] = str(vspec["path"]).lstrip("/")
            if vspec.get("readOnly"):
                mount["readOnly"] = True
            mounts.append(mount)
        if mounts:
            spec["volumeMounts"] = mounts
        containers.append(spec)

    for volume in volumes.values():
        source = volume.get("configMap") or volume.get("secret")
        if source:
            source["items"] = sorted(source["items"], key=lambda i: i["key"])

    selector = {"app.kubernetes.io/name": workload, "app.kubernetes.io/part-of": application}
    template_meta = {"labels": dict(_metadata(workload, workload, application, digest)["labels"]),
                     "annotations": {INPUTS_ANNOTATION: f"sha256:{digest}"}}
    pod: dict[str, Any] = {"containers": containers}
    if volumes:
        pod["volumes"] = [volumes[name] for name in sorted(volumes)]
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": _metadata(workload, workload, application, digest),
                  "spec": {"selector": {"matchLabels": selector}, "template": {"metadata": template_meta, "spec": pod}}}
    out = {f"k8s/{workload}/deployment.yaml": _dump(deployment)}

    ports = _map(_map(rendered.get("service")).get("ports"))
    if ports:
        service_ports = []
        for name in sorted(ports):
            pspec = _map(ports[name])
            port = _port(pspec.get("port"), f"{base}/service/ports/{name}/port")
            service_ports.append({"name": _dns(name, 15), "port": port,
                                  "targetPort": _port(pspec.get("targetPort", port), f"{base}/service/ports/{name}/targetPort"),
                                  "protocol": str(pspec.get("protocol") or "TCP").upper()})
        service = {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(workload, workload, application, digest),
                   "spec": {"selector": selector, "ports": service_ports}}
        out[f"k8s/{workload}/service.yaml"] = _dump(service)

    if files_cm or binary_cm:
        configmap: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": _metadata(files_name, workload, application, digest)}
        if files_cm:
            configmap["data"] = files_cm
        if binary_cm:
            configmap["binaryData"] = binary_cm
        out[f"k8s/{workload}/configmap.yaml"] = _dump(configmap)

    if secrets.keys:
        out[f"k8s/{workload}/secret-refs.yaml"] = _dump(_external_secret(secret_name, workload, application, digest,
                                                                          secrets))

    if routes:
        ingresses = []
        for ref, outputs in routes:
            where = f"{base}/resources/{ref}"
            host = outputs.get("host")
            if not isinstance(host, str) or not host:
                raise ArtifactError(f"{where}: the route has no `host` output")
            path = outputs.get("path") or "/"
            port = _port(outputs.get("port"), f"{where} (output `port`)")
            ingresses.append({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": _metadata(_dns(f"{workload}-{ref}"), workload, application, digest),
                "spec": {"rules": [{"host": host, "http": {"paths": [{
                    "path": str(path), "pathType": "Prefix",
                    "backend": {"service": {"name": workload, "port": {"number": port}}}}]}}]},
            })
        out[f"k8s/{workload}/ingress.yaml"] = _dump(*ingresses)
    return out


def _external_secret(name: str, workload: str, application: str, digest: str, secrets: _Secrets) -> dict:
    from innominatus.kit.secretrefs import parse_ref  # noqa: PLC0415

    taken: dict[str, str] = {}
    data = []
    stores = set()
    for ref in secrets.refs():
        parsed = parse_ref(ref)
        stores.add(parsed.store)
        remote: dict[str, Any] = {"key": parsed.path, "property": parsed.key}
        if parsed.version is not None:
            remote["version"] = str(parsed.version)
        data.append({"secretKey": _ref_name(ref, taken), "remoteRef": remote,
                     "sourceRef": {"storeRef": {"kind": SECRET_STORE_KIND, "name": f"innominatus-{parsed.store}"}}})
    template = {}
    for key in sorted(secrets.keys):
        template[key] = "".join(f"{{{{ .{taken[text]} }}}}" if is_ref else _go_literal(text)
                                for is_ref, text in secrets.keys[key])
    metadata = _metadata(name, workload, application, digest)
    # The references in plain sight, for people and tools reading the repository.
    metadata["annotations"]["innominatus.dev/secret-refs"] = ",".join(secrets.refs())
    return {
        "apiVersion": SECRET_API, "kind": "ExternalSecret", "metadata": metadata,
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": SECRET_STORE_KIND, "name": f"innominatus-{sorted(stores)[0]}"},
            "target": {"name": name, "creationPolicy": "Owner",
                       "template": {"engineVersion": "v2", "data": template}},
            "data": data,
        },
    }


# -- Compose -------------------------------------------------------------------------------


def _compose_escape(text: str) -> str:
    return text.replace("$", "$$")  # compose interpolates ${...}: a literal $ is $$


def _compose(application: str, workloads: list[tuple[str, dict]]) -> str:
    services: dict[str, Any] = {}
    named_volumes: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    compose_secrets: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    skipped: list[str] = []

    def secret_var(name: str, value: str) -> None:
        parts = secret_parts(value)
        # Parts, not a template: nothing here can be mistaken for interpolation ($ is escaped as $$).
        refs[name] = [{"ref": text} if is_ref else {"text": _compose_escape(text)} for is_ref, text in parts]

    for workload, rendered in workloads:
        names = sorted(_map(rendered.get("containers")))
        ports = _map(_map(rendered.get("service")).get("ports"))
        for index, cname in enumerate(names):
            container = _map(rendered["containers"][cname])
            service_name = f"{workload}-{cname}"
            service: dict[str, Any] = {"image": container.get("image"),
                                       "labels": {"app.kubernetes.io/name": workload,
                                                  "app.kubernetes.io/part-of": application}}
            if container.get("command"):
                service["entrypoint"] = [_compose_escape(str(x)) for x in container["command"]]
            if container.get("args"):
                service["command"] = [_compose_escape(str(x)) for x in container["args"]]
            environment = {}
            for var in sorted(_map(container.get("variables"))):
                value = _text(container["variables"][var])
                if _has_ref(value):
                    name = _env_name(workload, cname, var)
                    secret_var(name, value)
                    environment[var] = "${" + name + "}"
                else:
                    environment[var] = _compose_escape(value)
            if environment:
                service["environment"] = environment
            if index == 0 and ports:
                service["ports"] = [
                    {"target": _port(_map(ports[p]).get("targetPort", _map(ports[p]).get("port")), p),
                     "published": _port(_map(ports[p]).get("port"), p),
                     "protocol": str(_map(ports[p]).get("protocol") or "TCP").lower()}
                    for p in sorted(ports)]
            elif index > 0:
                service["network_mode"] = f"service:{workload}-{names[0]}"  # share localhost, like a pod
            mounts = []
            for target in sorted(_map(container.get("volumes"))):
                vspec = _map(container["volumes"][target])
                volume = _dns(_text(vspec.get("source", "")))
                named_volumes[volume] = {}
                mount = {"type": "volume", "source": volume, "target": target}
                if vspec.get("readOnly"):
                    mount["read_only"] = True
                if vspec.get("path"):
                    mount["volume"] = {"subpath": str(vspec["path"]).lstrip("/")}
                mounts.append(mount)
            if mounts:
                service["volumes"] = mounts
            file_configs, file_secrets = [], []
            for target in sorted(_map(container.get("files"))):
                fspec = _map(container["files"][target])
                key = _key(f"{workload}-{cname}-{target}")
                entry: dict[str, Any] = {"source": key, "target": target}
                if isinstance(fspec.get("mode"), str) and re.fullmatch(r"0?[0-7]{3,4}", fspec["mode"]):
                    entry["mode"] = int(fspec["mode"], 8)
                content = fspec.get("content")
                if isinstance(content, str) and _has_ref(content):
                    name = _env_name(workload, cname, "FILE", target)
                    secret_var(name, content)
                    compose_secrets[key] = {"environment": name}
                    file_secrets.append(entry)
                elif isinstance(content, str):
                    configs[key] = {"content": _compose_escape(content)}
                    file_configs.append(entry)
                else:
                    skipped.append(f"{service_name}:{target} (binaryContent: Kubernetes only)")
            if file_configs:
                service["configs"] = file_configs
            if file_secrets:
                service["secrets"] = file_secrets
            services[service_name] = service

    compose: dict[str, Any] = {"name": application, "services": services}
    if named_volumes:
        compose["volumes"] = named_volumes
    if configs:
        compose["configs"] = configs
    if compose_secrets:
        compose["secrets"] = compose_secrets
    if refs:
        compose["x-innominatus-secrets"] = refs
    if skipped:
        compose["x-innominatus-skipped"] = skipped
    header = ("# Generated by innominatus. Secret values are not in this file: each ${NAME} comes from an env file\n"
              "# generated at deploy time from the references under x-innominatus-secrets (never committed).\n")
    return header + _dump(compose)


def compose_env_file(compose_text: str, resolve: Callable[[str], str]) -> str:
    """The deploy-time env file for ``compose.yaml``: ``NAME=value`` for every entry of
    ``x-innominatus-secrets`` (single-quoted), each reference replaced by ``resolve(ref)``. The result holds
    plaintext secrets: write it with mode 0600 next to the compose file, never to Git."""
    data = yaml.safe_load(compose_text) or {}
    lines = []
    for name, parts in sorted(_map(data.get("x-innominatus-secrets")).items()):
        value = "".join(resolve(part["ref"]) if "ref" in part else str(part.get("text", "")).replace("$$", "$")
                        for part in parts or [])
        if "\n" in value or "'" in value:  # never echo the value: it is a secret
            raise ArtifactError(f"{name}: a value with a newline or a single quote cannot go in a compose env file")
        lines.append(f"{name}='{value}'")  # single quotes: compose does not interpolate the value
    return "\n".join(lines) + ("\n" if lines else "")


# -- entry point ---------------------------------------------------------------------------


def _outputs_for(workload: str, document: dict, resources: dict) -> tuple[dict, list[tuple[str, dict]]]:
    outputs: dict[str, dict] = {}
    routes: list[tuple[str, dict]] = []
    for ref, declared in sorted(_map(document.get("resources")).items()):
        try:
            found = resource_for(resources, workload, ref, _map(declared))
        except DeploymentSetError as exc:
            raise ArtifactError(str(exc)) from None
        if found is None:
            continue  # render reports any placeholder that needs it
        spec = found[1]
        values = {**thaw(_map(spec.get("outputs"))), **thaw(_map(spec.get("secret_refs")))}
        outputs[ref] = values
        if (_map(declared).get("type") or spec.get("type")) == "route":
            routes.append((ref, values))
    return outputs, routes


def workload_inputs_hash(application: str, environment: str, workload: str, document: Any, outputs: Any) -> str:
    """sha256 of what one workload's manifests are rendered from: the application, environment,
    workload name, its Score document and the outputs (and secret references) of the resources it
    uses. The manifests carry it as ``innominatus.dev/deployment-inputs``."""
    return inputs_hash(application, environment, {workload: document}, {"outputs": outputs})


def render_artifacts(set_inputs: Any) -> dict[str, str]:
    """``{relative path: text}`` for these inputs: ``k8s/<workload>/{deployment,service,configmap,
    secret-refs,ingress}.yaml`` and ``compose.yaml``. Raises :class:`ArtifactError`."""
    application, environment, workloads, resources = _inputs(set_inputs)
    artifacts: dict[str, str] = {}
    rendered_all: list[tuple[str, dict]] = []
    for workload in sorted(workloads):
        document = workloads[workload]
        outputs, routes = _outputs_for(workload, document, resources)
        digest = workload_inputs_hash(application, environment, workload, document, outputs)
        try:
            rendered = render_workload(document, outputs)
        except RenderError as exc:
            raise ArtifactError(f"workload {workload}: {exc}") from None
        rendered_all.append((workload, rendered))
        artifacts.update(_kubernetes(application, environment, workload, document, rendered, routes, digest))
    artifacts["compose.yaml"] = _compose(application, rendered_all)
    return dict(sorted(artifacts.items()))

