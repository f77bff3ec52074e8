"""The agent application under test by the scaling lifecycle, as a Prefect block that builds its clients."""

from __future__ import annotations

from typing import ClassVar

import aiohttp
import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agent_flywheel.scaling.loadgen.requests import make_client


class AgentTarget(Block):
    """An HTTP agent endpoint that emits OpenTelemetry spans; the demo agent by default.

    The clients it builds are the one place its ``api_key`` is read.
    """

    _block_type_name: ClassVar[str] = "Agent Target"
    _block_type_slug: ClassVar[str] = "agent-target"
    _description: ClassVar[str] = "HTTP endpoint of an agent application, for profiling, load sweeps and rollouts."

    app: str = Field(default="demo-agent", description="Application name (MLflow experiments sizing/<app>)")
    url: str = Field(default="http://127.0.0.1:18003", description="Agent base URL")
    chat_path: str = Field(default="/v1/chat", description="Path that takes one user turn")
    api_key: SecretStr | None = None
    spans_file: str | None = Field(default=None, description="OTLP JSON lines file the agent writes, if any")
    simulated: bool = False

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}

    def get_client(self, timeout_s: float = 10.0) -> httpx.Client:
        """A client for the agent (base URL and credentials set); use it as ``with``."""
        return httpx.Client(base_url=self.url, headers=self._auth_headers(), timeout=timeout_s)

    def get_async_client(self, timeout_s: float = 60.0, max_connections: int = 64) -> httpx.AsyncClient:
        """An async client for the agent, its pool sized for ``max_connections`` requests in flight."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers=self._auth_headers(),
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections),
        )

    def get_load_client(self, max_connections: int = 256, timeout_s: float = 60.0) -> aiohttp.ClientSession:
        """The load generator's client for the agent (see ``make_client``); use it as ``async with``."""
        return make_client(self.url, max_connections=max_connections, timeout_s=timeout_s, headers=self._auth_headers())
