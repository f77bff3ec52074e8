"""The hand-off to Argo Rollouts: ``deploy/kubernetes/`` and ``flywheel rollout serve`` as a ``web`` metric calls it.

1. The YAML has the structure Argo documents (``AnalysisTemplate``: ``spec.args``, ``spec.metrics[]`` with a
   ``provider.web`` of ``url`` / ``jsonPath`` / ``timeoutSeconds``, ``successCondition`` and ``failureCondition``;
   the ``Rollout``'s analysis steps name the template and give every argument it declares without a value), and
   the service's command lines are valid ``flywheel`` commands.
2. The template is rendered the way Argo renders it (``{{args.NAME}}`` from the step's arguments, else the
   template's defaults) and its URL is asked of a real ``flywheel rollout serve`` process reading observed spans.
   The answer is read as Argo's web provider reads it: a non-2xx status is an *Error* measurement; else the
   ``jsonPath`` gives ``result`` and the two conditions classify it (both set: neither true is *Inconclusive*).
   A healthy canary is *Successful*, a failing one *Failed*, one with too little traffic *Inconclusive*.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.main import get_command

from cli.main import app
from simulators.threaded import free_port
from tests.support.rollout_traffic import BASELINE, traffic, write_jsonl

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
ARGO_API = "argoproj.io/v1alpha1"
# Argo's Metric fields and web provider fields (pkg/apis/rollouts/v1alpha1, docs/features/analysis.md, web.md)
METRIC_FIELDS = {
    "name",
    "interval",
    "initialDelay",
    "count",
    "successCondition",
    "failureCondition",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "consecutiveSuccessLimit",
    "provider",
}
WEB_FIELDS = {
    "url",
    "method",
    "headers",
    "body",
    "jsonBody",
    "timeoutSeconds",
    "jsonPath",
    "insecure",
    "authentication",
}
DURATION = re.compile(r"^\d+(ms|s|m|h)$")
ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
GOOD, BAD, RARE = "acme/support-1b-lora", "acme/support-1b-broken", "acme/support-1b-rare"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _template() -> dict[str, Any]:
    (template,) = _documents("analysis-template.yaml")
    return template


def _rollout() -> dict[str, Any]:
    (rollout,) = _documents("rollout-example.yaml")
    return rollout


def _analysis_steps(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    return [step["analysis"] for step in rollout["spec"]["strategy"]["canary"]["steps"] if "analysis" in step]


def render(value: Any, args: dict[str, str]) -> Any:
    """Argo's argument substitution: ``{{args.NAME}}`` anywhere in a string (an unknown name is an error)."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            if match.group(1) not in args:
                raise KeyError(f"argument {match.group(1)!r} has no value")
            return args[match.group(1)]

        return ARG.sub(sub, value)
    if isinstance(value, dict):
        return {k: render(v, args) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, args) for v in value]
    return value


def arguments(template: dict[str, Any], given: list[dict[str, str]]) -> dict[str, str]:
    """The template's defaults overridden by the step's arguments (what the AnalysisRun gets)."""
    values = {a["name"]: a["value"] for a in template["spec"].get("args", []) if "value" in a}
    return values | {a["name"]: a["value"] for a in given}


def json_path(expression: str, body: Any) -> Any:
    """The Kubernetes JSONPath subset the template uses: ``{$.a.b}``."""
    match = re.fullmatch(r"\{\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}", expression)
    assert match, f"unsupported jsonPath {expression!r}"
    for key in match.group(1).strip(".").split("."):
        body = body[key]
    return body


def condition(expression: str, result: Any) -> bool:
    """The expressions the template uses: ``result == "literal"``."""
    match = re.fullmatch(r'result == "([^"]*)"', expression)
    assert match, f"unsupported condition {expression!r}"
    return bool(result == match.group(1))


def measurement(metric: dict[str, Any], answer: httpx.Response) -> str:
    """How Argo classifies one web measurement (metricproviders/webmetric, utils/evaluate)."""
    if not answer.is_success:
        return "Error"
    result = json_path(metric["provider"]["web"]["jsonPath"], answer.json())
    if condition(metric["failureCondition"], result):
        return "Failed"
    if condition(metric["successCondition"], result):
        return "Successful"
    return "Inconclusive"


# --------------------------------------------------------------------------------------------------
# The YAML
# --------------------------------------------------------------------------------------------------


def test_the_analysis_template_has_argos_structure() -> None:
    template = _template()
    assert (template["apiVersion"], template["kind"]) == (ARGO_API, "AnalysisTemplate")
    assert template["metadata"]["name"] == "flywheel-rollout-check"
    declared = {a["name"] for a in template["spec"]["args"]}
    assert declared == {"canary-model", "baseline-model", "window", "check-url"}
    (metric,) = template["spec"]["metrics"]
    assert set(metric) <= METRIC_FIELDS and {"name", "provider"} <= set(metric)
    assert list(metric["provider"]) == ["web"]  # exactly one provider
    web = metric["provider"]["web"]
    assert set(web) <= WEB_FIELDS and web["url"].startswith("{{args.check-url}}/check?")
    assert isinstance(web["timeoutSeconds"], int) and web["jsonPath"] == "{$.decision}"
    assert set(ARG.findall(web["url"])) == declared  # every argument used, none undeclared
    assert metric["successCondition"] == 'result == "promote"'
    assert metric["failureCondition"] == 'result == "rollback"'
    for key in ("count", "failureLimit", "inconclusiveLimit", "consecutiveErrorLimit"):
        assert isinstance(metric[key], int) and metric[key] >= 0
    assert "interval" not in metric or DURATION.match(metric["interval"])


