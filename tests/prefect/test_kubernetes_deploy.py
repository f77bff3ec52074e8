"""The Kubernetes deployment, rendered and validated without a cluster: the work pool's base job template, the
production deployments ``flywheel deploy --pool POOL --image IMAGE`` makes of ``prefect.yaml``, the Job each of
their flow runs becomes, the Dockerfile they run and the manifests in deploy/kubernetes/."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.schema_tools import is_valid_schema, validate
from prefect.utilities.templating import apply_values, find_placeholders
from typer.testing import CliRunner

from cli.main import app
from deployments.deploy import deploy, render_prefect_file
from deployments.kubernetes import JOB_TEMPLATE, ImageRef, KubernetesTarget, kubernetes_definitions, referenced_blocks
from deployments.settings import DEFAULT_SERVER_CONFIG, PROJECT_ROOT, DeployError, load_server_config
from tests.support.kubernetes_manifests import manifest_problems, unselected_services
from tests.support.prefect_server import SessionPrefectServer

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
IMAGE = "registry.example.com:5000/platform/agent-flywheel:0.1.0"
BLOCK_SLUGS = {"nemo-platform", "flywheel-log-store", "mlflow-tracking", "agent-target"}


def _template() -> dict[str, Any]:
    return json.loads(JOB_TEMPLATE.read_text(encoding="utf-8"))


def _render(target: KubernetesTarget, **kwargs: Any) -> dict[str, Any]:
    path = render_prefect_file(PREFECT_YAML, pool="flywheel-k8s", kubernetes=target, **kwargs)
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def _worker_job(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The Job manifest a Kubernetes worker submits for a flow run of a deployment with these job variables: the
    template's defaults, the deployment's variables and what the worker sets itself, put in the same way
    (``apply_values``), ``env`` made a list of name/value pairs as the worker does."""
    properties = template["variables"]["properties"]
    values = {name: spec["default"] for name, spec in properties.items() if spec.get("default") is not None}
    values.update(copy.deepcopy(job_variables))
    values.update(
        name="flywheel-nightly",
        labels={"prefect.io/flow-run-id": "0b5b7c3e"},
        command="prefect flow-run execute",
        env={**values.get("env", {}), "PREFECT__FLOW_RUN_ID": "0b5b7c3e"},
    )
    config = apply_values(copy.deepcopy(template["job_configuration"]), values)
    manifest: dict[str, Any] = config["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
    container["args"] = shlex.split(container["args"])
    return manifest


def _dockerfile() -> str:
    return (PROJECT_ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_base_job_template_is_one_prefect_accepts_and_every_variable_takes_effect() -> None:
    template = _template()
    validate_base_job_template(template)  # what the Prefect server checks on `work-pool create --base-job-template`
    is_valid_schema(template["variables"], preprocess=False)
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    assert validate(defaults, template["variables"], ignore_required=True) == []
    used = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    declared = set(template["variables"]["properties"])
    assert used == declared, f"declared but unused: {declared - used}, used but undeclared: {used - declared}"
    assert {"image", "env_secret", "cpu_request", "memory_limit"} <= used


def test_production_deployments_name_the_image_their_resources_and_the_production_blocks() -> None:
    data = _render(KubernetesTarget(image=IMAGE, block_name="prod-eu"))
    definitions = kubernetes_definitions(yaml.safe_load(PREFECT_YAML.read_text()), "prefect.yaml")
    schema = _template()["variables"]
    assert data["build"] is None and data["push"] is None  # nothing is built unless asked
    assert data["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/agent-flywheel"}}]
    assert len(data["deployments"]) == len(yaml.safe_load(PREFECT_YAML.read_text())["deployments"])
    for deployment in data["deployments"]:
        job_variables = deployment["work_pool"]["job_variables"]
        assert deployment["work_pool"]["name"] == "flywheel-k8s"
        assert job_variables["image"] == IMAGE
        expected = definitions.resources_of(deployment["entrypoint"]).model_dump()
        assert {k: job_variables[k] for k in expected} == expected
        # what the Prefect server checks when a deployment is created on the pool
        assert validate(job_variables, schema, ignore_required=True, allow_none_with_default=True) == []
        blocks = {k: v for k, v in deployment["parameters"].items() if k.endswith("_block")}
        assert blocks and set(blocks.values()) == {"prod-eu"}
    flywheel = next(d for d in data["deployments"] if d["name"] == "nightly")["work_pool"]["job_variables"]
    watch = next(d for d in data["deployments"] if d["name"] == "every-15m")["work_pool"]["job_variables"]
    assert flywheel["memory_limit"] != watch["memory_limit"]  # per entrypoint, not one size for all
    assert referenced_blocks(data) == sorted((slug, "prod-eu") for slug in BLOCK_SLUGS)


