"""Structural checks of Kubernetes manifests, without a cluster or the Kubernetes client.

What ``kubectl apply --dry-run=client`` would refuse, or what would fail only once a pod starts: missing required
fields, names that are not DNS labels, quantities Kubernetes cannot parse, env entries with neither a value nor a
source, a misspelt container field (``envfrom``), a Deployment or Service whose selector matches no pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")

API_VERSIONS = {
    "Job": "batch/v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "ServiceAccount": "v1",
    "Secret": "v1",
    # Argo Rollouts' resources (the rollout check's hand-off)
    "Rollout": "argoproj.io/v1alpha1",
    "AnalysisTemplate": "argoproj.io/v1alpha1",
}
CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "envFrom",
    "ports",
    "resources",
    "volumeMounts",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "securityContext",
    "workingDir",
}
POD_FIELDS = {
    "containers",
    "initContainers",
    "restartPolicy",
    "serviceAccountName",
    "securityContext",
    "volumes",
    "parallelism",  # Prefect's template keeps Job fields in the pod spec; Kubernetes ignores unknown ones there
    "completions",
    "nodeSelector",
    "tolerations",
    "imagePullSecrets",
    "terminationGracePeriodSeconds",
}


def manifest_problems(doc: dict[str, Any]) -> list[str]:
    """Every structural problem of one manifest, as ``kind/name: path: what``; empty when it is sound."""
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName", "").rstrip("-")
    where = f"{kind}/{name}"
    problems: list[str] = []
    if kind not in API_VERSIONS:
        return [f"{where}: unknown kind {kind!r}"]
    if doc.get("apiVersion") != API_VERSIONS[kind]:
        problems.append(f"{where}: apiVersion {doc.get('apiVersion')!r}, expected {API_VERSIONS[kind]!r}")
    if not name or not DNS_SUBDOMAIN.match(name):
        problems.append(f"{where}: metadata.name {name!r} is not a DNS subdomain")
    problems += _labels(where, "metadata.labels", meta.get("labels"))
    spec = doc.get("spec") or {}
    if kind == "Job":
        problems += _pod_template(where, "spec.template", spec.get("template"))
    elif kind in ("Deployment", "Rollout"):
        problems += _pod_template(where, "spec.template", spec.get("template"))
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        pod_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{where}: spec.selector.matchLabels {selector} does not select the pod labels")
    elif kind == "Service":
        for i, port in enumerate(spec.get("ports") or []):
            if not isinstance(port.get("port"), int):
                problems.append(f"{where}: spec.ports[{i}].port is not a number")
        if not spec.get("ports"):
            problems.append(f"{where}: spec.ports is empty")
    elif kind == "AnalysisTemplate":
        metrics = spec.get("metrics") or []
        if not metrics:
            problems.append(f"{where}: spec.metrics is empty")
        for i, metric in enumerate(metrics):
            if not metric.get("name") or not isinstance(metric.get("provider"), dict) or not metric["provider"]:
                problems.append(f"{where}: spec.metrics[{i}] needs a name and a provider")
    elif kind == "PersistentVolumeClaim":
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if not isinstance(storage, str) or not MEMORY.match(storage):
            problems.append(f"{where}: spec.resources.requests.storage {storage!r} is not a quantity")
        if not spec.get("accessModes"):
            problems.append(f"{where}: spec.accessModes is empty")
    return problems


def unselected_services(docs: Iterable[dict[str, Any]]) -> list[str]:
    """Services whose selector matches the pods of no Deployment among ``docs``."""
    docs = list(docs)
    pod_labels = [
        ((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        for d in docs
        if d.get("kind") == "Deployment"
    ]
    return [
        d["metadata"]["name"]
        for d in docs
        if d.get("kind") == "Service"
        and not any(
            all(labels.get(k) == v for k, v in (d["spec"].get("selector") or {}).items()) for labels in pod_labels
        )
    ]


def _labels(where: str, path: str, labels: Any) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"{where}: {path} is not a mapping"]
    return [f"{where}: {path}.{k} = {v!r} is not a label value" for k, v in labels.items() if not isinstance(v, str)]


def _pod_template(where: str, path: str, template: Any) -> list[str]:
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return [f"{where}: {path}.spec is missing"]
    problems = _labels(where, f"{path}.metadata.labels", (template.get("metadata") or {}).get("labels"))
    spec = template["spec"]
    problems += [f"{where}: {path}.spec.{key} is not a pod field" for key in sorted(set(spec) - POD_FIELDS)]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [*problems, f"{where}: {path}.spec.containers is empty"]
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for i, container in enumerate(containers):
        problems += _container(where, f"{path}.spec.containers[{i}]", container, volumes)
    return problems


def _container(where: str, path: str, container: dict[str, Any], volumes: set[str]) -> list[str]:
    problems = [f"{where}: {path}.{key} is not a container field" for key in sorted(set(container) - CONTAINER_FIELDS)]
    if not DNS_LABEL.match(str(container.get("name", ""))):
        problems.append(f"{where}: {path}.name {container.get('name')!r} is not a DNS label")
    if not isinstance(container.get("image"), str) or not container["image"]:
        problems.append(f"{where}: {path}.image is missing")
    for field in ("command", "args"):
        value = container.get(field)
        if value is not None and not (isinstance(value, list) and all(isinstance(a, str) for a in value)):
            problems.append(f"{where}: {path}.{field} is not a list of strings")
    for i, env in enumerate(container.get("env") or []):
        if not ENV_NAME.match(str(env.get("name", ""))):
            problems.append(f"{where}: {path}.env[{i}].name {env.get('name')!r} is not a variable name")
        if ("value" in env) == ("valueFrom" in env):
            problems.append(f"{where}: {path}.env[{i}] needs exactly one of value and valueFrom")
        elif "value" in env and not isinstance(env["value"], str):
            problems.append(f"{where}: {path}.env[{i}].value is not a string")
    for i, source in enumerate(container.get("envFrom") or []):
        refs = [source.get(k) for k in ("secretRef", "configMapRef") if k in source]
        if len(refs) != 1 or not DNS_SUBDOMAIN.match(str((refs[0] or {}).get("name", ""))):
            problems.append(f"{where}: {path}.envFrom[{i}] needs one secretRef or configMapRef with a name")
    resources = container.get("resources") or {}
    for section in set(resources) - {"requests", "limits"}:
        problems.append(f"{where}: {path}.resources.{section} is not requests or limits")
    for section in ("requests", "limits"):
        for resource, quantity in (resources.get(section) or {}).items():
            pattern = CPU if resource == "cpu" else MEMORY
            if not isinstance(quantity, str) or not pattern.match(quantity):
                problems.append(f"{where}: {path}.resources.{section}.{resource} {quantity!r} is not a quantity")
    for i, port in enumerate(container.get("ports") or []):
        if not isinstance(port.get("containerPort"), int):
            problems.append(f"{where}: {path}.ports[{i}].containerPort is not a number")
    for i, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            problems.append(f"{where}: {path}.volumeMounts[{i}] names no volume of the pod: {mount.get('name')!r}")
    return problems
