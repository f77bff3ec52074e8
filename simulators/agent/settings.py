"""The ``agent`` section of ``configs/local.yaml``, validated here so a typo in a key is an error, not a default.

Every key is optional. The defaults make the demo agent talk to the local NIM simulator and log server;
pointing ``nim_url`` and ``logserver_url`` at real services is all production-style use needs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from simulators.settings import LocalStackConfig

DEFAULT_TEACHER = "meta/llama-3.3-70b-instruct"


class AgentSettings(BaseModel):
    """How the demo agent behaves: models, where it logs, where its spans go, how patient it is."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        default=DEFAULT_TEACHER, description="The teacher model every user gets unless routed to a canary"
    )
    canary_model: str | None = Field(default=None, description="Staged rollout: the model a share of users gets")
    canary_weight: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of users (by user_id hash) on the canary"
    )
    workload_id: str = Field(default="customer-support", description="Workload of LLM call 1 (tool selection)")
    reply_workload_id: str | None = Field(
        default=None, description="Workload of LLM call 2 (reply writing); default '<workload_id>-reply'"
    )
    client_id: str = "demo"
    log_index: str = "flywheel"
    log_enabled: bool = True
    log_batch_size: int = Field(default=50, ge=1, description="Documents per bulk request")
    log_flush_interval_s: float = Field(default=0.5, gt=0, description="Longest time a record waits in the buffer")
    log_max_buffer: int = Field(default=20_000, ge=1, description="Records kept while the log server is down")
    log_timeout_s: float = Field(default=5.0, gt=0)
    spans_file: str | None = Field(default=None, description="Default: <state dir>/agent/spans.jsonl")
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP base URL; spans are POSTed to <url>/v1/traces"
    )
    otlp_timeout_s: float = Field(default=2.0, gt=0)
    nim_url: str | None = Field(default=None, description="Default: the local NIM simulator")
    logserver_url: str | None = Field(default=None, description="Default: the local log server")
    nim_timeout_s: float = Field(default=60.0, gt=0)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    tool_latency_scale: float = Field(
        default=1.0, ge=0.0, description="Multiplies the simulated backend latency of each tool (0 = instant)"
    )
    session_turns: int = Field(default=6, ge=0, description="Messages of history kept per session_id (0 = none)")

    @property
    def reply_workload(self) -> str:
        """The workload id of the reply-writing call."""
        return self.reply_workload_id or f"{self.workload_id}-reply"


def agent_settings(cfg: LocalStackConfig) -> AgentSettings:
    """The validated ``agent`` section of the local stack config."""
    return AgentSettings.model_validate(cfg.agent)


def spans_path(cfg: LocalStackConfig, settings: AgentSettings) -> Path:
    """Where the agent appends one OTLP JSON line per trace."""
    if settings.spans_file:
        return Path(settings.spans_file)
    return cfg.state_path() / "agent" / "spans.jsonl"