def test_the_local_deployments_are_unchanged() -> None:
    local = yaml.safe_load(render_prefect_file(PREFECT_YAML).read_text())
    assert local["build"] is None and local["push"] is None and "pull" not in local
    heartbeats = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}}  # how the reaper tells a killed run
    assert all(
        d["work_pool"] == {"name": "flywheel-local", "work_queue_name": "default", "job_variables": heartbeats}
        for d in local["deployments"]
    )
    assert referenced_blocks(local) == sorted((slug, "local") for slug in BLOCK_SLUGS)


def test_each_flow_run_becomes_a_job_the_worker_accepts_with_the_image_secret_and_resources() -> None:
    template = _template()
    data = _render(KubernetesTarget(image=IMAGE))
    uid = re.search(r"^USER (\d+)", _dockerfile(), re.MULTILINE)
    assert uid is not None
    for deployment in data["deployments"]:
        job_variables = deployment["work_pool"]["job_variables"]
        job = _worker_job(template, job_variables)
        assert not find_placeholders(json.dumps(job)), "a placeholder was left in the Job"
        assert manifest_problems(job) == []
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        # what Prefect's Kubernetes worker requires of the manifest it is given
        assert (job["apiVersion"], job["kind"], pod["restartPolicy"], container["name"]) == (
            "batch/v1",
            "Job",
            "Never",
            "prefect-job",
        )
        assert (pod["parallelism"], pod["completions"]) == (1, 1)
        assert container["image"] == IMAGE
        assert container["args"] == ["prefect", "flow-run", "execute"]
        assert container["envFrom"] == [{"secretRef": {"name": "flywheel-env"}}]
        assert {"name": "PREFECT__FLOW_RUN_ID", "value": "0b5b7c3e"} in container["env"]
        assert {"name": "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "value": "60"} in container["env"]  # for the reaper
        assert container["resources"] == {
            "requests": {"cpu": job_variables["cpu_request"], "memory": job_variables["memory_request"]},
            "limits": {"cpu": job_variables["cpu_limit"], "memory": job_variables["memory_limit"]},
        }
        assert pod["securityContext"]["runAsUser"] == int(uid[1])  # the image's user: runAsNonRoot holds
        prefect_home = re.search(r"PREFECT_HOME=(\S+)", _dockerfile())
        assert prefect_home is not None and {"name": "PREFECT_HOME", "value": prefect_home[1]} in container["env"]
        assert isinstance(job["spec"]["ttlSecondsAfterFinished"], int)


def test_the_job_of_a_pool_without_defaults_drops_what_is_not_set() -> None:
    template = _template()
    for name in ("cpu_limit", "memory_limit"):
        del template["variables"]["properties"][name]["default"]
    job = _worker_job(template, {"image": IMAGE})
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {}  # not `None`: Kubernetes would refuse a null quantity
    assert manifest_problems(job) == []


def test_build_asks_prefect_docker_to_build_and_push_the_image_the_deployments_run() -> None:
    data = _render(KubernetesTarget(image=IMAGE, build=True))
    (build,) = data["build"]
    (push,) = data["push"]
    step = build["prefect_docker.deployments.steps.build_docker_image"]
    assert (step["image_name"], step["tag"], step["dockerfile"]) == (
        "registry.example.com:5000/platform/agent-flywheel",
        "0.1.0",
        "Dockerfile",
    )
    assert step["requires"].startswith("prefect-docker")
    pushed = push["prefect_docker.deployments.steps.push_docker_image"]
    assert pushed["image_name"] == f"{{{{ {step['id']}.image_name }}}}"
    assert pushed["tag"] == f"{{{{ {step['id']}.tag }}}}"
    assert {d["work_pool"]["job_variables"]["image"] for d in data["deployments"]} == {f"{{{{ {step['id']}.image }}}}"}


@pytest.mark.parametrize(
    ("image", "build", "message"),
    [
        ("Registry/Agent:1", False, "not an image reference"),
        ("registry.example.com//agent:1", False, "not an image reference"),
        ("agent:", False, "not an image reference"),
        ("registry.example.com/agent", True, "needs --image with a tag"),
        ("registry.example.com/agent:1@sha256:abc", True, "no digest"),
    ],
)
def test_an_image_that_cannot_be_deployed_is_named(image: str, build: bool, message: str) -> None:
    with pytest.raises(DeployError, match=message):
        _render(KubernetesTarget(image=image, build=build))


def test_image_references_split_at_the_tag_not_the_registry_port() -> None:
    assert ImageRef.parse("localhost:5000/agent-flywheel") == ImageRef("localhost:5000/agent-flywheel", None, None)
    assert ImageRef.parse("ghcr.io/acme/agent_flywheel:v1.2-rc@sha256:ff") == ImageRef(
        "ghcr.io/acme/agent_flywheel", "v1.2-rc", "sha256:ff"
    )


def test_a_prefect_file_without_kubernetes_definitions_names_what_is_missing(tmp_path: Path) -> None:
    data = yaml.safe_load(PREFECT_YAML.read_text())
    del data["definitions"]["kubernetes"]["resources"]["default"]
    broken = tmp_path / "prefect.yaml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError, match=r"definitions\.kubernetes\.resources: no `default`"):
        render_prefect_file(broken, pool="k8s", kubernetes=KubernetesTarget(image=IMAGE))
    data["definitions"]["kubernetes"]["resources"]["default"] = {"cpu_request": "1"}
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError, match=r"definitions\.kubernetes\.resources\.default\.memory_request"):
        render_prefect_file(broken, pool="k8s", kubernetes=KubernetesTarget(image=IMAGE))
    resources = data["definitions"]["kubernetes"]["resources"]
    resources["default"] = resources["flows/flywhel.py:flywheel"] = resources.pop("flows/flywheel.py:flywheel")
    broken.write_text(yaml.safe_dump(data))  # a misspelt entrypoint would silently get the defaults
    with pytest.raises(DeployError, match=r"no deployment has the entrypoint 'flows/flywhel\.py:flywheel'"):
        render_prefect_file(broken, pool="k8s", kubernetes=KubernetesTarget(image=IMAGE))