def test_the_example_rollout_runs_the_template_with_every_argument() -> None:
    rollout, template = _rollout(), _template()
    assert (rollout["apiVersion"], rollout["kind"]) == (ARGO_API, "Rollout")
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert all(len(step) == 1 and next(iter(step)) in {"setWeight", "pause", "analysis"} for step in steps)
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [10, 50, 100]
    required = {a["name"] for a in template["spec"]["args"] if "value" not in a}
    declared = {a["name"] for a in template["spec"]["args"]}
    analyses = _analysis_steps(rollout)
    assert len(analyses) == 2
    for analysis in analyses:
        assert [t["templateName"] for t in analysis["templates"]] == [template["metadata"]["name"]]
        given = {a["name"] for a in analysis["args"]}
        assert required <= given <= declared
        rendered = render(template["spec"]["metrics"], arguments(template, analysis["args"]))
        assert "{{" not in str(rendered)
    models = {
        e["value"]
        for c in rollout["spec"]["template"]["spec"]["containers"]
        for e in c["env"]
        if e["name"] == "CHAT_MODEL"
    }
    assert models == {a["value"] for s in analyses for a in s["args"] if a["name"] == "canary-model"}


def test_the_service_runs_valid_flywheel_commands_on_the_port_the_template_calls() -> None:
    service, deployment = _documents("rollout-check-service.yaml")
    assert (service["kind"], deployment["kind"]) == ("Service", "Deployment")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    check_port = next(p for p in service["spec"]["ports"] if p["name"] == "check")["port"]
    default_url = next(a["value"] for a in _template()["spec"]["args"] if a["name"] == "check-url")
    assert default_url.endswith(
        f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{check_port}"
    )
    root = get_command(app)
    for name, path in (("check", ["rollout", "serve"]), ("otlp", ["otlp", "serve"])):
        container = containers[name]
        assert container["command"] == ["flywheel", *path]
        command: Any = root
        for part in path:
            command = command.commands[part]  # type: ignore[attr-defined]
        options = {opt for param in command.params for opt in param.opts}
        flags = [a for a in container["args"] if a.startswith("--")]
        assert flags and set(flags) <= options, (name, set(flags) - options)
    check_args = containers["check"]["args"]
    assert check_args[check_args.index("--port") + 1] == str(check_port)
    otlp_args = containers["otlp"]["args"]
    assert otlp_args[otlp_args.index("--out") + 1] == check_args[check_args.index("--traces") + 1]


# --------------------------------------------------------------------------------------------------
# The template against a real `flywheel rollout serve`
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last 15 minutes of an agent's traffic: a healthy canary, a failing one, a rare one, all beside the
    baseline."""
    path = tmp_path_factory.mktemp("argo") / "spans.jsonl"
    start = time.time() - 900
    write_jsonl(path, traffic(0, start_s=start, duration_s=880, rate=1.0, canary_share=0.3, canary=GOOD))
    bad = traffic(1, start_s=start, duration_s=880, rate=0.15, canary_share=1.0, canary=BAD, canary_errors=0.6)
    write_jsonl(path, bad, append=True, first_index=100_000)
    rare = traffic(2, start_s=start, duration_s=880, rate=0.01, canary_share=1.0, canary=RARE)
    write_jsonl(path, rare, append=True, first_index=200_000)
    return path


def _serve(traces: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    command = [sys.executable, "-m", "cli.main", "rollout", "serve", "--port", str(port), "--traces", str(traces)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"rollout serve did not start: {process.communicate()[1]}") from None
            time.sleep(0.2)


@pytest.fixture(scope="module")
def served(spans: Path) -> Iterator[str]:
    process, url = _serve(spans)
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0 and "stopped" in err, err


def _measure(check_url: str, canary: str) -> tuple[str, httpx.Response]:
    template, analysis = _template(), _analysis_steps(_rollout())[0]
    given = [a if a["name"] != "canary-model" else {"name": a["name"], "value": canary} for a in analysis["args"]]
    args = arguments(template, [*given, {"name": "check-url", "value": check_url}])
    (metric,) = render(template["spec"]["metrics"], args)
    answer = httpx.get(metric["provider"]["web"]["url"], timeout=metric["provider"]["web"]["timeoutSeconds"])
    return measurement(metric, answer), answer


def test_a_healthy_canary_is_a_successful_measurement(served: str) -> None:
    phase, answer = _measure(served, GOOD)
    body = answer.json()
    assert phase == "Successful", body["reasons"]
    assert (body["decision"], body["canary_model"], body["baseline_model"]) == ("promote", GOOD, BASELINE)
    assert body["window"]["seconds"] == 1800.0  # the example's 30m
    assert body["traffic"]["canary"] > 150 and body["traffic"]["baseline"] > 400


def test_a_failing_canary_is_a_failed_measurement(served: str) -> None:
    phase, answer = _measure(served, BAD)
    assert phase == "Failed"
    assert answer.json()["slis"]["canary"]["workflow"]["error_rate"] > 0.4


def test_a_canary_with_too_little_traffic_is_inconclusive(served: str) -> None:
    phase, answer = _measure(served, RARE)
    assert phase == "Inconclusive"
    assert any("not enough data" in r for r in answer.json()["reasons"])


def test_queries_it_cannot_judge_are_errors_not_failures(served: str, tmp_path: Path) -> None:
    assert httpx.get(f"{served}/check", params={"baseline": BASELINE}).status_code == 400
    assert httpx.get(f"{served}/analysis", params={"canary": GOOD}).status_code == 404
    process, url = _serve(tmp_path / "not-written-yet.jsonl")
    try:
        phase, answer = _measure(url, GOOD)
        assert (phase, answer.status_code) == ("Error", 503)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
