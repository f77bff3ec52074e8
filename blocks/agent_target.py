"""The agent application under test by the scaling lifecycle, as a Prefect block."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class AgentTarget(Block):
    """An HTTP agent endpoint that emits OpenTelemetry spans; the demo agent by default."""

    _block_type_name: ClassVar[str] = "Agent Target"
    _block_type_slug: ClassVar[str] = "agent-target"
    _description: ClassVar[str] = "HTTP endpoint of an agent application, for profiling, load sweeps and rollouts."

    app: str = Field(default="demo-agent", description="Application name (MLflow experiments sizing/<app>)")
    url: str = Field(default="http://127.0.0.1:18003", description="Agent base URL")
    chat_path: str = Field(default="/v1/chat", description="Path that takes one user turn")
    api_key: SecretStr | None = None
    spans_file: str | None = Field(default=None, description="OTLP JSON lines file the agent writes, if any")
    simulated: bool = False
