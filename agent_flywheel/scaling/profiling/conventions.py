"""What a span is, read from the attribute names the instrumentations people use set on it.

- **OpenTelemetry GenAI semantic conventions**, current and older names: ``gen_ai.operation.name`` (``chat``,
  ``text_completion``, ``generate_content``, ``embeddings``, ``execute_tool``, ``invoke_agent``, ...),
  ``gen_ai.provider.name`` (formerly ``gen_ai.system``), ``gen_ai.request.model`` / ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens`` (formerly ``prompt_tokens`` / ``completion_tokens``),
  ``gen_ai.tool.name``, ``gen_ai.agent.name``.
- **OpenInference** (Phoenix/Arize instrumentations of LangChain, LlamaIndex, ...; the NeMo Agent Toolkit's OTLP
  exporters): ``openinference.span.kind`` (``LLM``, ``TOOL``, ``CHAIN``, ``AGENT``, ``EMBEDDING``, ``RETRIEVER``,
  ``RERANKER``, ``GUARDRAIL``, ``EVALUATOR``, ...), ``llm.model_name``, ``llm.provider`` / ``llm.system``,
  ``llm.token_count.prompt`` / ``completion`` / ``total``, ``tool.name``.
- **The NeMo Agent Toolkit's own attributes** beside OpenInference: ``nat.span.kind`` (``FUNCTION``,
  ``WORKFLOW``, ... where OpenInference only says ``CHAIN``) and ``nat.event_type`` (``LLM_START``, ...).

The most specific statement wins: the GenAI operation, then the toolkit's kind, then OpenInference's, then the
presence of a model or tool name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_flywheel.scaling.profiling.spans import token_count

# GenAI operation names -> our span kinds (model calls are "llm"; embeddings are not model *generation* calls).
_GENAI_OPERATIONS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
}
# OpenInference span kinds and the toolkit's span kinds / event categories -> our span kinds.
_KINDS = {
    "LLM": "llm",
    "TOOL": "tool",
    "AGENT": "agent",
    "CHAIN": "chain",
    "EMBEDDING": "embedding",
    "EMBEDDER": "embedding",
    "RETRIEVER": "retriever",
    "RERANKER": "reranker",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluator",
    "PROMPT": "prompt",
    "WORKFLOW": "workflow",
    "FUNCTION": "function",
    "TASK": "task",
    "CUSTOM": "custom",
    "SPAN": "span",
    "TTC": "ttc",
}
_MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
_INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
_PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")


def kind_of_category(category: str) -> str:
    """Our span kind for a toolkit event category or an OpenInference kind (``LLM`` -> ``llm``, ``CHAIN`` -> ``chain``)."""
    text = category.strip().upper()
    return _KINDS.get(text, text.lower() or "span")


def span_kind(attrs: Mapping[str, Any]) -> str:
    """``llm`` for model calls, ``tool`` for tool calls, ``agent``, ``chain``, ``function``, ... else ``span``."""
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return _GENAI_OPERATIONS.get(str(operation).strip().lower(), "span")
    for key in ("nat.span.kind", "openinference.span.kind"):
        value = attrs.get(key)
        if value not in (None, "", "UNKNOWN"):
            return kind_of_category(str(value))
    event_type = attrs.get("nat.event_type")
    if event_type:
        return kind_of_category(str(event_type).rsplit("_", 1)[0])
    if any(attrs.get(k) is not None for k in _MODEL_KEYS):
        return "llm"
    if attrs.get("gen_ai.tool.name") is not None or attrs.get("tool.name") is not None:
        return "tool"
    return str(attrs.get("flywheel.span.kind", "span"))


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def model_of(attrs: Mapping[str, Any]) -> str | None:
    """The model a call used: the response's model, else the requested one, else OpenInference's name."""
    value = _first(attrs, _MODEL_KEYS)
    return str(value) if value is not None else None


def provider_of(attrs: Mapping[str, Any]) -> str | None:
    """Who served the call (``gen_ai.provider.name``, formerly ``gen_ai.system``; OpenInference's ``llm.provider``)."""
    value = _first(attrs, _PROVIDER_KEYS)
    return str(value) if value is not None else None


def input_tokens_of(attrs: Mapping[str, Any]) -> int | None:
    """Prompt tokens, under the current GenAI name, the older one or OpenInference's."""
    return token_count(_first(attrs, _INPUT_TOKEN_KEYS))


def output_tokens_of(attrs: Mapping[str, Any]) -> int | None:
    """Completion tokens, under the current GenAI name, the older one or OpenInference's."""
    return token_count(_first(attrs, _OUTPUT_TOKEN_KEYS))
