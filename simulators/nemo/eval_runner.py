"""The Evaluator's real work: read the dataset, call the model per row, score, aggregate.

One asyncio task per job. It waits out ``created`` (and an injected ``pending``) on the simulated clock,
then for each task of the config reads the rows from the Data Store, renders the request template,
calls the target model over HTTP (the NIM simulator, or any OpenAI-compatible ``api_endpoint``),
scores the answer (tool-calling metrics, LLM judges) and updates progress as samples finish. At most
``params.parallelism`` samples are in flight. A model that is unknown (404) or unreachable after
retries fails the job with the reason in ``status_details.message``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from simulators.common import utc_now_iso
from simulators.nemo.context import NemoSim
from simulators.nemo.ids import new_id
from simulators.nemo.scoring import aggregate, judge_scores, output_text, tool_calling_scores
from simulators.nemo.state import Record
from simulators.nemo.templates import TemplateRenderError, render_value
from simulators.nemo.upstream import UpstreamError

log = logging.getLogger("nemo-sim")
INFERENCE_PARAMS = ("max_tokens", "temperature", "top_p", "stop")


class EvaluationFailed(RuntimeError):
    """The job cannot finish; the message is shown in ``status_details.message``."""


def resolve_endpoint(sim: NemoSim, model: Any) -> tuple[str, str, str | None]:
    """``(chat completions URL, model id, api key)`` for a model name or an ``{"api_endpoint": ...}`` object."""
    if isinstance(model, str) and model:
        return sim.nim.chat_url, model, None
    if isinstance(model, dict):
        endpoint = model.get("api_endpoint")
        if isinstance(endpoint, dict) and endpoint.get("url") and endpoint.get("model_id"):
            url = str(endpoint["url"]).rstrip("/")
            if not url.endswith("/chat/completions"):
                url = url + "/chat/completions" if url.endswith("/v1") else url + "/v1/chat/completions"
            return url, str(endpoint["model_id"]), endpoint.get("api_key")
        if model.get("name"):
            name = f"{model['namespace']}/{model['name']}" if model.get("namespace") else str(model["name"])
            return sim.nim.chat_url, name, None
    raise EvaluationFailed(f"cannot tell which model to call from {model!r}")


def _limit(*values: Any) -> int | None:
    limits = [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(limits) if limits else None


class _Progress:
    """Counts finished samples and writes progress into the job as they finish."""

    def __init__(self, record: Record, total: int) -> None:
        self.record = record
        self.total = total
        self.done = 0

    def tick(self) -> None:
        self.done += 1
        details = self.record["status_details"]
        details["samples_processed"] = self.done
        details["progress"] = round(100.0 * self.done / self.total, 2) if self.total else 100.0
        self.record["updated_at"] = utc_now_iso()


class _TaskRun:
    """One task of the config, run over its rows."""

    def __init__(self, sim: NemoSim, record: Record, task: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self.sim = sim
        self.task = task
        self.rows = rows
        params = record["config"].get("params") or {}
        self.settings = sim.settings.evaluation
        self.retries = int(params.get("max_retries", self.settings.max_retries))
        self.timeout = float(params.get("request_timeout") or self.settings.request_timeout_s)
        self.defaults = {k: params[k] for k in INFERENCE_PARAMS if params.get(k) is not None}
        self.url, self.model, self.api_key = resolve_endpoint(sim, record["target"].get("model"))

    async def _chat(self, url: str, body: dict[str, Any], api_key: str | None) -> dict[str, Any]:
        try:
            return await self.sim.nim.chat(
                url,
                body,
                api_key=api_key,
                timeout_s=self.timeout,
                max_retries=self.retries,
                backoff_s=self.settings.retry_backoff_s,
            )
        except UpstreamError as exc:
            raise EvaluationFailed(str(exc)) from exc

    async def sample(self, item: dict[str, Any]) -> dict[str, Any]:
        """Infer and score one row; a row that cannot be rendered is kept with null scores and its error."""
        metrics = self.task.get("metrics") or {}
        template = (self.task.get("params") or {}).get("template") or {}
        try:
            request = render_value(template, {"item": item})
            if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
                raise TemplateRenderError("the rendered template has no 'messages' list")
        except TemplateRenderError as exc:
            return {
                "item": item,
                "sample": {"output_text": "", "response": None},
                "metrics": _null_scores(metrics),
                "error": str(exc),
            }
        body = {**self.defaults, **request, "model": self.model}
        response = await self._chat(self.url, body, self.api_key)
        sample = {"output_text": output_text(response), "response": response}
        scored: dict[str, Any] = {}
        for name, metric in metrics.items():
            scored[name] = {"scores": await self._score(metric, item, sample)}
        return {"item": item, "sample": sample, "metrics": scored}

    async def _score(self, metric: dict[str, Any], item: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
        params = metric.get("params") or {}
        values: dict[str, float | None]
        if metric.get("type") == "tool-calling":
            try:
                truth = render_value(params.get("tool_calls_ground_truth", "null"), {"item": item})
                values = tool_calling_scores(sample["response"], truth)
            except TemplateRenderError:
                values = dict.fromkeys(("function_name_accuracy", "function_name_and_args_accuracy"))
        else:  # llm-judge (anything else is refused when the job is created)
            values = await self._judge(params, item, sample)
        return {name: {"value": value} for name, value in values.items()}

    async def _judge(
        self, params: dict[str, Any], item: dict[str, Any], sample: dict[str, Any]
    ) -> dict[str, float | None]:
        scores = params.get("scores") or {}
        try:
            request = render_value(params.get("template") or {}, {"item": item, "sample": sample})
        except TemplateRenderError:
            return dict.fromkeys(scores)
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            return dict.fromkeys(scores)
        url, model, api_key = resolve_endpoint(self.sim, params.get("model"))
        reply = output_text(await self._chat(url, {**request, "model": model}, api_key))
        return judge_scores(reply, scores)


def _null_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, metric in metrics.items():
        if metric.get("type") == "tool-calling":
            keys = ["function_name_accuracy", "function_name_and_args_accuracy"]
        else:
            keys = list(((metric.get("params") or {}).get("scores") or {}).keys())
        result[name] = {"scores": {key: {"value": None} for key in keys}}
    return result


def _task_result(task: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for name in task.get("metrics") or {}:
        score_names: list[str] = []
        for sample in samples:
            for key in sample["metrics"].get(name, {}).get("scores", {}):
                if key not in score_names:
                    score_names.append(key)
        metrics[name] = {
            "scores": {
                key: aggregate(
                    [s["metrics"].get(name, {}).get("scores", {}).get(key, {}).get("value") for s in samples]
                )
                for key in score_names
            }
        }
    return {"metrics": metrics}


async def _load_rows(sim: NemoSim, record: Record) -> dict[str, list[dict[str, Any]]]:
    params = record["config"].get("params") or {}
    loaded = {}
    for name, task in (record["config"].get("tasks") or {}).items():
        dataset = task.get("dataset") or {}
        try:
            rows = await sim.datastore.read_rows(str(dataset.get("files_url")), endpoint=dataset.get("hf_endpoint"))
        except UpstreamError as exc:
            raise EvaluationFailed(f"task {name}: {exc}") from exc
        limit = _limit(
            dataset.get("limit"), params.get("limit_samples"), (task.get("params") or {}).get("limit_samples")
        )
        loaded[name] = rows[:limit] if limit else rows
    return loaded


def _set_status(sim: NemoSim, record: Record, status: str) -> None:
    record["status"] = status
    record["updated_at"] = utc_now_iso()
    sim.save()


async def run_evaluation(sim: NemoSim, record: Record) -> None:
    """The job's whole life after creation; ends ``completed`` or ``failed`` (cancellation cancels this task)."""
    plan = record["_plan"]
    details = record["status_details"]
    await sim.wait_until(plan["t0"] + plan["created_s"])
    if plan.get("pending_s", 0) > 0:
        _set_status(sim, record, "pending")
        await sim.wait_until(plan["t0"] + plan["created_s"] + plan["pending_s"])
    tasks = record["config"].get("tasks") or {}
    details.update({"progress": 0.0, "samples_processed": 0, "task_status": dict.fromkeys(tasks, "pending")})
    _set_status(sim, record, "running")
    current = None
    try:
        if plan.get("fail"):
            raise EvaluationFailed("Evaluation failed: the evaluation pod was evicted (simulated fault)")
        rows = await _load_rows(sim, record)
        progress = _Progress(record, sum(len(r) for r in rows.values()))
        parallelism = int(
            (record["config"].get("params") or {}).get("parallelism") or sim.settings.evaluation.default_parallelism
        )
        gate = asyncio.Semaphore(max(1, parallelism))
        results: dict[str, Any] = {}
        per_sample: dict[str, list[dict[str, Any]]] = {}
        for current, task in tasks.items():
            details["task_status"][current] = "running"
            run = _TaskRun(sim, record, task, rows[current])

            async def one(item: dict[str, Any], run: _TaskRun = run) -> dict[str, Any]:
                async with gate:
                    outcome = await run.sample(item)
                progress.tick()
                return outcome

            per_sample[current] = await _gather(one(item) for item in rows[current])
            results[current] = _task_result(task, per_sample[current])
            details["task_status"][current] = "completed"
    except Exception as exc:
        if current is not None:
            details["task_status"][current] = "failed"
        if isinstance(exc, EvaluationFailed):
            details["message"] = str(exc)
            log.warning("evaluation job %s failed: %s", record["id"], exc)
        else:
            details["message"] = f"Internal simulator error: {type(exc).__name__}: {exc}"
            log.exception("evaluation job %s crashed", record["id"])
        _set_status(sim, record, "failed")
        return
    now = utc_now_iso()
    result = {
        "id": new_id("evaluation_result"),
        "job": record["id"],
        "namespace": record["namespace"],
        "description": None,
        "files_url": None,
        "custom_fields": {},
        "groups": {},
        "tasks": results,
        "created_at": now,
        "updated_at": now,
    }
    sim.store.table("evaluation_results")[result["id"]] = result
    sim.store.write_samples(record["id"], per_sample)
    record["result"] = result["id"]
    details["progress"] = 100.0
    _set_status(sim, record, "completed")
    log.info("evaluation job %s completed (%s samples)", record["id"], progress.done)


async def _gather(coroutines: Any) -> list[dict[str, Any]]:
    """Run the samples; the first failure cancels the rest and is re-raised as EvaluationFailed."""
    try:
        async with asyncio.TaskGroup() as group:
            handles = [group.create_task(c) for c in coroutines]
    except ExceptionGroup as failures:
        chosen = next((e for e in failures.exceptions if isinstance(e, EvaluationFailed)), failures.exceptions[0])
        raise chosen from None
    return [h.result() for h in handles]
