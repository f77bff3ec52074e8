"""Trace documents for the profiling tests: an OTLP/JSON request with overlapping LLM calls, and the
NeMo Agent Toolkit's events for the same shape."""

from __future__ import annotations

import base64
from typing import Any

T0 = 1_700_000_000.0  # epoch seconds of the trace start
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _ns(t: float) -> str:
    return str(round((T0 + t) * 1e9))


def otlp_attr(key: str, value: Any) -> dict[str, Any]:
    """One OTLP/JSON attribute (``bool`` before ``int``: Python makes it an int)."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _span(span_id: str, parent: str, name: str, start: float, end: float, **attrs: Any) -> dict[str, Any]:
    return {
        "traceId": TRACE_ID,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "startTimeUnixNano": _ns(start),
        "endTimeUnixNano": int(_ns(end)),  # ints and strings both occur in the wild
        "attributes": [otlp_attr(k.replace("__", "."), v) for k, v in attrs.items()],
        "status": {},
    }


def _llm(span_id: str, parent: str, start: float, end: float, model: str, tin: int, tout: int) -> dict[str, Any]:
    return _span(
        span_id,
        parent,
        f"chat {model}",
        start,
        end,
        gen_ai__operation__name="chat",
        gen_ai__request__model=model,
        gen_ai__usage__input_tokens=tin,
        gen_ai__usage__output_tokens=tout,
    )


ROOT, PLAN, CALL_A, CALL_B, TOOL = (f"{i:016x}" for i in range(1, 6))


def otlp_document(b64_ids: bool = False) -> dict[str, Any]:
    """One request: plan (LLM) -> two overlapping LLM calls A and B -> a tool. A (3..8 s) finishes after B."""
    spans = [
        _span(ROOT, "", "agent.run", 0.0, 10.0),
        _llm(PLAN, ROOT, 0.5, 2.5, "llama-70b", 900, 40),
        _llm(CALL_A, ROOT, 3.0, 8.0, "llama-70b", 1200, 300),
        _llm(CALL_B, ROOT, 3.5, 6.0, "llama-8b", 500, 80),
        _span(TOOL, ROOT, "tool get_order", 8.2, 9.5, gen_ai__operation__name="execute_tool"),
    ]
    if b64_ids:
        for s in spans:
            s["traceId"] = base64.b64encode(bytes.fromhex(s["traceId"])).decode()
            s["spanId"] = base64.b64encode(bytes.fromhex(s["spanId"])).decode()
            if s["parentSpanId"]:
                s["parentSpanId"] = base64.b64encode(bytes.fromhex(s["parentSpanId"])).decode()
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}


def _step(event: str, uuid: str, ts: float, parent: str, name: str, span_ts: float | None = None, **usage: int) -> dict:
    payload: dict[str, Any] = {"event_type": event, "event_timestamp": T0 + ts, "name": name, "UUID": uuid}
    if span_ts is not None:
        payload["span_event_timestamp"] = T0 + span_ts
    if usage:
        payload["usage_info"] = {"token_usage": usage, "num_llm_calls": 1}
    return {
        "parent_id": parent,
        "function_ancestry": {"function_id": "f", "function_name": "agent"},
        "payload": payload,
    }


def nat_traces() -> list[dict[str, Any]]:
    """Toolkit events with overlapping LLM calls: START A, START B, END A, END B.

    The toolkit's positional pairing would give A = END A - START B = 2.5 s and lose B; by UUID A is 3.0 s
    and B is 4.5 s.
    """
    steps = [
        _step("WORKFLOW_START", "wf", 0.0, "root", "agent"),
        _step("LLM_START", "a", 3.0, "wf", "llama-70b"),
        _step("LLM_START", "b", 3.5, "wf", "llama-8b"),
        _step("LLM_NEW_TOKEN", "a", 3.4, "wf", "llama-70b"),
        _step("LLM_END", "a", 6.0, "wf", "llama-70b", 3.0, prompt_tokens=1000, completion_tokens=200),
        _step("LLM_END", "b", 8.0, "wf", "llama-8b", 3.5, prompt_tokens=400, completion_tokens=50),
        _step("TOOL_START", "t", 8.1, "wf", "get_order"),
        _step("TOOL_END", "t", 9.0, "wf", "get_order", 8.1),
        _step("WORKFLOW_END", "wf", 9.5, "root", "agent", 0.0),
    ]
    return [{"request_number": 0, "intermediate_steps": steps}]