def test_the_image_has_the_code_where_the_deployments_look_for_it() -> None:
    dockerfile = _dockerfile()
    definitions = kubernetes_definitions(yaml.safe_load(PREFECT_YAML.read_text()), "prefect.yaml")
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE)
    assert workdir == [definitions.code_dir]
    copied = set(re.findall(r"^COPY (\S+) \./", dockerfile, re.MULTILINE))
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    packages = re.search(r"include = \[(.*?)\]", pyproject)
    assert packages is not None
    needed = {name.strip(' "*') for name in packages[1].split(",")} | {"configs", "prefect.yaml"}
    assert needed <= copied, f"not in the image: {needed - copied}"
    assert "-c requirements.lock" in dockerfile  # the tested versions
    assert not re.search(r"\[(dev|simulators|bench)", dockerfile)  # no test tools, no local stack servers
    entrypoints = {d["entrypoint"].split(":")[0] for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    assert all((PROJECT_ROOT / e).is_file() and e.split("/")[0] in copied for e in entrypoints)


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((PROJECT_ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return docs


def _parse_cli(argv: list[str]) -> str:
    """Parse ``flywheel ARGS`` as the CLI would, without running the command (a wrong option is an error); the
    command's name, e.g. ``otlp serve``."""
    assert argv[0] == "flywheel"
    command: Any = typer.main.get_command(app)  # typer's own click: no isinstance check against `click`
    args, names = argv[1:], []
    while hasattr(command, "list_commands"):
        name, args = args[0], args[1:]
        sub = command.get_command(command.context_class(command), name)
        assert sub is not None, f"flywheel has no command {name!r}"
        command, names = sub, [*names, name]
    command.make_context(" ".join(["flywheel", *names]), args)
    return " ".join(names)


def test_the_manifests_are_sound_and_run_real_commands_of_the_flows_image() -> None:
    docs = _manifests()
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Job", "ServiceAccount"} <= kinds
    accounts = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "ServiceAccount"}
    assert _template()["variables"]["properties"]["service_account_name"]["default"] in accounts
    assert [p for doc in docs for p in manifest_problems(doc)] == []
    assert unselected_services(docs) == []
    commands = []
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert container["image"].rsplit(":", 1)[0].endswith("agent-flywheel")
            commands.append(_parse_cli([*container.get("command", []), *container.get("args", [])]))
    # the trace receiver, the load generator, and the rollout check's receiver and /check for Argo Rollouts
    assert sorted(commands) == ["otlp serve", "otlp serve", "rollout serve", "sweep run"]
    templates = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "AnalysisTemplate"}
    analyses = [
        ref["templateName"]
        for doc in docs
        if doc["kind"] == "Rollout"
        for step in doc["spec"]["strategy"]["canary"]["steps"]
        for ref in (step.get("analysis") or {}).get("templates", [])
    ]
    assert analyses and set(analyses) <= templates  # the example rollout asks the flywheel's analysis


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", IMAGE], "--image needs --pool"),
        (["--pool", "flywheel-k8s", "--image", IMAGE, "--blocks"], "--blocks saves blocks pointing at the local"),
        (["--pool", "flywheel-k8s", "--image", IMAGE, "--worker"], "--worker starts a local process worker"),
        (["--build"], "--build goes with --image"),
        (["--block-name", "prod"], "--block-name goes with --image"),
    ],
)
def test_deploy_flags_that_do_not_go_together_stop_before_anything_is_deployed(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["deploy", *args, "--api-url", "http://127.0.0.1:9/api"])
    assert result.exit_code == 2
    assert message in result.output
    assert "prefect.deploy.yaml" not in {p.name for p in (Path(os.environ["FLYWHEEL_HOME"]) / "run").glob("*")}


