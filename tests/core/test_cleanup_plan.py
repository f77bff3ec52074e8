"""What ``flywheel cleanup`` picks and keeps, on a fake NeMo platform (no HTTP): only what agent-flywheel
labelled, nothing of a live run, a dataset only when every job that read it goes, never the champion's adapter,
never a deployment the platform team made; applying cancels a running job before deleting it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from agent_flywheel.nemo.cleanup import CleanupItem, CleanupScope, apply_cleanup, plan_cleanup
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.models import CustomizationJob, Dataset, EvaluationJob, ModelDeployment

NS = "dfwbp"
NOW = datetime(2025, 6, 30, tzinfo=UTC)
OLD, NEW = "2025-06-01T00:00:00", "2025-06-29T00:00:00"


def _eval(job_id: str, run: str | None, status: str, dataset: str, created: str = OLD) -> EvaluationJob:
    fields = {"flywheel_run_id": run, "flywheel_content_hash": "abc"} if run else None
    tasks = {"t": {"dataset": {"files_url": f"hf://datasets/{NS}/{dataset}/eval.jsonl"}}}
    return EvaluationJob(
        id=job_id, namespace=NS, status=status, custom_fields=fields, config={"tasks": tasks}, created_at=created
    )


@dataclass
class FakePlatform:
    evaluations: list[EvaluationJob]
    tunes: list[CustomizationJob]
    datasets: list[Dataset]
    deployments: list[ModelDeployment]
    models: set[str]
    calls: list[str] = field(default_factory=list)

    def client(self) -> NemoClient:
        async def listed(items: list[Any]) -> list[Any]:
            return items

        async def note(call: str, result: Any = True) -> Any:
            self.calls.append(call)
            return result

        async def get_model(namespace: str, name: str) -> Any:
            return object() if f"{namespace}/{name}" in self.models else None

        fake = SimpleNamespace(
            evaluator=SimpleNamespace(
                list_jobs=lambda **_: listed(self.evaluations),
                cancel_job=lambda ref: note(f"cancel {ref}"),
                delete_job=lambda ref: note(f"delete {ref}"),
            ),
            customizer=SimpleNamespace(
                list_jobs=lambda **_: listed(self.tunes), cancel_job=lambda ref: note(f"cancel {ref}")
            ),
            entity_store=SimpleNamespace(
                list_datasets=lambda ns, **_: listed(self.datasets),
                get_model=get_model,
                delete_model_ref=lambda ref: note(f"delete model {ref}"),
                delete_dataset=lambda ns, name: note(f"delete dataset {ns}/{name}"),
            ),
            datastore=SimpleNamespace(delete_repo=lambda ns, name: note(f"delete repo {ns}/{name}")),
            deployments=SimpleNamespace(
                list_deployments=lambda ns, **_: listed(self.deployments),
                delete=lambda ns, name: note(f"delete deployment {ns}/{name}"),
            ),
        )
        return cast(NemoClient, fake)


def _platform() -> FakePlatform:
    managed = {"flywheel_managed": "true"}
    return FakePlatform(
        evaluations=[
            _eval("eval-dead-done", "dead", "completed", "ds-shared"),
            _eval("eval-dead-running", "dead", "running", "ds-dead"),
            _eval("eval-live", "live", "running", "ds-shared"),
            _eval("eval-foreign", None, "completed", "ds-dead"),
            _eval("eval-dead-new", "dead", "completed", "ds-new", created=NEW),
        ],
        tunes=[
            CustomizationJob(
                id="cust-1",
                namespace=NS,
                status="completed",
                output_model=f"{NS}/customized@cust-1",
                dataset={"name": "ds-dead", "namespace": NS},
                custom_fields={"flywheel_run_id": "dead"},
                created_at=OLD,
            ),
            CustomizationJob(
                id="cust-2",
                namespace=NS,
                status="completed",
                output_model=f"{NS}/champion@cust-2",
                custom_fields={"flywheel_run_id": "dead"},
                created_at=OLD,
            ),
        ],
        datasets=[
            Dataset(files_url="x", name=name, namespace=NS, custom_fields=managed, created_at=OLD)
            for name in ("ds-shared", "ds-dead", "ds-new")
        ]
        + [Dataset(files_url="x", name="theirs", namespace=NS, created_at=OLD)],
        deployments=[
            ModelDeployment(
                name="old-nim",
                namespace=NS,
                created_at=OLD,
                custom_fields={**managed, "flywheel_run_id": "dead", "flywheel_users": "dead"},
            ),
            ModelDeployment(
                name="shared-nim",
                namespace=NS,
                created_at=OLD,
                custom_fields={**managed, "flywheel_run_id": "dead", "flywheel_users": "dead,live"},
            ),
            ModelDeployment(name="platform-nim", namespace=NS, created_at=OLD),
        ],
        models={f"{NS}/customized@cust-1", f"{NS}/champion@cust-2"},
    )


async def _is_over(run_id: str) -> bool:
    return run_id != "live"


def _by_ref(items: list[CleanupItem]) -> dict[str, str]:
    return {item.ref: item.action for item in items}


def test_cleanup_by_age_picks_only_what_it_labelled_and_nothing_live() -> None:
    platform = _platform()
    scope = CleanupScope(NS, older_than=timedelta(days=7), now=NOW)
    items = asyncio.run(
        plan_cleanup(platform.client(), scope, is_over=_is_over, protected_models={f"{NS}/champion@cust-2"})
    )
    assert _by_ref(items) == {
        "eval-dead-done": "delete",
        "eval-dead-running": "delete",  # its run is over: cancelled, then deleted
        "eval-live": "keep",
        f"{NS}/customized@cust-1": "delete",
        f"{NS}/champion@cust-2": "keep",
        f"{NS}/ds-shared": "keep",  # the live run's job still reads it
        f"{NS}/ds-dead": "delete",
        f"{NS}/old-nim": "delete",
        f"{NS}/shared-nim": "keep",  # a live run uses it
    }  # not: eval-foreign, eval-dead-new, ds-new (too new, read by a job that stays), theirs, platform-nim
    assert platform.calls == []  # planning changes nothing

    done = asyncio.run(apply_cleanup(platform.client(), items, is_over=_is_over))
    assert platform.calls.index("cancel eval-dead-running") < platform.calls.index("delete eval-dead-running")
    assert "cancel eval-dead-done" not in platform.calls
    assert f"delete model {NS}/champion@cust-2" not in platform.calls
    assert {f"delete dataset {NS}/ds-dead", f"delete repo {NS}/ds-dead", f"delete deployment {NS}/old-nim"} <= set(
        platform.calls
    )
    assert sum(line.startswith("kept ") for line in done) == 4


def test_cleanup_by_run_skips_adapters_already_removed() -> None:
    platform = _platform()
    platform.models.clear()
    items = asyncio.run(plan_cleanup(platform.client(), CleanupScope(NS, run_id="dead", now=NOW), is_over=_is_over))
    refs = _by_ref(items)
    assert not [ref for ref in refs if "@cust-" in ref]
    assert refs["eval-dead-new"] == "delete" and "eval-live" not in refs
    assert refs[f"{NS}/old-nim"] == refs[f"{NS}/shared-nim"] == "release"