def test_a_production_deploy_stops_at_a_pool_of_another_type_or_a_missing_block(
    prefect_server: SessionPrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the tests' Prefect server: nothing is deployed when the pool is not a Kubernetes one, or when a block
    the production deployments name is not saved (their runs would all fail at their first step)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # deploy() sets a default
    suffix = uuid.uuid4().hex[:8]
    process_pool, kubernetes_pool = f"process-{suffix}", f"k8s-{suffix}"
    cfg = load_server_config(DEFAULT_SERVER_CONFIG, api_url=prefect_server.api)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=process_pool, type="process"))
        # the server checks the template and its defaults when the pool is created
        client.create_work_pool(WorkPoolCreate(name=kubernetes_pool, type="kubernetes", base_job_template=_template()))
    target = KubernetesTarget(image=IMAGE, block_name=f"missing-{suffix}")
    with pytest.raises(DeployError, match=f"{process_pool!r} is of type 'process', not 'kubernetes'"):
        deploy(cfg, pool=process_pool, kubernetes=target)
    missing = ", ".join(f"{slug}/missing-{suffix}" for slug in sorted(BLOCK_SLUGS))
    with pytest.raises(DeployError, match=f"no block {missing} on the Prefect server"):
        deploy(cfg, pool=kubernetes_pool, kubernetes=target)
    with get_client(sync_client=True) as client:
        deployed = client.read_deployments()
    assert not [d for d in deployed if d.work_pool_name in {process_pool, kubernetes_pool}]
